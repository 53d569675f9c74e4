"""Who a request is from: trusted proxies by address, IPv6 clients grouped by /64."""

import pytest

from relay.clients import client_key, group, is_trusted


def test_ipv6_addresses_of_one_64_are_one_client() -> None:
    a = group("2001:db8:1:2::1")
    assert a == group("2001:db8:1:2:ffff:ffff:ffff:fffe") == "2001:db8:1:2::/64"
    assert group("2001:db8:1:3::1") != a


def test_ipv4_and_mapped_ipv4_are_the_same_client() -> None:
    assert group("::ffff:203.0.113.9") == group("203.0.113.9") == "203.0.113.9"


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    trusted = ("127.0.0.1/32", "10.0.0.0/8")
    # From the proxy: the hop it appended counts; the hops before it are the client's word.
    assert client_key("10.1.2.3", "6.6.6.6, 203.0.113.5", trusted) == "203.0.113.5"
    # From anyone else (a missing firewall): the header is ignored.
    assert client_key("198.51.100.7", "203.0.113.5", trusted) == "198.51.100.7"
    assert client_key("198.51.100.7", "203.0.113.5", ()) == "198.51.100.7"


def test_a_forwarded_ipv6_client_is_grouped_too() -> None:
    key = client_key("127.0.0.1", "2001:db8:5:6::77", ("127.0.0.1",))
    assert key == "2001:db8:5:6::/64"


@pytest.mark.parametrize("junk", ["", "not-an-ip", "999.1.1.1", "1.2.3.4:80"])
def test_a_garbled_forwarded_hop_falls_back_to_the_proxy(junk: str) -> None:
    assert client_key("127.0.0.1", junk, ("127.0.0.1",)) == "127.0.0.1"


def test_trust_needs_an_address_inside_a_listed_network() -> None:
    assert is_trusted("::1", ("::1/128",))
    assert not is_trusted("::2", ("::1/128",))
    assert not is_trusted(None, ("0.0.0.0/0",))
