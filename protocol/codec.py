"""Messages to frame bodies and back (docs/protocol.md, "Messages").

`encode` turns a message into the map that goes on the wire, handing each binary field to
`put` (which sends it as a transfer and returns the transfer id). `decode` does the reverse,
claiming binaries with `take`. Field checks live in the message constructors; decoding only
converts wire shapes (lists, maps, code strings, ints used as floats) and turns every failure
into a `RemoteProtocolError` that names the message and field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import live
from .codes import ByeReason, DeclineReason, FailureCode, RejectReason
from .errors import LocalProtocolError, RemoteProtocolError
from .frames import Body
from .handshake import (
    Capabilities,
    DeviceInfo,
    Hello,
    Limits,
    Pace,
    Reject,
    StyleInfo,
    Welcome,
)
from .messages import (
    Accept,
    Bye,
    Cancel,
    Checkpoint,
    Decline,
    Drain,
    Failure,
    Message,
    Offer,
    Ping,
    Pong,
    Preview,
    Progress,
    Result,
    StyleImage,
)
from .transfers import Received

Put = Callable[[bytes], tuple[int, str]]
"""Send a binary as a transfer; return its id and sha256 hex digest."""

Take = Callable[[object], Received]
"""Claim the finished transfer with the given id."""


def _caps(c: Capabilities) -> Body:
    styles = [
        {"id": s.id, "name": s.name, "method": s.method, "thumbnail_jpeg": s.thumbnail_jpeg}
        for s in c.styles
    ]
    body: Body = {
        "device_name": c.device_name,
        "device_memory": c.device_memory,
        "methods": c.methods,
        "styles": styles,
        "max_epochs": c.max_epochs,
        "max_pixels": c.max_pixels,
        "slots": c.slots,
    }
    if c.pace:  # optional: left out when unmeasured, as older nodes send it
        body["pace"] = [
            {"method": p.method, "seconds": p.seconds, "seconds_per_mp": p.seconds_per_mp}
            for p in c.pace
        ]
    if c.devices:  # optional, like pace
        body["devices"] = [
            {"name": d.name, "memory": d.memory, "slots": d.slots} for d in c.devices
        ]
    if c.live:  # optional, like pace: version 3 (live sessions)
        body["live"] = True
    return body


def _limits(x: Limits) -> Body:
    return {
        "max_epochs": x.max_epochs,
        "max_pixels": x.max_pixels,
        "max_frame_size": x.max_frame_size,
        "max_transfer_size": x.max_transfer_size,
    }


def _encode_result(m: Result, put: Put) -> Body:
    transfer_id, digest = put(m.png)
    if digest != m.sha256:
        raise LocalProtocolError(f"Result.sha256 {m.sha256} is not the PNG's sha256 {digest}")
    return {"type": "result", "job_id": m.job_id, "lease_id": m.lease_id, "png": transfer_id,
            "width": m.width, "height": m.height, "sha256": m.sha256}  # fmt: skip


def _encode_offer(m: Offer, put: Put) -> Body:
    body: Body = {
        "type": "offer", "job_id": m.job_id, "lease_id": m.lease_id, "method": m.method,
        "params": m.params, "style_id": m.style_id, "content": put(m.content)[0],
        "style_images": [{"data": put(s.data)[0], "weight": s.weight} for s in m.style_images],
    }  # fmt: skip
    if m.start_image is not None:  # version 2; left out otherwise, as version 1 sends it
        body["start_image"] = put(m.start_image)[0]
        body["start_epoch"] = m.start_epoch
    return body


# fmt: off
_ENCODERS: dict[type, Callable[[Any, Put], Body]] = {
    Hello: lambda m, put: {
        "type": "hello", "versions": m.versions, "node_name": m.node_name, "token": m.token,
        "software_version": m.software_version, "capabilities": _caps(m.capabilities)},
    Welcome: lambda m, put: {
        "type": "welcome", "version": m.version, "session_id": m.session_id,
        "heartbeat_interval": m.heartbeat_interval, "limits": _limits(m.limits)},
    Reject: lambda m, put: {"type": "reject", "reason": m.reason.value, "message": m.message},
    Offer: _encode_offer,
    Accept: lambda m, put: {"type": "accept", "job_id": m.job_id, "lease_id": m.lease_id},
    Decline: lambda m, put: {
        "type": "decline", "job_id": m.job_id, "lease_id": m.lease_id,
        "reason": m.reason.value, "message": m.message},
    Progress: lambda m, put: {
        "type": "progress", "job_id": m.job_id, "lease_id": m.lease_id, "epoch": m.epoch,
        "max_epochs": m.max_epochs, "losses": m.losses, "elapsed": m.elapsed},
    Preview: lambda m, put: {
        "type": "preview", "job_id": m.job_id, "lease_id": m.lease_id, "epoch": m.epoch,
        "jpeg": put(m.jpeg)[0]},
    Result: _encode_result,
    Checkpoint: lambda m, put: {
        "type": "checkpoint", "job_id": m.job_id, "lease_id": m.lease_id, "epoch": m.epoch,
        "png": put(m.png)[0], "width": m.width, "height": m.height},
    Failure: lambda m, put: {
        "type": "failure", "job_id": m.job_id, "lease_id": m.lease_id,
        "code": m.code.value, "message": m.message},
    Cancel: lambda m, put: {"type": "cancel", "job_id": m.job_id, "lease_id": m.lease_id},
    Ping: lambda m, put: {"type": "ping", "nonce": m.nonce},
    Pong: lambda m, put: {"type": "pong", "nonce": m.nonce},
    Drain: lambda m, put: {"type": "drain"},
    Bye: lambda m, put: {"type": "bye", "reason": m.reason.value, "message": m.message},
}
# fmt: on
_ENCODERS.update({kind: live.without_binaries(f) for kind, f in live.ENCODERS.items()})


def encode(message: Message, put: Put) -> Body:
    """The wire map of `message`; its binaries go through `put` first."""
    encoder = _ENCODERS.get(type(message))
    if encoder is None:
        raise LocalProtocolError(f"not a protocol message: {type(message).__name__}")
    return encoder(message, put)


def _list(value: object) -> list[Any]:
    if type(value) is not list:
        raise TypeError(f"expected an array, got {type(value).__name__}")
    return value


def _map(value: object) -> Body:
    if type(value) is not dict:
        raise TypeError(f"expected a map, got {type(value).__name__}")
    return value


def _float(value: Any) -> Any:
    # Peers in other languages may send a whole number as a msgpack int.
    return float(value) if type(value) is int else value


def _hello(b: Body, take: Take) -> Hello:
    c = _map(b["capabilities"])
    styles = tuple(
        StyleInfo(s["id"], s["name"], s["method"], s.get("thumbnail_jpeg"))
        for s in map(_map, _list(c["styles"]))
    )
    pace = tuple(
        Pace(p["method"], _float(p["seconds"]), _float(p["seconds_per_mp"]))
        for p in map(_map, _list(c.get("pace", [])))
    )
    devices = tuple(
        DeviceInfo(d["name"], d["memory"], d["slots"])
        for d in map(_map, _list(c.get("devices", [])))
    )
    caps = Capabilities(c["device_name"], c["device_memory"], tuple(_list(c["methods"])),
                        styles, c["max_epochs"], c["max_pixels"], c["slots"], pace,
                        devices, c.get("live", False))  # fmt: skip
    return Hello(tuple(_list(b["versions"])), b["node_name"], b["token"],
                 b["software_version"], caps)  # fmt: skip


def _welcome(b: Body, take: Take) -> Welcome:
    x = _map(b["limits"])
    limits = Limits(x["max_epochs"], x["max_pixels"], x["max_frame_size"], x["max_transfer_size"])
    return Welcome(b["version"], b["session_id"], _float(b["heartbeat_interval"]), limits)


def _offer(b: Body, take: Take) -> Offer:
    content = take(b["content"]).data
    images = tuple(
        StyleImage(take(s["data"]).data, _float(s["weight"]))
        for s in map(_map, _list(b["style_images"]))
    )
    start = b.get("start_image")
    start_image = None if start is None else take(start).data
    start_epoch = b["start_epoch"] if start is not None else 0
    return Offer(b["job_id"], b["lease_id"], b["method"], b["params"], b["style_id"],
                 images, content, start_image, start_epoch)  # fmt: skip


def _progress(b: Body, take: Take) -> Progress:
    losses = b["losses"]
    if type(losses) is dict:
        for value in losses.values():
            if type(value) is int:  # rare: copy only then
                losses = {k: float(v) if type(v) is int else v for k, v in losses.items()}
                break
    return Progress(
        b["job_id"], b["lease_id"], b["epoch"], b["max_epochs"], losses, _float(b["elapsed"])
    )


def _decode_result(b: Body, take: Take) -> Result:
    png = take(b["png"])
    if b["sha256"] != png.sha256:
        raise RemoteProtocolError(f"result: sha256 {b['sha256']!r} is not that of its PNG")
    return Result(b["job_id"], b["lease_id"], png.data, b["width"], b["height"], b["sha256"])


# fmt: off
_DECODERS: dict[str, Callable[[Body, Take], Message]] = {
    "hello": _hello,
    "welcome": _welcome,
    "reject": lambda b, take: Reject(RejectReason(b["reason"]), b["message"]),
    "offer": _offer,
    "accept": lambda b, take: Accept(b["job_id"], b["lease_id"]),
    "decline": lambda b, take: Decline(
        b["job_id"], b["lease_id"], DeclineReason(b["reason"]), b["message"]),
    "progress": _progress,
    "preview": lambda b, take: Preview(
        b["job_id"], b["lease_id"], b["epoch"], take(b["jpeg"]).data),
    "result": _decode_result,
    "checkpoint": lambda b, take: Checkpoint(
        b["job_id"], b["lease_id"], b["epoch"], take(b["png"]).data, b["width"], b["height"]),
    "failure": lambda b, take: Failure(
        b["job_id"], b["lease_id"], FailureCode(b["code"]), b["message"]),
    "cancel": lambda b, take: Cancel(b["job_id"], b["lease_id"]),
    "ping": lambda b, take: Ping(b["nonce"]),
    "pong": lambda b, take: Pong(b["nonce"]),
    "drain": lambda b, take: Drain(),
    "bye": lambda b, take: Bye(ByeReason(b["reason"]), b["message"]),
}
# fmt: on
_DECODERS.update({name: live.without_transfers(f) for name, f in live.DECODERS.items()})


def decode(body: Body, take: Take) -> Message:
    """The message a frame body encodes; binaries are claimed through `take`."""
    name = body.get("type")
    decoder = _DECODERS.get(name) if type(name) is str else None
    if decoder is None:
        raise RemoteProtocolError(f"unknown message type {name!r}")
    try:
        return decoder(body, take)
    except KeyError as error:
        raise RemoteProtocolError(f"{name} message lacks the field {error.args[0]!r}") from None
    except LocalProtocolError as error:
        raise RemoteProtocolError(f"invalid {name} message: {error}") from None
    except (TypeError, ValueError, OverflowError) as error:
        raise RemoteProtocolError(f"invalid {name} message: {error}") from None
