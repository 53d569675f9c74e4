"""Who may open a node connection: caps on unauthenticated connections, a per-address
limit on failed tokens, and refusals logged once a minute per address, with a count.

    gate = NodeGate(config, timer)
    if gate.admit(address):          # on accept; False: close at once, read nothing
        ...handshake...
        gate.settled(address)        # the handshake ended, however it ended
    gate.refused(address, "bad token", token=True)

Plain bookkeeping, no sockets: the node listener (`relay.nodelink`) calls it.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from relay.config import Config
from relay.logs import event

log = logging.getLogger(__name__)

WINDOW = 60.0
"""Seconds over which failed tokens are counted and refusals are summed up in the log."""


@dataclass
class _Window:
    start: float
    token_failures: int = 0
    refusals: int = 0
    """Refusals in this window not yet logged (the first one of a window is logged)."""
    logged: bool = False


class NodeGate:
    """Admission to the node port, per remote address (the IP, without the port)."""

    def __init__(self, config: Config, timer: Callable[[], float]) -> None:
        self.max_pending = config.max_pending_nodes
        self.max_per_address = config.max_pending_per_address
        self.token_failures_per_minute = config.token_failures_per_minute
        self._timer = timer
        self._pending: dict[str, int] = {}
        self._windows: dict[str, _Window] = {}

    @property
    def pending(self) -> int:
        """Connections that have not finished their handshake."""
        return sum(self._pending.values())

    def admit(self, address: str) -> bool:
        """Whether a new connection from `address` may start a handshake (then it is pending
        until `settled`); False when too many are pending or its tokens failed too often."""
        if self.blocked(address):
            self.refused(address, "too many failed tokens")
            return False
        count = self._pending.get(address, 0)
        if count >= self.max_per_address or self.pending >= self.max_pending:
            self.refused(address, "too many connections waiting for their handshake")
            return False
        self._pending[address] = count + 1
        return True

    def settled(self, address: str) -> None:
        """A connection admitted from `address` finished its handshake, or gave up."""
        count = self._pending.get(address, 0) - 1
        if count > 0:
            self._pending[address] = count
        else:
            self._pending.pop(address, None)

    def blocked(self, address: str) -> bool:
        """Whether `address` used up its failed tokens for this minute."""
        window = self._window(address, create=False)
        return window is not None and window.token_failures >= self.token_failures_per_minute

    def refused(self, address: str, why: str, *, token: bool = False) -> None:
        """Count a refused connection (`token`: it gave a wrong token); the first refusal of
        an address in a minute is logged, the rest are summed up in the next minute's line."""
        window = self._window(address, create=True)
        assert window is not None
        if token:
            window.token_failures += 1
        if window.logged:
            window.refusals += 1
            return
        window.logged = True
        event(log, "node_refused", "node connection from %s refused: %s", address, why,
              level=logging.WARNING, peer=address)  # fmt: skip

    def _window(self, address: str, *, create: bool) -> _Window | None:
        now = self._timer()
        window = self._windows.get(address)
        if window is not None and now - window.start >= WINDOW:
            self._summarize(address, window)
            window = None
            del self._windows[address]
        if window is None and create:
            self._prune(now)
            window = self._windows[address] = _Window(now)
        return window

    def _prune(self, now: float) -> None:
        """Forget addresses whose minute is over, so that many addresses cost no memory."""
        if len(self._windows) < 1024:
            return
        for address, window in list(self._windows.items()):
            if now - window.start >= WINDOW:
                self._summarize(address, window)
                del self._windows[address]

    def _summarize(self, address: str, window: _Window) -> None:
        if window.refusals:
            event(log, "node_refused", "%d more node connection(s) from %s refused in a minute",
                  window.refusals, address, level=logging.WARNING, peer=address,
                  count=window.refusals)  # fmt: skip
