"""Per-client rate limit for new jobs: a token bucket per client key, with its own clock."""

from collections.abc import Callable
from dataclasses import dataclass


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

    def allow(self, client: str) -> float:
        """Take one token for `client`: 0.0 if allowed, else seconds until the next one."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(self._capacity, now)
        bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.stamp) * self._rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def prune(self) -> None:
        """Forget clients whose bucket has refilled: they would start full anyway."""
        now = self._clock()
        refill = self._capacity / self._rate
        stale = [k for k, b in self._buckets.items() if now - b.stamp >= refill]
        for key in stale:
            del self._buckets[key]
