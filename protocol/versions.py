"""Protocol versions and their negotiation (docs/protocol.md, "Versioning")."""

from __future__ import annotations

from collections.abc import Iterable

PROTOCOL_VERSION = 3
"""The newest protocol version this package speaks."""

SUPPORTED_VERSIONS: tuple[int, ...] = (1, 2, 3)
"""Every protocol version this package speaks."""

CHECKPOINTS_SINCE = 2
"""The version that added `Checkpoint` and the resume fields of `Offer` (a checkpointed
job offered again starts from its latest picture)."""


def choose_version(
    offered: Iterable[int], supported: Iterable[int] = SUPPORTED_VERSIONS
) -> int | None:
    """The highest version both sides speak, or None (then the relay rejects the Hello)."""
    common = set(offered) & set(supported)
    return max(common) if common else None
