"""The relay–node wire protocol, sans-IO: bytes in, messages out; messages in, bytes out.

Needs only the standard library and msgpack. See docs/protocol.md for the spec.

    conn = Connection(Role.NODE)
    sock.sendall(conn.send(Hello(...)))
    for message in conn.receive_data(sock.recv(65536)):
        ...
"""

from .checks import is_param, is_weight
from .codes import ByeReason, DeclineReason, FailureCode, RejectReason
from .connection import Connection
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .handshake import (
    GATYS_START_EPOCHS,
    Capabilities,
    DeviceInfo,
    Hello,
    Limits,
    Pace,
    Reject,
    StyleInfo,
    Welcome,
)
from .limits import (
    CHUNK_SIZE,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_TRANSFER_SIZE,
    MAX_HELLO_SIZE,
    MAX_STYLE_IMAGES,
    MAX_TEXT_LEN,
    MAX_UINT,
    MIN_INT,
)
from .live import (
    LIVE_METHODS,
    LIVE_VERSION,
    MAX_LIVE_IMAGE,
    LiveEnd,
    LiveFrame,
    LiveMessage,
    LiveMissed,
    LiveOpen,
    LivePainted,
    LiveReady,
    LiveRestyle,
    LiveStyle,
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
    Scalar,
    StyleImage,
)
from .state import ConnectionState, Role
from .versions import CHECKPOINTS_SINCE, PROTOCOL_VERSION, SUPPORTED_VERSIONS, choose_version

__all__ = [
    "CHECKPOINTS_SINCE",
    "CHUNK_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_TRANSFER_SIZE",
    "GATYS_START_EPOCHS",
    "LIVE_METHODS",
    "LIVE_VERSION",
    "MAX_HELLO_SIZE",
    "MAX_LIVE_IMAGE",
    "MAX_STYLE_IMAGES",
    "MAX_TEXT_LEN",
    "MAX_UINT",
    "MIN_INT",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Accept",
    "Bye",
    "ByeReason",
    "Cancel",
    "Capabilities",
    "Checkpoint",
    "Connection",
    "ConnectionState",
    "Decline",
    "DeclineReason",
    "DeviceInfo",
    "Drain",
    "Failure",
    "FailureCode",
    "Hello",
    "Limits",
    "LiveEnd",
    "LiveFrame",
    "LiveMessage",
    "LiveMissed",
    "LiveOpen",
    "LivePainted",
    "LiveReady",
    "LiveRestyle",
    "LiveStyle",
    "LocalProtocolError",
    "Message",
    "Offer",
    "Pace",
    "Ping",
    "Pong",
    "Preview",
    "Progress",
    "ProtocolError",
    "Reject",
    "RejectReason",
    "RemoteProtocolError",
    "Result",
    "Role",
    "Scalar",
    "StyleImage",
    "StyleInfo",
    "Welcome",
    "choose_version",
    "is_param",
    "is_weight",
]
