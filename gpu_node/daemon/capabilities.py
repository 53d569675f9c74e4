"""What this node tells the relay in Hello: device, methods, styles and the owner's caps.

Methods are those whose engines and weights are installed (`gpu_node.methods`). Styles
are the fast-style registry's (built-ins plus trained models in the models dir), each with
its thumbnail; thumbnails are shrunk when one is over the protocol's limit, and left out
past a total budget so that Hello always fits one frame.
"""

from __future__ import annotations

import io
import logging
import os
import platform
from collections.abc import Sequence

import torch
from PIL import Image

from gpu_node.daemon.config import NodeConfig
from gpu_node.fast.registry import StyleEntry, StyleRegistry
from gpu_node.images import encode_jpeg
from protocol import LIVE_METHODS, Capabilities, DeviceInfo, Pace, StyleInfo
from protocol.limits import (
    MAX_HELLO_SIZE,
    MAX_ID_LEN,
    MAX_ITEMS,
    MAX_NAME_LEN,
    MAX_THUMBNAIL_SIZE,
)

log = logging.getLogger(__name__)

# 256 KiB of Hello's limit left for everything else: 256 styles' ids and names fit in it.
THUMBNAIL_BUDGET = MAX_HELLO_SIZE - 256 * 1024
SHRUNK_SIDE = 128


def device_description(device: torch.device) -> tuple[str, int]:
    """A person-readable name for `device` and its memory in bytes (0 if unknown)."""
    match device.type:
        case "cuda":
            props = torch.cuda.get_device_properties(device)
            return props.name, int(props.total_memory)
        case "mps":
            return "Apple MPS", _system_memory()
        case _:
            cpu = platform.processor() or platform.machine() or "CPU"
            return f"CPU {cpu} ({os.cpu_count() or 1} cores)", _system_memory()


def _system_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def style_infos(registry: StyleRegistry, budget: int = THUMBNAIL_BUDGET) -> tuple[StyleInfo, ...]:
    """The registry's styles as StyleInfos, thumbnails within the protocol's limits."""
    infos: list[StyleInfo] = []
    spent = 0
    for entry in registry:
        if len(infos) == MAX_ITEMS:
            log.warning(
                "advertising only the first %d styles; the protocol allows no more", MAX_ITEMS
            )
            break
        if not 0 < len(entry.id) <= MAX_ID_LEN:
            log.warning(
                "not advertising style %r: its id is over %d characters", entry.id, MAX_ID_LEN
            )
            continue
        thumbnail = fit_thumbnail(entry)
        if thumbnail is not None and spent + len(thumbnail) > budget:
            log.warning("style %s goes without a thumbnail: Hello has no room left", entry.id)
            thumbnail = None
        spent += len(thumbnail or b"")
        name = entry.name.strip()[:MAX_NAME_LEN] or entry.id
        infos.append(StyleInfo(entry.id, name, entry.method, thumbnail))
    return tuple(infos)


def fit_thumbnail(entry: StyleEntry) -> bytes | None:
    """The entry's JPEG thumbnail, shrunk if it is over the protocol's limit; None if unusable."""
    data = entry.thumbnail
    if not data or len(data) <= MAX_THUMBNAIL_SIZE:
        return data or None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.thumbnail((SHRUNK_SIDE, SHRUNK_SIDE))
            small = encode_jpeg(img.convert("RGB"), quality=80)
    except (OSError, ValueError) as exc:
        log.warning("style %s: thumbnail unreadable (%s); sending none", entry.id, exc)
        return None
    return small if len(small) <= MAX_THUMBNAIL_SIZE else None


def build_capabilities(
    config: NodeConfig,
    registry: StyleRegistry,
    device: torch.device,
    methods: tuple[str, ...],
    pace: tuple[Pace, ...] = (),
    *,
    devices: Sequence[torch.device] = (),
) -> Capabilities:
    """The Capabilities of this node for its Hello; `pace` as the warm-up measured it.

    A node of several `devices` (else just `device`) lists each, with `config.slots` slots
    apiece; the node as a whole has their slots and memory summed.
    """
    listed = [
        DeviceInfo(name[:MAX_NAME_LEN], memory, config.slots)
        for name, memory in map(device_description, devices or [device])
    ]
    styles = style_infos(registry) if "fast" in methods else ()
    return Capabilities(
        device_name=_node_device_name([d.name for d in listed]),
        device_memory=sum(d.memory for d in listed),
        methods=methods,
        styles=styles,
        max_epochs=config.max_epochs,
        max_pixels=config.max_pixels,
        slots=sum(d.slots for d in listed),
        pace=pace,
        devices=tuple(listed),
        live=not config.no_live and any(m in LIVE_METHODS for m in methods),
    )


def _node_device_name(names: list[str]) -> str:
    """`NVIDIA H100`, `2 x NVIDIA H100`, or `NVIDIA H100 + NVIDIA A100` when they differ."""
    if len(set(names)) == 1:
        name = names[0] if len(names) == 1 else f"{len(names)} x {names[0]}"
    else:
        name = " + ".join(names)
    return name[:MAX_NAME_LEN]
