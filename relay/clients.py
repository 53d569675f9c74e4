"""Who a request comes from: the key every per-client limit counts under.

The key is the peer's address, or, when the peer is one of the operator's trusted reverse
proxies, the address that proxy put last in `X-Forwarded-For` (the hops before it a client
can forge). IPv6 clients are grouped by their /64: one home or phone gets a whole /64 and
could otherwise step through its addresses to escape every limit.
"""

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=64)
def _networks(trusted: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in trusted)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def group(text: str) -> str:
    """The per-client key of one address: IPv4 as is, IPv6 as its /64; other text as is."""
    address = _address(text)
    if address is None:
        return text or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


def is_trusted(peer: str | None, trusted: Sequence[str]) -> bool:
    """Whether `peer` is one of the configured proxies."""
    if not trusted or not peer:
        return False
    address = _address(peer)
    return address is not None and any(address in n for n in _networks(tuple(trusted)))


def client_key(peer: str | None, forwarded: str | None, trusted: Sequence[str]) -> str:
    """The key of the client behind a request from `peer` carrying `forwarded`."""
    if forwarded and is_trusted(peer, trusted):
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops and _address(hops[-1]) is not None:
            return group(hops[-1])
    return group(peer or "unknown")
