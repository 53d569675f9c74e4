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
from .handshake import Hello, Reject, Welcome
from .live import (
    LIVE_VERSION,
    LiveEnd,
    LiveFrame,
    LiveLeases,
    LiveMissed,
    LiveOpen,
    LivePainted,
    LiveReady,
    LiveRestyle,
)
from .messages import (
    Accept,
    Bye,
    Cancel,
    Checkpoint,
    Decline,
    Drain,
    Failure,
    Message,
    Offer,
    Ping,
    Pong,
    Preview,
    Progress,
    Result,
)
from .versions import CHECKPOINTS_SINCE, SUPPORTED_VERSIONS


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
# Tuples, not sets: membership then tests identity and skips Enum's slow __hash__.
_LIVE = (_S.ESTABLISHED, _S.DRAINING)
_ANY_BUT_CLOSED = (_S.AWAITING_HELLO, _S.AWAITING_WELCOME, _S.ESTABLISHED, _S.DRAINING, _S.ERROR)


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may send a message type, when, and what state follows."""

    sender: Role | None  # None: either side
    states: tuple[ConnectionState, ...]
    # States where the receiver also takes it: it crossed the other side's Drain in flight.
    crossing: tuple[ConnectionState, ...] = ()
    next_state: ConnectionState | None = None
    lease: bool = False  # a job message: it must fit the life of its lease
    since: int = 1  # the protocol version that added it
    live: bool = False  # a live message (version 3): it must fit its live lease


RULES: dict[type, Rule] = {
    Hello: Rule(Role.NODE, (_S.AWAITING_HELLO,), next_state=_S.AWAITING_WELCOME),
    Welcome: Rule(Role.RELAY, (_S.AWAITING_WELCOME,), next_state=_S.ESTABLISHED),
    Reject: Rule(Role.RELAY, (_S.AWAITING_WELCOME,), next_state=_S.CLOSED),
    Offer: Rule(Role.RELAY, (_S.ESTABLISHED,), crossing=(_S.DRAINING,), lease=True),
    Cancel: Rule(Role.RELAY, _LIVE, lease=True),
    Accept: Rule(Role.NODE, (_S.ESTABLISHED,), lease=True),
    Decline: Rule(Role.NODE, _LIVE, lease=True),
    Progress: Rule(Role.NODE, _LIVE, lease=True),
    Preview: Rule(Role.NODE, _LIVE, lease=True),
    Checkpoint: Rule(Role.NODE, _LIVE, lease=True, since=CHECKPOINTS_SINCE),
    Result: Rule(Role.NODE, _LIVE, lease=True),
    Failure: Rule(Role.NODE, _LIVE, lease=True),
    Drain: Rule(Role.NODE, (_S.ESTABLISHED,), next_state=_S.DRAINING),
    Ping: Rule(None, _LIVE),
    Pong: Rule(None, _LIVE),
    Bye: Rule(None, _ANY_BUT_CLOSED, next_state=_S.CLOSED),
    LiveOpen: Rule(
        Role.RELAY, (_S.ESTABLISHED,), crossing=(_S.DRAINING,), live=True, since=LIVE_VERSION
    ),
    LiveRestyle: Rule(Role.RELAY, _LIVE, live=True, since=LIVE_VERSION),
    LiveFrame: Rule(Role.RELAY, _LIVE, live=True, since=LIVE_VERSION),
    LiveReady: Rule(Role.NODE, _LIVE, live=True, since=LIVE_VERSION),
    LivePainted: Rule(Role.NODE, _LIVE, live=True, since=LIVE_VERSION),
    LiveMissed: Rule(Role.NODE, _LIVE, live=True, since=LIVE_VERSION),
    LiveEnd: Rule(None, _LIVE, live=True, since=LIVE_VERSION),
}
"""The legal order: the table of docs/protocol.md, as code."""


@dataclass(slots=True)
class _Lease:
    job_id: str
    accepted: bool = False


JobMessage = Offer | Accept | Decline | Progress | Preview | Checkpoint | Result | Failure | Cancel
"""The messages that name a job and its lease."""


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
        self.live = LiveLeases()
        """The open live leases (protocol version 3)."""

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
        kind = type(message)
        rule = RULES[kind]
        if (rule.sender is not sender and rule.sender is not None) or (
            self.state not in rule.states
        ):
            self._check_exception(kind, rule, sender, error)
        if rule.since > 1 or (kind is Offer and message.resumes):  # type: ignore[union-attr]
            self._check_version(kind, CHECKPOINTS_SINCE if kind is Offer else rule.since, error)
        if rule.lease:
            self._lease(message, sender, error)  # type: ignore[arg-type]
        elif rule.live:
            self.live.apply(message, sender is self.role, error)  # type: ignore[arg-type]
        elif kind is Hello:
            self._offered_versions = message.versions  # type: ignore[union-attr]
        elif kind is Welcome:
            self._choose(message.version, error)  # type: ignore[union-attr]
        if rule.next_state is not None:
            self.state = rule.next_state

    def _check_exception(
        self, kind: type, rule: Rule, sender: Role, error: type[ProtocolError]
    ) -> None:
        """Allow the two legal exceptions to RULES, or raise."""
        name = kind.__name__
        if rule.sender is not None and rule.sender is not sender:
            raise error(
                f"the {sender.value} may not send {name}: only the {rule.sender.value} does"
            )
        state = self.state
        if sender is self.peer and state in rule.crossing:
            return
        if kind is Reject and state is _S.ERROR and self._failed_in_handshake:
            return
        raise error(f"the {sender.value} may not send {name} while the connection is {state.value}")

    def _check_version(self, kind: type, since: int, error: type[ProtocolError]) -> None:
        """What a later version added is a protocol error on a connection of an earlier one."""
        version = self.version or 1
        if version < since:
            what = "an Offer with start_image" if kind is Offer else kind.__name__
            raise error(
                f"{what} is new in protocol version {since}; this connection speaks "
                f"version {version}"
            )

    def _choose(self, version: int, error: type[ProtocolError]) -> None:
        if version not in self._offered_versions or version not in SUPPORTED_VERSIONS:
            raise error(
                f"Welcome chooses version {version}, but the node offered "
                f"{list(self._offered_versions)} and we speak {list(SUPPORTED_VERSIONS)}"
            )
        self.version = version

    def _lease(self, message: JobMessage, sender: Role, error: type[ProtocolError]) -> None:
        kind = type(message)
        lease_id = message.lease_id
        lease = self._leases.get(lease_id)
        if (
            (kind is Progress or kind is Preview or kind is Checkpoint)
            and lease is not None
            and lease.accepted
            and lease.job_id == message.job_id
        ):
            return  # the common case, first
        name = kind.__name__
        if kind is Offer:
            if lease is not None:
                raise error(f"Offer reuses lease {lease_id!r}, which is still open")
            self._leases[lease_id] = _Lease(message.job_id)
            return
        if lease is None:
            if kind is Cancel and sender is not self.role:
                return  # it crossed the node's last word on the lease in flight: ignored
            raise error(f"{name} names lease {lease_id!r}, which is not open")
        if lease.job_id != message.job_id:
            raise error(
                f"{name} names job {message.job_id!r}, but lease {lease_id!r} "
                f"is for job {lease.job_id!r}"
            )
        if kind is Cancel:
            return
        if (kind is Accept or kind is Decline) and lease.accepted:
            raise error(f"{name} for lease {lease_id!r}, which was already accepted")
        if kind is not Accept and kind is not Decline and not lease.accepted:
            raise error(f"{name} for lease {lease_id!r} before its Accept")
        if kind is Accept:
            lease.accepted = True
        elif kind is not Progress and kind is not Preview and kind is not Checkpoint:
            del self._leases[lease_id]  # Decline, Result, Failure end the lease
