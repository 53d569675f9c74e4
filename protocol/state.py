"""The legal order of messages, per side, in one place (docs/protocol.md, "Legal order").

`RULES` says for every message who may send it, in which connection states, and which state
follows. `StateMachine` applies the rules to each message sent or received, and tracks the
leases of offered jobs so that job messages only name leases that are open. Checks come
before any change, so a refused message leaves the machine as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .messages import (
    Accept,
    Bye,
    Cancel,
    Decline,
    Drain,
    Failure,
    Hello,
    Message,
    Offer,
    Ping,
    Pong,
    Preview,
    Progress,
    Reject,
    Result,
    Welcome,
)
from .versions import SUPPORTED_VERSIONS


class Role(Enum):
    """Which end of the connection this is."""

    RELAY = "relay"
    NODE = "node"


class ConnectionState(Enum):
    """Where a connection stands; both ends move through the same states."""

    AWAITING_HELLO = "awaiting hello"
    AWAITING_WELCOME = "awaiting welcome or reject"
    ESTABLISHED = "established"
    DRAINING = "draining"
    CLOSED = "closed"
    ERROR = "failed"


_S = ConnectionState
_LIVE = frozenset({_S.ESTABLISHED, _S.DRAINING})


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may send a message type, when, and what state follows."""

    sender: Role | None  # None: either side
    states: frozenset[ConnectionState]
    # States where the receiver also takes it: it crossed the other side's Drain in flight.
    crossing: frozenset[ConnectionState] = frozenset()
    next_state: ConnectionState | None = None


RULES: dict[type, Rule] = {
    Hello: Rule(Role.NODE, frozenset({_S.AWAITING_HELLO}), next_state=_S.AWAITING_WELCOME),
    Welcome: Rule(Role.RELAY, frozenset({_S.AWAITING_WELCOME}), next_state=_S.ESTABLISHED),
    Reject: Rule(Role.RELAY, frozenset({_S.AWAITING_WELCOME}), next_state=_S.CLOSED),
    Offer: Rule(Role.RELAY, frozenset({_S.ESTABLISHED}), crossing=frozenset({_S.DRAINING})),
    Cancel: Rule(Role.RELAY, _LIVE),
    Accept: Rule(Role.NODE, frozenset({_S.ESTABLISHED})),
    Decline: Rule(Role.NODE, _LIVE),
    Progress: Rule(Role.NODE, _LIVE),
    Preview: Rule(Role.NODE, _LIVE),
    Result: Rule(Role.NODE, _LIVE),
    Failure: Rule(Role.NODE, _LIVE),
    Drain: Rule(Role.NODE, frozenset({_S.ESTABLISHED}), next_state=_S.DRAINING),
    Ping: Rule(None, _LIVE),
    Pong: Rule(None, _LIVE),
    Bye: Rule(None, frozenset(set(_S) - {_S.CLOSED}), next_state=_S.CLOSED),
}
"""The legal order: the table of docs/protocol.md, as code."""


@dataclass(slots=True)
class _Lease:
    job_id: str
    accepted: bool = False


class StateMachine:
    """Applies RULES and lease bookkeeping to the messages of one connection."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.peer = Role.NODE if role is Role.RELAY else Role.RELAY
        self.state = ConnectionState.AWAITING_HELLO
        self.version: int | None = None
        self._offered_versions: tuple[int, ...] = ()
        self._failed_in_handshake = False
        self._leases: dict[str, _Lease] = {}

    @property
    def open_leases(self) -> int:
        """How many offered or accepted leases have not ended."""
        return len(self._leases)

    def sent(self, message: Message) -> None:
        """Check and apply a message our side sends; LocalProtocolError if illegal."""
        self._apply(message, self.role, LocalProtocolError)

    def received(self, message: Message) -> None:
        """Check and apply a message the peer sent; RemoteProtocolError if illegal."""
        self._apply(message, self.peer, RemoteProtocolError)

    def fail(self) -> None:
        """The peer broke the protocol: from now on we may only say Bye (or Reject)."""
        self._failed_in_handshake = self.state in (_S.AWAITING_HELLO, _S.AWAITING_WELCOME)
        self.state = ConnectionState.ERROR

    def close(self) -> None:
        """The stream ended: nothing more can be sent or received."""
        self.state = ConnectionState.CLOSED

    def _apply(self, message: Message, sender: Role, error: type[ProtocolError]) -> None:
        rule = RULES[type(message)]
        name = type(message).__name__
        if rule.sender is not None and rule.sender is not sender:
            raise error(
                f"the {sender.value} may not send {name}: only the {rule.sender.value} does"
            )
        state = self.state
        if state not in rule.states and not (
            (sender is self.peer and state in rule.crossing)
            or (type(message) is Reject and state is _S.ERROR and self._failed_in_handshake)
        ):
            raise error(
                f"the {sender.value} may not send {name} while the connection is {state.value}"
            )
        match message:
            case Hello(versions=versions):
                self._offered_versions = versions
            case Welcome(version=version):
                if version not in self._offered_versions or version not in SUPPORTED_VERSIONS:
                    raise error(
                        f"Welcome chooses version {version}, but the node offered "
                        f"{list(self._offered_versions)} and we speak {list(SUPPORTED_VERSIONS)}"
                    )
                self.version = version
            case Offer() | Accept() | Decline() | Progress() | Preview() | Result() | Failure():
                self._lease(message, error)
            case Cancel():
                # A Cancel may cross the node's final answer in flight: the node ignores those.
                if message.lease_id in self._leases or sender is self.role:
                    self._lease(message, error)
        if rule.next_state is not None:
            self.state = rule.next_state

    def _lease(
        self,
        message: Offer | Accept | Decline | Progress | Preview | Result | Failure | Cancel,
        error: type[ProtocolError],
    ) -> None:
        lease_id = message.lease_id
        lease = self._leases.get(lease_id)
        name = type(message).__name__
        if type(message) is Offer:
            if lease is not None:
                raise error(f"Offer reuses lease {lease_id!r}, which is still open")
            self._leases[lease_id] = _Lease(message.job_id)
            return
        if lease is None:
            raise error(f"{name} names lease {lease_id!r}, which is not open")
        if lease.job_id != message.job_id:
            raise error(
                f"{name} names job {message.job_id!r}, but lease {lease_id!r} "
                f"is for job {lease.job_id!r}"
            )
        match message:
            case Accept() | Decline() if lease.accepted:
                raise error(f"{name} for lease {lease_id!r}, which was already accepted")
            case Progress() | Preview() | Result() | Failure() if not lease.accepted:
                raise error(f"{name} for lease {lease_id!r} before its Accept")
            case Accept():
                lease.accepted = True
            case Decline() | Result() | Failure():
                del self._leases[lease_id]
