"""Which IP addresses a media download may connect to.

The rule is "public unicast only": anything a forged `MediaUrl` or a hostile
redirect could use to reach this machine, the private network behind it or a
cloud metadata service is refused. Python's `is_global` alone is not enough
(on 3.11 it calls multicast addresses global and knows nothing of addresses
embedded in IPv6 transition prefixes), so the explicit checks come first and
`is_global` is the final catch-all.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

# Instance metadata endpoints get their own reason so a log line says what an
# attacker was after.
_METADATA = frozenset(
    {
        IPv4Address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean
        IPv4Address("169.254.170.2"),  # AWS ECS task metadata
        IPv4Address("100.100.100.200"),  # Alibaba Cloud
        IPv6Address("fd00:ec2::254"),  # AWS over IPv6
    }
)
_THIS_NETWORK = IPv4Network("0.0.0.0/8")
_SHARED_CGNAT = IPv4Network("100.64.0.0/10")
_PRIVATE_V4 = (
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
)
_UNIQUE_LOCAL = IPv6Network("fc00::/7")
_SITE_LOCAL = IPv6Network("fec0::/10")
# NAT64 prefixes carry an IPv4 address in their last 32 bits; on a NAT64
# network 64:ff9b::a00:1 reaches 10.0.0.1.
_NAT64_WELL_KNOWN = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")


def parse_address(value: str | IPAddress) -> IPAddress:
    """Parse an IPv4 or IPv6 address (an IPv6 zone such as ``%eth0`` is dropped).

    Raises ValueError when `value` is not an IP address.
    """
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    # The zone only selects an interface; the class of the address is what matters.
    text = text.split("%", 1)[0]
    return ipaddress.ip_address(text)


def blocked_reason(value: str | IPAddress) -> str | None:
    """Why a download must not connect to this address, or None when it is public.

    The reason is a short phrase for error messages, e.g. ``"loopback"`` or
    ``"IPv4-mapped private"``. Raises ValueError when `value` is not an address.
    """
    ip = parse_address(value)
    if isinstance(ip, IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            label, inner = embedded
            reason = blocked_reason(inner)
            return f"{label} {reason}" if reason else None
        return _ipv6_reason(ip)
    return _ipv4_reason(ip)


def is_public(value: str | IPAddress) -> bool:
    """Whether a download may connect to this address without an explicit allowlist entry."""
    return blocked_reason(value) is None


def _ipv4_reason(ip: IPv4Address) -> str | None:
    if ip in _METADATA:
        return "cloud metadata"
    if ip in _THIS_NETWORK:
        # 0.0.0.0 and friends connect to this host on Linux.
        return "unspecified" if ip.is_unspecified else "this-network"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip in _SHARED_CGNAT:
        return "shared address space (CGNAT)"
    if any(ip in net for net in _PRIVATE_V4):
        return "private"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        # Documentation, benchmarking and protocol-assignment ranges.
        return "special-purpose"
    return None


def _ipv6_reason(ip: IPv6Address) -> str | None:
    if ip in _METADATA:
        return "cloud metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip in _SITE_LOCAL:
        return "site-local"
    if ip in _UNIQUE_LOCAL:
        return "unique-local"
    if ip in _NAT64_LOCAL:
        return "local-use NAT64"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return "special-purpose"
    return None


def _embedded_ipv4(ip: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 address will really reach, for the forms that embed one."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64_WELL_KNOWN:
        return "NAT64", IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    # Teredo (2001::/32) is not global on any Python we support, so it is
    # refused by _ipv6_reason without looking inside.
    return None
