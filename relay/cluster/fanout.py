"""Job events between replicas: published on one, delivered on every other, through
PostgreSQL LISTEN/NOTIFY, batched.

A WebSocket on replica B watches a job that runs through replica A: A's job service
publishes each event here as well as to its own subscribers; B's `Fanout` hands it to its
`deliver` callback (which feeds B's subscribers). Events published within `window`
seconds go out as one NOTIFY (up to `MAX_PAYLOAD` bytes), one after the other from one
task, so each replica sees them in the order they were published. A replica ignores its
own NOTIFYs (its subscribers had the events already).

An event too large for a NOTIFY is sent as `{"type": "stale"}`: the subscriber fetches the
job's view again. NOTIFY is not stored: a replica whose listening connection broke may
have missed events (`on_gap` is called when it is listening again, so subscribers resync).
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = "stylerelay_events"
MAX_PAYLOAD = 7900
"""Bytes of one NOTIFY payload (PostgreSQL's limit is 8000)."""
STALE: dict[str, Any] = {"type": "stale"}
"""Stands for an event too large to send: fetch the job again."""

Deliver = Callable[[str, dict[str, Any]], None]


class Fanout:
    """Publishes this replica's job events and delivers the other replicas' (see above)."""

    def __init__(
        self,
        pool: Any,
        listener: Any,
        replica: str,
        deliver: Deliver,
        *,
        window: float = 0.005,
    ) -> None:
        self.pool = pool
        """An asyncpg pool to publish with."""
        self.listener = listener
        """An asyncpg connection of its own, to LISTEN on."""
        self.replica = replica
        self.deliver = deliver
        self.window = window
        self.notifies = 0
        """NOTIFYs sent so far (each carries a batch of events)."""
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen for the other replicas' events and start publishing."""
        await self.listener.add_listener(CHANNEL, self._on_notify)
        self._task = asyncio.create_task(self._publish_loop())

    async def listen(self, listener: Any) -> None:
        """Listen on a new connection (the old one was lost with a PostgreSQL restart)."""
        self.listener = listener
        await self.listener.add_listener(CHANNEL, self._on_notify)

    async def close(self) -> None:
        """Send what is pending, then stop."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.listener.remove_listener(CHANNEL, self._on_notify)

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        """Send `event` of `job_id` to the other replicas (soon, batched)."""
        self._pending.append((job_id, event))
        self._ready.set()

    async def flush(self) -> None:
        """Send every pending event now."""
        while self._pending:
            await self._send(self._take_batch())

    def _take_batch(self) -> list[tuple[str, Any]]:
        batch: list[tuple[str, Any]] = []
        size = len(json.dumps({"from": self.replica, "events": []}))
        while self._pending:
            job_id, event = self._pending[0]
            cost = len(json.dumps([job_id, event])) + 2
            if cost + 64 > MAX_PAYLOAD:
                event = STALE
                cost = len(json.dumps([job_id, event])) + 2
            if batch and size + cost > MAX_PAYLOAD:
                break
            self._pending.pop(0)
            batch.append((job_id, event))
            size += cost
        return batch

    async def _send(self, batch: list[tuple[str, Any]]) -> None:
        payload = json.dumps({"from": self.replica, "events": batch})
        await self.pool.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        self.notifies += 1

    async def _publish_loop(self) -> None:
        while True:
            await self._ready.wait()
            # Gather what else comes within the window into the same NOTIFY.
            await asyncio.sleep(self.window)
            self._ready.clear()
            try:
                await self.flush()
            except Exception:  # the database is away: the events are lost, say so
                log.exception("could not publish %d job events", len(self._pending))
                self._pending.clear()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message["from"] == self.replica:
                return
            events = [(str(job), dict(event)) for job, event in message["events"]]
        except (ValueError, KeyError, TypeError):
            log.error("ignored a malformed event batch on %s", CHANNEL)
            return
        for job_id, event in events:
            self.deliver(job_id, event)
