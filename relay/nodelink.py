"""The node listener: GPU nodes dial in on the node port and speak the wire protocol.

    listener = NodeListener(config, tokens, NodeReports(service))
    await listener.start()          # in the app's cleanup_ctx
    ...
    await listener.close()

One `NodeLink` per TCP connection. Before the node has authenticated, a handshake
deadline and the protocol's Hello-size cap apply, and only so many connections may wait
for their handshake (`relay.nodegate`); a wrong or revoked token gets `Reject` and the
connection closes, and an address that fails too often is refused for a while. After
`Welcome` the link turns frames into reports (`relay.reports`) and the commands in the
node's outbox (`relay.hub`) into frames, and pings the node every heartbeat interval. Any
frame counts as a sign of life (a long result transfer never looks like a dead node); the
relay's one liveness rule (`NodeHub.silent`, run by `NodeReports.check_silence` on the
tick) drops a silent node, and the link then says goodbye and closes. Progress and
previews beyond a lease's allowance are dropped, and a node that floods them is dropped
(`relay.reportmeter`).
"""

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections.abc import Callable

from protocol import (
    CHECKPOINTS_SINCE,
    LIVE_VERSION,
    Accept,
    Bye,
    ByeReason,
    Cancel,
    Checkpoint,
    Connection,
    Decline,
    DeclineReason,
    Drain,
    Failure,
    FailureCode,
    Hello,
    LocalProtocolError,
    Message,
    Ping,
    Pong,
    Preview,
    Progress,
    ProtocolError,
    Reject,
    RejectReason,
    Result,
    Role,
    Welcome,
    choose_version,
)
from protocol.live import LIVE_KINDS
from relay.config import Config
from relay.handles import CancelJob, NodeCommand, NodeHandle, OfferJob
from relay.live import live_report
from relay.logs import event
from relay.metrics import Metrics
from relay.nodegate import NodeGate
from relay.nodewire import node_info, wire_offer
from relay.reportmeter import Report, ReportMeter
from relay.reports import NodeReports
from relay.tokens import TokenCheck

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
# A node whose job failed for one of these reasons may succeed elsewhere.
_RETRYABLE = frozenset({FailureCode.OUT_OF_MEMORY, FailureCode.TIMEOUT, FailureCode.INTERNAL})
# A node's Bye for these reasons means its owner stopped it (drained or not).
_ON_PURPOSE = frozenset({ByeReason.SHUTDOWN, ByeReason.DRAINED})


def peer_address(writer: asyncio.StreamWriter) -> str:
    """The remote IP address of a connection, without its port."""
    peername = writer.get_extra_info("peername")
    return str(peername[0]) if isinstance(peername, tuple) else str(peername)


class HandshakeFailed(Exception):
    """The peer did not complete a valid handshake; the message says why (for the log)."""

    def __init__(self, why: str, *, bad_token: bool = False) -> None:
        super().__init__(why)
        self.bad_token = bad_token


class Flooding(Exception):
    """The node sent reports far beyond their allowance for seconds on end."""


class NodeLink:
    """One node connection, from handshake to goodbye."""

    def __init__(
        self,
        config: Config,
        tokens: TokenCheck,
        reports: NodeReports,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        metrics: Metrics | None = None,
        gate: NodeGate | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.gate = gate or NodeGate(config, timer)
        self.meter = ReportMeter(timer)
        self.metrics = metrics or Metrics()
        self.tokens = tokens
        self.reports = reports
        self.hub = reports.hub
        self.live_sessions = reports.service.live_sessions
        """The relay's live sessions (`relay.live`), which lease slots of its nodes."""
        self.reader = reader
        self.writer = writer
        self.conn = Connection(
            Role.RELAY,
            max_frame_size=config.node_max_frame_size,
            max_transfer_size=config.node_max_transfer_size,
        )
        self.peer = str(writer.get_extra_info("peername"))
        self.address = peer_address(writer)
        self._write_lock = asyncio.Lock()
        self._pending: list[Message] = []
        self._handle: NodeHandle | None = None
        self._left_on_purpose = False

    # ---- plumbing --------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Encode and write one message; the lock keeps frames of two messages apart."""
        await self._write(message)

    async def _write(self, message: Message | bytes) -> None:
        """Write a message, or the bytes `conn.send` already encoded for one."""
        async with self._write_lock:
            data = message if isinstance(message, bytes) else self.conn.send(message)
            self.metrics.bytes_to_nodes += len(data)
            self.writer.write(data)
            await self.writer.drain()

    async def receive(self) -> list[Message]:
        """The next complete messages; [] at a clean end of the stream."""
        while True:
            data = await self.reader.read(READ_SIZE)
            self.metrics.bytes_from_nodes += len(data)
            messages = self.conn.receive_data(data)
            # Any bytes are a sign of life, the chunks of a long transfer included.
            if self._handle is not None:
                self.hub.seen(self._handle)
            if messages or not data:
                return messages

    # ---- handshake -------------------------------------------------------------------

    async def handshake(self) -> NodeHandle:
        """Read the Hello, check version and token, answer Welcome or Reject."""
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                messages = await self.receive()
        except TimeoutError:
            raise HandshakeFailed(
                f"said no Hello within {self.config.handshake_timeout:g} s"
            ) from None
        if not messages:
            raise HandshakeFailed("closed the connection before its Hello")
        hello, self._pending = messages[0], messages[1:]
        assert isinstance(hello, Hello)  # the state machine allows nothing else first
        version = choose_version(hello.versions)
        if version is None:
            await self._reject(RejectReason.UNSUPPORTED_VERSION, "no protocol version in common")
        name = self.tokens.verify(hello.token)
        if name is None:
            await self._reject(
                RejectReason.BAD_TOKEN,
                "unknown or revoked token; ask the relay's operator for one "
                "(python -m relay tokens add NAME)",
            )
        assert version is not None and name is not None
        await self.send(
            Welcome(
                version=version,
                session_id=secrets.token_hex(8),
                heartbeat_interval=self.config.heartbeat_interval,
                limits=self.conn.advertised_limits(self.config.max_epochs, self.config.max_pixels),
            )
        )
        if hello.node_name != name:
            log.info("node %s calls itself %r", name, hello.node_name)
        self._handle = self.reports.node_connected(node_info(name, hello))
        live = version >= LIVE_VERSION and hello.capabilities.live
        self.live_sessions.node_up(self._handle, live)
        return self._handle

    async def _reject(self, reason: RejectReason, message: str) -> None:
        await self.send(Reject(reason, message))
        bad_token = reason is RejectReason.BAD_TOKEN
        raise HandshakeFailed(f"rejected: {reason.value}: {message}", bad_token=bad_token)

    # ---- established -----------------------------------------------------------------

    async def serve(self, handle: NodeHandle) -> str:
        """Run the reader, the outbox writer, the heartbeat and the drop watch until one ends."""
        tasks = [
            asyncio.create_task(self._read_loop(handle), name="node-read"),
            asyncio.create_task(self._write_loop(handle), name="node-write"),
            asyncio.create_task(self._heartbeat(handle), name="node-heartbeat"),
            asyncio.create_task(self._dropped(handle), name="node-dropped"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            return next(iter(done)).result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read_loop(self, handle: NodeHandle) -> str:
        messages, self._pending = self._pending, []
        while True:
            for message in messages:
                if isinstance(message, Bye):
                    # Its owner stopped it: running jobs were handed back, not lost to a crash.
                    self._left_on_purpose = message.reason in _ON_PURPOSE
                    return f"said goodbye ({message.reason.value})"
                await self._dispatch(handle, message)
            messages = await self.receive()
            if not messages and self.reader.at_eof():
                return "closed the connection"

    async def _dispatch(self, handle: NodeHandle, message: Message) -> None:
        reports = self.reports
        match message:
            case Accept(job_id=job_id):
                log.debug("node %s accepted job %s", handle.name, job_id)
            case Decline(job_id=job_id, lease_id=lease_id, reason=reason, message=text):
                busy = reason is DeclineReason.BUSY
                reports.declined(handle, job_id, lease_id, text or reason.value, busy=busy)
            case Progress(job_id=job_id, lease_id=lease_id) if not self._allow(
                Report.PROGRESS, job_id, lease_id
            ):
                pass
            case Preview(job_id=job_id, lease_id=lease_id) if not self._allow(
                Report.PREVIEW, job_id, lease_id
            ):
                pass
            case Checkpoint(job_id=job_id, lease_id=lease_id) if not self._allow(
                Report.CHECKPOINT, job_id, lease_id
            ):
                pass
            case Progress(job_id=job_id, lease_id=lease_id, epoch=epoch, max_epochs=planned):
                # The wire's `max_epochs` is the planned count (docs/protocol.md, progress).
                reports.progress(
                    handle,
                    job_id,
                    lease_id,
                    epoch=epoch,
                    epochs=planned,
                    losses=message.losses,
                )
            case Preview(job_id=job_id, lease_id=lease_id, jpeg=jpeg):
                await reports.preview(handle, job_id, lease_id, jpeg)
            case Checkpoint(job_id=job_id, lease_id=lease_id, epoch=epoch, png=png):
                await reports.checkpoint(
                    handle, job_id, lease_id, epoch, png, width=message.width,
                    height=message.height,
                )  # fmt: skip
            case Result(job_id=job_id, lease_id=lease_id, png=png):
                # The protocol checked the PNG against its sha256 on the way in.
                await reports.result(
                    handle, job_id, lease_id, png, width=message.width, height=message.height
                )
            case Failure(job_id=job_id, lease_id=lease_id, code=code, message=text):
                reports.failed(
                    handle,
                    job_id,
                    lease_id,
                    text or code.value,
                    retry=code in _RETRYABLE,
                )
            case Ping(nonce=nonce):
                await self.send(Pong(nonce))
            case Pong():
                pass
            case Drain():
                log.info("node %s is draining: no new jobs for it", handle.name)
                reports.draining(handle)
            case _ if isinstance(message, LIVE_KINDS):
                live_report(self.live_sessions, handle, message)
            case _:
                log.warning("node %s sent an unexpected %s", handle.name, type(message).__name__)

    def _allow(self, kind: Report, job_id: str, lease: str) -> bool:
        """Whether to pass on a progress or preview report; a flood ends the connection."""
        if self.meter.allow(kind, job_id, lease):
            return True
        if self.meter.flooding:
            raise Flooding(f"sent {kind.value} reports far faster than allowed")
        return False

    async def _write_loop(self, handle: NodeHandle) -> str:
        while True:
            command: NodeCommand = await handle.outbox.get()
            match command:
                case OfferJob():
                    try:
                        resume = (self.conn.version or 1) >= CHECKPOINTS_SINCE
                        offer = wire_offer(command, resume=resume)
                        data = self.conn.send(offer)
                    except LocalProtocolError as exc:
                        # The job cannot travel; the node did nothing wrong and keeps its
                        # other jobs. The relay held a slot for this lease: failing it frees it.
                        log.error("job %s cannot be sent to a node: %s", command.job_id, exc)
                        reason = f"the relay could not send this job to a node: {exc}"
                        self.reports.failed(
                            handle, command.job_id, command.lease, reason, retry=False, blame=False
                        )
                        continue
                    await self._write(data)
                case CancelJob(job_id=job_id, lease=lease):
                    await self.send(Cancel(job_id, lease))
                case _:  # a live message; one for a lease the node just ended is moot
                    with contextlib.suppress(LocalProtocolError):
                        await self.send(command)

    async def _heartbeat(self, handle: NodeHandle) -> str:
        """Ping every interval; whether the node answers is the liveness rule's to judge."""
        nonce = 0
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            nonce += 1
            await self.send(Ping(nonce))

    async def _dropped(self, handle: NodeHandle) -> str:
        """The hub let go of this node (silent too long, or a newer connection of the same
        name took its place)."""
        await handle.dropped.wait()
        replaced = self.hub.replaced(handle)
        await self._say_bye(ByeReason.REPLACED if replaced else ByeReason.HEARTBEAT_TIMEOUT)
        return handle.drop_reason or "dropped by the relay"

    async def _say_bye(self, reason: ByeReason) -> None:
        with contextlib.suppress(TimeoutError, ConnectionError, ProtocolError):
            async with asyncio.timeout(1.0):
                await self.send(Bye(reason))

    # ---- the whole life --------------------------------------------------------------

    async def run(self) -> None:
        """Handshake, serve, and always report when the node is gone."""
        handle: NodeHandle | None = None
        reason = "closed"
        try:
            try:
                handle = await self.handshake()
            finally:
                self.gate.settled(self.address)
            self.metrics.node_connections["accepted"] += 1
            event(log, "node_connected", "node %s connected from %s", handle.name, self.peer,
                  node=handle.name, peer=self.peer)  # fmt: skip
            reason = await self.serve(handle)
        except HandshakeFailed as exc:
            self.metrics.node_connections["refused"] += 1
            self.gate.refused(self.address, str(exc), token=exc.bad_token)
        except Flooding as exc:
            reason = str(exc)
            log.warning("node %s: %s; dropping it", handle.name if handle else self.peer, reason)
            await self._say_bye(ByeReason.PROTOCOL_ERROR)
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
            log.warning("node %s: %s", handle.name if handle else self.peer, reason)
            await self._say_bye(ByeReason.PROTOCOL_ERROR)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            reason = f"connection lost: {exc}"
        finally:
            if handle is not None:
                event(log, "node_gone", "node %s gone: %s", handle.name, reason,
                      node=handle.name, reason=reason)  # fmt: skip
                self.reports.node_lost(handle, reason, deliberate=self._left_on_purpose)
                self.live_sessions.node_down(handle)
            self.writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self.writer.wait_closed()


class NodeListener:
    """The TCP server on the node port; one `NodeLink` task per connection."""

    def __init__(
        self,
        config: Config,
        tokens: TokenCheck,
        reports: NodeReports,
        ssl_context: ssl.SSLContext | None = None,
        metrics: Metrics | None = None,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.reports = reports
        self.ssl_context = ssl_context
        self.metrics = metrics or Metrics()
        self.timer = timer
        self.gate = NodeGate(config, timer)
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on the configured host and node port."""
        self._server = await asyncio.start_server(
            self._accept,
            self.config.host,
            self.config.node_port,
            ssl=self.ssl_context,
            limit=READ_SIZE,
        )
        tls = " (TLS)" if self.ssl_context else ""
        log.info("listening for nodes on %s%s", ", ".join(self.addresses()), tls)

    def addresses(self) -> list[str]:
        """Where the listener is bound, as host:port strings."""
        if self._server is None:
            return []
        return [f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in self._server.sockets]

    @property
    def port(self) -> int:
        """The bound port (useful when the config asked for port 0)."""
        assert self._server is not None, "the listener has not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            address = peer_address(writer)
            if not self.gate.admit(address):
                # Closed before reading anything: a refused connection costs no buffer.
                self.metrics.node_connections["refused"] += 1
                writer.close()
                return
            link = NodeLink(
                self.config,
                self.tokens,
                self.reports,
                reader,
                writer,
                metrics=self.metrics,
                gate=self.gate,
                timer=self.timer,
            )
            await link.run()
        except asyncio.CancelledError:
            # `close` cancels the links; a connection handler that ends cancelled makes
            # asyncio log a spurious error, so this one ends normally.
            pass
        finally:
            self._links.discard(task)

    async def close(self) -> None:
        """Stop listening and end every node connection."""
        self.reports.hub.relay_stopping()
        if self._server is not None:
            self._server.close()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
