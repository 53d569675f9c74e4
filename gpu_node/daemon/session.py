"""`Session`: one connection to the relay, from Hello until it ends.

Three tasks share the connection: the reader feeds bytes to the sans-IO `Connection` and
handles what comes out (Offer, Cancel, Ping, Bye...); the writer is the only one that
calls `Connection.send` and writes, in the order messages were queued; the watchdog pings
a quiet relay and gives up on a silent one. Jobs run on worker threads (`jobs.JobTable`),
so the event loop, and with it the heartbeat, never waits for an engine.

`run()` returns how the session ended; a Reject that no retry can cure raises FatalReject.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import itertools
import logging

from gpu_node.daemon.config import NodeConfig
from gpu_node.daemon.devices import Runner
from gpu_node.daemon.jobtable import JobTable
from gpu_node.daemon.live import LiveDesk
from gpu_node.errors import NodeError
from protocol import (
    CHECKPOINTS_SINCE,
    SUPPORTED_VERSIONS,
    Bye,
    ByeReason,
    Cancel,
    Capabilities,
    Connection,
    ConnectionState,
    Drain,
    Failure,
    FailureCode,
    Hello,
    LocalProtocolError,
    Message,
    Offer,
    Ping,
    Pong,
    Reject,
    RejectReason,
    RemoteProtocolError,
    Result,
    Role,
    Welcome,
)
from protocol.live import LIVE_KINDS

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 15.0
"""Seconds to wait for Welcome or Reject after Hello."""
MISSED_HEARTBEATS = 3
"""Heartbeat intervals of silence after which the relay counts as gone."""
HAND_BACK_WAIT = 10.0
"""Seconds jobs handed back may take to stop and send their last checkpoint before Bye
(an engine stops within one epoch)."""
FATAL_REJECTS = frozenset({RejectReason.BAD_TOKEN, RejectReason.UNSUPPORTED_VERSION})
READ_SIZE = 256 * 1024


class FatalReject(NodeError):
    """The relay refused this node for a reason no retry can cure (token, version)."""


class Outcome(enum.Enum):
    """How a session ended."""

    DISCONNECTED = "disconnected"
    """Lost, refused for now, or closed by the relay: reconnect."""
    DRAINED = "drained"
    """We drained and said Bye: stop."""


class Session:
    """One connection to the relay: handshake, offers, heartbeats and job outputs."""

    def __init__(
        self,
        config: NodeConfig,
        capabilities: Capabilities,
        runner: Runner,
        executor: concurrent.futures.Executor,
        *,
        software_version: str = "",
    ) -> None:
        self.config = config
        self.capabilities = capabilities
        self.runner = runner
        self.executor = executor
        self.software_version = software_version
        self.conn = Connection(Role.NODE)
        self.welcome: Welcome | None = None
        self._jobs = JobTable(runner, executor, capabilities.slots, self._send)
        self._live = LiveDesk(
            runner.live_runner, self._send, enabled=not config.no_live, slots=capabilities.slots
        )
        self._outbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._end: asyncio.Future[Outcome] | None = None
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None
        self._hand_back_task: asyncio.Task[None] | None = None
        self._grace = config.drain_grace
        self._welcomed = asyncio.Event()
        self._nonces = itertools.count(1)

    @property
    def jobs(self) -> int:
        """How many accepted jobs are running now."""
        return len(self._jobs)

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Outcome:
        """Say Hello on an open connection and serve it until it ends."""
        loop = asyncio.get_running_loop()
        self._end = loop.create_future()
        tasks = [
            asyncio.create_task(self._write_loop(writer), name="node-writer"),
            asyncio.create_task(self._read_loop(reader), name="node-reader"),
            asyncio.create_task(self._watchdog(), name="node-watchdog"),
        ]
        self._send(
            Hello(
                SUPPORTED_VERSIONS,
                self.config.name,
                self.config.token,
                self.software_version,
                self.capabilities,
            )
        )
        try:
            return await self._end
        finally:
            await self._close(tasks, writer)

    def _finish(self, outcome: Outcome | BaseException) -> None:
        end = self._end
        if end is None or end.done():
            return
        if isinstance(outcome, BaseException):
            end.set_exception(outcome)
        else:
            end.set_result(outcome)

    async def _close(self, tasks: list[asyncio.Task[None]], writer: asyncio.StreamWriter) -> None:
        self._live.close()
        running = self._jobs.tasks()
        self._jobs.hand_back()  # the relay requeues a lost node's jobs
        writer_task, *others = tasks
        others += [t for t in (self._drain_task, self._hand_back_task) if t is not None]
        for task in others:
            task.cancel()
        self._outbox.put_nowait(None)  # flush what is queued (a final Result, Bye), then stop
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(asyncio.shield(writer_task), 10.0)
        writer_task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.wait_for(writer.wait_closed(), 5.0)
        if running:
            # engines stop within an epoch; the slots must be free before the next session
            await asyncio.gather(*running, return_exceptions=True)

    # ---- writing ---------------------------------------------------------------------

    def _send(self, message: Message) -> None:
        self._outbox.put_nowait(message)

    async def _write_loop(self, writer: asyncio.StreamWriter) -> None:
        try:
            while (message := await self._outbox.get()) is not None:
                try:
                    data: bytes | None = self.conn.send(message)
                except LocalProtocolError as exc:
                    data = self._unsendable(message, exc)
                if data is None:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.warning("lost the connection to the relay while writing: %s", exc)
            self._finish(Outcome.DISCONNECTED)
        except Exception:  # a bug here must end the session, never leave it deaf
            log.exception("the connection writer failed")
            self._finish(Outcome.DISCONNECTED)

    def _unsendable(self, message: Message, exc: LocalProtocolError) -> bytes | None:
        if isinstance(message, Result) and self.conn.state in _LIVE:
            # e.g. a PNG over the relay's transfer limit: the job still has to end
            log.error("job %s: cannot send the result: %s", message.job_id, exc)
            failure = Failure(
                message.job_id, message.lease_id, FailureCode.INTERNAL, f"result not sent: {exc}"
            )
            return self.conn.send(failure)
        log.debug("not sending %s: %s", type(message).__name__, exc)
        return None

    # ---- reading ---------------------------------------------------------------------

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(READ_SIZE):
                for message in self.conn.receive_data(data):
                    self._handle(message)
                if self._end is not None and self._end.done():
                    return
            self.conn.receive_data(b"")
            if self._end is not None and not self._end.done():
                log.warning("the relay closed the connection")
            self._finish(Outcome.DISCONNECTED)
        except RemoteProtocolError as exc:
            log.error("the relay broke the protocol: %s", exc)
            self._send(Bye(ByeReason.PROTOCOL_ERROR, str(exc)[:1000]))
            self._finish(Outcome.DISCONNECTED)
        except (ConnectionError, OSError) as exc:
            log.warning("lost the connection to the relay: %s", exc)
            self._finish(Outcome.DISCONNECTED)
        except Exception:  # a bug here must end the session, never leave it hanging
            log.exception("the connection reader failed")
            self._finish(Outcome.DISCONNECTED)

    def _handle(self, message: Message) -> None:
        match message:
            case Welcome():
                self.welcome = message
                self._welcomed.set()
                if message.version >= CHECKPOINTS_SINCE:  # an older relay takes none
                    self._jobs.checkpoint_every = self.config.checkpoint_every
                log.info(
                    "connected to the relay at %s as %r (session %s, protocol v%d)",
                    self.config.relay, self.config.name, message.session_id, message.version,
                )  # fmt: skip
            case Reject(reason=reason, message=text):
                why = f"the relay at {self.config.relay} refused this node: {reason}"
                why += f" ({text})" if text else ""
                if reason in FATAL_REJECTS:
                    self._finish(FatalReject(why))
                else:
                    log.warning("%s; will try again", why)
                    self._finish(Outcome.DISCONNECTED)
            case Offer():
                self._jobs.offer(message)
            case Cancel(job_id=job_id, lease_id=lease_id):
                self._jobs.cancel(job_id, lease_id)
            case Ping(nonce=nonce):
                self._send(Pong(nonce))
            case Pong():
                pass  # any frame counts as a sign of life
            case _ if isinstance(message, LIVE_KINDS):
                self._live.handle(message)
            case Bye(reason=reason, message=text):
                log.warning("the relay said bye: %s%s", reason, f" ({text})" if text else "")
                self._finish(Outcome.DRAINED if self._draining else Outcome.DISCONNECTED)
            case _:
                log.debug("ignoring %s", type(message).__name__)

    # ---- liveness --------------------------------------------------------------------

    async def _watchdog(self) -> None:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # arrives as the Welcome does, and the watchdog would outlive its session
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                await self._welcomed.wait()
        except TimeoutError:
            log.warning("no answer to Hello within %.0f s", HANDSHAKE_TIMEOUT)
            self._finish(Outcome.DISCONNECTED)
            return
        assert self.welcome is not None
        interval = self.welcome.heartbeat_interval
        seen, silent = self.conn.frames_received, 0
        while True:
            await asyncio.sleep(interval)
            if self.conn.frames_received != seen:
                seen, silent = self.conn.frames_received, 0
                continue
            silent += 1
            if silent >= MISSED_HEARTBEATS:
                quiet = f"no frame from the relay for {silent * interval:.0f} s"
                log.warning("%s; dropping the connection", quiet)
                self._send(Bye(ByeReason.HEARTBEAT_TIMEOUT, quiet))
                self._finish(Outcome.DISCONNECTED)
                return
            if self.conn.state in _LIVE:
                self._send(Ping(next(self._nonces)))

    # ---- draining --------------------------------------------------------------------

    def drain(self, grace: float | None = None) -> None:
        """Stop taking jobs, let running ones finish (for `grace` s), then say Bye.

        A second call hands running jobs back at once.
        """
        if self._draining:
            log.warning("asked again to stop: handing back %d job(s) now", len(self._jobs))
            self._hand_back()
            return
        self._draining = self._jobs.draining = self._live.draining = True
        self._grace = self.config.drain_grace if grace is None else grace
        if self.welcome is None:
            # not connected yet: nothing to finish
            self._send(Bye(ByeReason.SHUTDOWN, "the node is shutting down"))
            self._finish(Outcome.DRAINED)
            return
        self._start_drain()

    def _start_drain(self) -> None:
        if self._drain_task is None and self.conn.state is ConnectionState.ESTABLISHED:
            self._drain_task = asyncio.create_task(self._drain(), name="node-drain")

    async def _drain(self) -> None:
        self._send(Drain())
        running = self._jobs.tasks()
        log.info("draining: %d job(s) still running, %.0f s grace", len(running), self._grace)
        if running:
            _, pending = await asyncio.wait(running, timeout=self._grace)
            if pending:
                self._hand_back()
                return
        log.info("drained; saying bye")
        self._send(Bye(ByeReason.DRAINED, "the node is shutting down"))
        self._finish(Outcome.DRAINED)

    def _hand_back(self) -> None:
        running = self._jobs.tasks()
        count = self._jobs.hand_back()
        log.warning("handing %d job(s) back to the relay", count)
        if self._hand_back_task is None:
            self._hand_back_task = asyncio.create_task(self._bye_after(running, count))

    async def _bye_after(self, running: list[asyncio.Task[None]], count: int) -> None:
        """Let the jobs handed back stop and send their last checkpoints, then say Bye."""
        if running and self._jobs.checkpoint_every is not None:
            await asyncio.wait(running, timeout=HAND_BACK_WAIT)
        self._send(
            Bye(ByeReason.SHUTDOWN, f"the node is shutting down; {count} job(s) handed back")
        )
        self._finish(Outcome.DRAINED)


_LIVE = (ConnectionState.ESTABLISHED, ConnectionState.DRAINING)
