"""Per-job event streams for WebSocket subscribers.

Each subscriber owns a bounded queue. When a slow client lets it fill, the oldest event is
dropped to make room: progress and previews only matter at their latest, and the final
event (done, failed, cancelled) is always the last one put, so it is never the one lost.
Jobs without subscribers cost nothing here.
"""

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

Event = Mapping[str, Any]
FINAL_TYPES = frozenset({"done", "failed", "cancelled"})


class Subscription:
    """One subscriber's bounded queue of events for one job."""

    def __init__(self, bus: "EventBus", job_id: str, maxsize: int) -> None:
        self.job_id = job_id
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0

    def put(self, event: Event) -> None:
        """Queue an event, dropping the oldest one if the subscriber has fallen behind."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        """The next event (waits for one)."""
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        self._bus.unsubscribe(self)


class EventBus:
    """Fans events of a job out to that job's current subscribers."""

    def __init__(self, queue_size: int = 32) -> None:
        self._queue_size = queue_size
        self._topics: dict[str, set[Subscription]] = {}

    def subscribe(self, job_id: str) -> Subscription:
        """Start receiving a job's events (the caller sends the current state first)."""
        sub = Subscription(self, job_id, self._queue_size)
        self._topics.setdefault(job_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop a subscription; forget the job when nobody listens any more."""
        subs = self._topics.get(sub.job_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._topics[sub.job_id]

    def watching(self, job_id: str) -> bool:
        """Whether anyone subscribes to this job (events for nobody need not be built)."""
        return job_id in self._topics

    def watched(self) -> list[str]:
        """Jobs with at least one subscriber."""
        return list(self._topics)

    def publish(self, job_id: str, event: Event) -> None:
        """Send an event to every subscriber of the job."""
        for sub in self._topics.get(job_id, ()):
            sub.put(event)

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return sum(len(s) for s in self._topics.values())
