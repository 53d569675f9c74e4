"""Rate limits: new jobs per client (a token bucket on the monotonic timer), messages per
recipient (a sliding window on wall time, so it can be rebuilt from stored jobs), and an
API key's own limits (`Quota`)."""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Quota:
    """A key's own limits; None means the relay's (per-address) setting applies."""

    max_open: int | None = None
    per_minute: int | None = None
    per_day: int | None = None
    priority: int = 0
    """Extra jobs served per round-robin turn (see `relay.scheduler`)."""
    node: str | None = None
    """The node token whose work earns this key more turns (`relay.kudos`)."""


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Allows `per_minute` events per client, in bursts of up to `per_minute`."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, client: str, per_minute: int | None = None) -> float:
        """Take one token for `client`: 0.0 if allowed, else seconds until the next one.
        `per_minute` overrides the limit for this client (an API key's own)."""
        now = self._clock()
        capacity = self._capacity if per_minute is None else float(per_minute)
        rate = self._rate if per_minute is None else per_minute / 60.0
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def prune(self) -> None:
        """Forget clients whose bucket has refilled: they would start full anyway."""
        now = self._clock()
        refill = self._capacity / self._rate
        stale = [k for k, b in self._buckets.items() if now - b.stamp >= refill]
        for key in stale:
            del self._buckets[key]


class SlidingWindow:
    """Allows `limit` events per key within any `window` seconds; the caller gives the time."""

    PRUNE_EVERY = 256

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = {}
        self._takes = 0

    def add(self, key: str, when: float) -> None:
        """Count an event that happened at `when` (rebuilding the window after a restart)."""
        self._events.setdefault(key, deque()).append(when)

    def take(self, key: str, now: float, limit: int | None = None) -> bool:
        """Count one event for `key` now if it is under the limit (`limit`, if given, for
        this key); False (and not counted) if that many events already fall within the
        window."""
        self._takes += 1
        if self._takes % self.PRUNE_EVERY == 0:
            self.prune(now)
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= (self.limit if limit is None else limit):
            return False
        events.append(now)
        return True

    def prune(self, now: float) -> None:
        """Forget keys whose every event has left the window."""
        stale = [k for k, e in self._events.items() if not e or e[-1] <= now - self.window]
        for key in stale:
            del self._events[key]
