"""Address classes a media download may and may not connect to."""

from __future__ import annotations

import pytest

from receiver.media.netguard import blocked_reason, is_public, parse_address

BLOCKED = [
    # IPv4
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("169.254.169.254", "metadata"),
    ("169.254.170.2", "metadata"),
    ("169.254.1.1", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this-network"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),  # broadcast
    ("192.0.2.1", "special-purpose"),  # TEST-NET-1
    ("198.18.0.1", "special-purpose"),  # benchmarking
    # IPv6
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("[fe80::abcd]", "link-local"),
    ("fc00::1", "unique-local"),
    ("fd00::2", "unique-local"),
    ("fd00:ec2::254", "metadata"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "special-purpose"),
    ("100::1", "reserved"),
    ("::7f00:1", "reserved"),  # IPv4-compatible (deprecated) 127.0.0.1
    # IPv4 addresses inside IPv6
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:169.254.169.254", "IPv4-mapped cloud metadata"),
    ("::ffff:100.64.0.1", "IPv4-mapped shared address space (CGNAT)"),
    ("::ffff:0.0.0.0", "IPv4-mapped unspecified"),
    ("64:ff9b::a00:1", "NAT64 private"),
    ("64:ff9b::7f00:1", "NAT64 loopback"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("2002:a00:1::1", "6to4 private"),
    ("2002:7f00:1::1", "6to4 loopback"),
    ("2001::1", "special-purpose"),  # Teredo
]

PUBLIC = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "52.216.0.1",  # an S3 address
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.15.255.255",
    "172.32.0.0",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_blocked_addresses_name_their_class(address: str, reason: str) -> None:
    found = blocked_reason(address)
    assert found is not None
    assert reason in found
    assert not is_public(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(address) is None
    assert is_public(address)


@pytest.mark.parametrize("value", ["example.com", "", "1.2.3", "::g", "300.1.1.1"])
def test_non_addresses_raise_value_error(value: str) -> None:
    with pytest.raises(ValueError):
        blocked_reason(value)


def test_parse_address_accepts_objects_brackets_and_zones() -> None:
    ip = parse_address("[fe80::1%eth0]")
    assert str(ip) == "fe80::1"
    assert parse_address(ip) is ip
