"""The fixed limits of protocol version 1 (docs/protocol.md, "Limits")."""

from __future__ import annotations

DEFAULT_MAX_FRAME_SIZE = 1024 * 1024
"""Largest frame body a receiver accepts by default; every peer must accept at least this."""

MIN_MAX_FRAME_SIZE = 320 * 1024
"""The smallest `max_frame_size` a Connection may be configured with: a full chunk must fit."""

MAX_HELLO_SIZE = 768 * 1024
"""Largest `hello` frame body. A relay accepts no larger frame before the handshake is done,
so a connection that has not authenticated costs it little memory. A node with the 26
built-in styles sends about 270 KiB (their thumbnails); the node's thumbnail budget keeps
it within this."""

CHUNK_SIZE = 256 * 1024
"""Largest `data` of one chunk frame."""

DEFAULT_MAX_TRANSFER_SIZE = 64 * 1024 * 1024
"""Largest reassembled binary a receiver accepts by default."""

MAX_STYLE_IMAGES = 8
"""Most style images one Offer may carry (each is one transfer)."""

MAX_ID_LEN = 128
"""Longest job id, lease id, session id, style id or method name, in characters."""

MAX_NAME_LEN = 256
"""Longest node name, software version, device name or style name."""

MAX_TOKEN_LEN = 1024
"""Longest node token."""

MAX_TEXT_LEN = 16 * 1024
"""Longest human-readable message (Reject, Decline, Failure, Bye)."""

MAX_ITEMS = 256
"""Most entries of any list or map in a message (versions, styles, params, losses...)."""

MAX_THUMBNAIL_SIZE = 32 * 1024
"""Largest inline style thumbnail in Hello, in bytes."""

MAX_UINT = 2**63 - 1
"""Largest integer value of any field (an Offer param included)."""

MIN_INT = -(2**63)
"""Smallest integer an Offer param may hold: params are signed 64-bit."""
