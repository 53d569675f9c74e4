"""Full-jitter exponential backoff between reconnects.

After the n-th failure in a row the wait is drawn uniformly from [0, min(cap, base * 2**n)):
spread out, so that a relay restart is not met by every node at the same instant, and
growing, so that a relay that is down for hours sees one attempt a minute per node.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for successive reconnect attempts; `rng` is injected so tests can fix it."""

    def __init__(
        self,
        base: float = 1.0,
        cap: float = 60.0,
        *,
        stable_after: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base}, cap={cap}")
        self.base = base
        self.cap = cap
        self.stable_after = stable_after
        self.failures = 0
        """Failures since the last stable connection."""
        self._rng = rng if rng is not None else random.Random()

    def ceiling(self) -> float:
        """The largest delay the next `failure()` may return."""
        # min() before the power would overflow after ~1000 failures in a row
        return min(self.cap, self.base * 2.0 ** min(self.failures, 64))

    def failure(self) -> float:
        """Record a failed or dropped connection; return how long to wait, in seconds."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self.failures += 1
        return delay

    def connection_ended(self, uptime: float) -> None:
        """A connection that was up for `uptime` seconds ended; a long one resets the count."""
        if uptime >= self.stable_after:
            self.failures = 0
