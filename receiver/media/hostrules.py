"""Where a download may go: the URL's form, the allowed hosts, public addresses.

URLs: http and https only, no ``user:password@``, no control characters, and
host names in one canonical form (numeric IPv4 spellings such as ``127.1``
are refused). Hosts: with ``require_allowlisted`` the first URL's host must
match an `allowed_hosts` entry; an entry with a port also lets exactly that
host and port reach non-public addresses (tests, internal media hosts).

Addresses: the rule is "public unicast only": anything a forged `MediaUrl` or
a hostile redirect could use to reach this machine, the private network
behind it or a cloud metadata service is refused. Python's `is_global` alone
is not enough (on 3.11 it calls multicast addresses global and knows nothing
of addresses embedded in IPv6 transition prefixes), so the explicit checks
come first and `is_global` is the final catch-all.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit, urlunsplit

from receiver.errors import BlockedHost, ConfigError

__all__ = [
    "DEFAULT_PORTS",
    "HostRules",
    "Rule",
    "Target",
    "blocked_reason",
    "is_public",
    "parse_address",
    "parse_rule",
    "parse_url",
]

DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")

# ---------------------------------------------------------------------------
# URLs


@dataclass(frozen=True)
class Target:
    """One parsed, validated hop URL."""

    url: str
    scheme: str
    host: str
    port: int
    is_ip: bool
    path: str
    query: str

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port): what credentials are scoped to."""
        return (self.scheme, self.host, self.port)

    @property
    def host_port(self) -> str:
        """``host:port`` with the port always present (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def host_header(self) -> str:
        """The Host header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def safe(self) -> str:
        """The URL for messages: no query, which may hold a presigned signature."""
        return f"{self.scheme}://{self.host_header}{self.path}"

    def pinned_url(self, address: str) -> str:
        """This URL with the host replaced by `address`, a checked IP (see `pinning`)."""
        host = f"[{address}]" if ":" in address else address
        return urlunsplit((self.scheme, f"{host}:{self.port}", self.path or "/", self.query, ""))


def parse_url(url: str) -> Target:
    """Validate a URL's scheme and host; raises BlockedHost with the reason."""
    text = url.strip()
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise BlockedHost("media URL contains control characters")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        got = f"{scheme}:" if scheme else "no scheme"
        raise BlockedHost(f"only http and https media URLs are fetched (got {got})")
    if "@" in parts.netloc:
        raise BlockedHost(
            "media URLs with user:password@ are refused; credentials come from configuration"
        )
    try:
        port = parts.port
    except ValueError:
        raise BlockedHost(f"media URL has an invalid port: {parts.netloc!r}") from None
    if not parts.hostname:
        raise BlockedHost("media URL has no host")
    try:
        host, is_ip = _normalize_host(parts.hostname)
    except ValueError as exc:
        raise BlockedHost(f"media URL host {parts.hostname!r} is refused: {exc}") from None
    clean = urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    return Target(
        url=clean,
        scheme=scheme,
        host=host,
        port=port if port is not None else DEFAULT_PORTS[scheme],
        is_ip=is_ip,
        path=parts.path,
        query=parts.query,
    )


def _normalize_host(raw: str) -> tuple[str, bool]:
    """Lower-case ASCII host name or canonical IP text, and whether it is an IP."""
    text = raw.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text)), True
    except ValueError:
        pass
    if ":" in text:
        raise ValueError("not a valid IPv6 address")
    if text.endswith("."):
        text = text[:-1]
    try:
        ascii_host = text.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("not a valid host name") from None
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("not a valid host name")
    last = labels[-1]
    if last.isdigit() or re.fullmatch(r"0x[0-9a-f]*", last):
        # "127.1", "2130706433" and "0x7f.1" all reach 127.0.0.1 through
        # inet_aton; a real name never ends in a numeric label.
        raise ValueError("looks like an IPv4 address in a non-standard form")
    return ascii_host, False


# ---------------------------------------------------------------------------
# Allowed hosts


@dataclass(frozen=True)
class Rule:
    """One allowed_hosts entry: a host, and the port it is limited to (None: any)."""

    host: str
    port: int | None


def parse_rule(entry: str) -> Rule:
    """Parse an allowed_hosts entry: host, host:port, [v6], [v6]:port or a bare IPv6 address.

    Raises ConfigError naming `FetchConfig.allowed_hosts` and the entry.
    """
    text = entry.strip().lower()
    host, port_text = text, ""
    if text.startswith("["):
        close = text.find("]")
        if close == -1 or (close + 1 < len(text) and text[close + 1] != ":"):
            raise ConfigError(f"FetchConfig.allowed_hosts: {entry!r} is not [IPv6]:port")
        host, port_text = text[1:close], text[close + 2 :]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        name, _ = _normalize_host(host)
        port = int(port_text) if port_text else None
    except ValueError:
        raise ConfigError(
            f"FetchConfig.allowed_hosts: {entry!r} is not host or host:port "
            "(e.g. api.twilio.com or 127.0.0.1:8123)"
        ) from None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"FetchConfig.allowed_hosts: {entry!r} has an invalid port")
    return Rule(name, port)


class HostRules:
    """The host and address checks of one fetcher's `allowed_hosts`."""

    def __init__(self, allowed_hosts: Iterable[str], *, require_allowlisted: bool) -> None:
        self._rules = tuple(parse_rule(entry) for entry in allowed_hosts)
        self._require_allowlisted = require_allowlisted

    def first(self, url: str) -> Target:
        """The first URL of a download: valid, and allowlisted when that is required."""
        target = parse_url(url)
        if self._require_allowlisted and not any(
            rule.host == target.host and rule.port in (None, target.port) for rule in self._rules
        ):
            raise BlockedHost(
                f"{target.host_port} is not an allowed media host; add it to "
                "RECEIVER_MEDIA_HOSTS if media really comes from there"
            )
        return target

    def check_addresses(self, target: Target, addresses: Iterable[str]) -> list[str]:
        """The canonical text of every address `target` resolved to, or BlockedHost
        when any of them may not be reached."""
        private_ok = any(
            rule.host == target.host and rule.port == target.port for rule in self._rules
        )
        checked: list[str] = []
        for value in addresses:
            try:
                ip = parse_address(value)
            except ValueError:
                raise BlockedHost(f"{target.host} resolved to {value!r}, not an address") from None
            reason = None if private_ok else blocked_reason(ip)
            if reason is not None:
                where = target.host if target.is_ip else f"{target.host} resolves to {ip}, which"
                raise BlockedHost(
                    f"{where} is a {reason} address; media is only fetched from public "
                    "addresses (list the exact host:port in RECEIVER_MEDIA_HOSTS to allow it)"
                )
            checked.append(str(ip))
        return checked


# ---------------------------------------------------------------------------
# Addresses

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


def _scope_reason(ip: IPv4Address | IPv6Address) -> str | None:
    # The scopes both families name the same way.
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    return None


def _ipv4_reason(ip: IPv4Address) -> str | None:
    if ip in _METADATA:
        return "cloud metadata"
    if ip in _THIS_NETWORK:
        # 0.0.0.0 and friends connect to this host on Linux.
        return "unspecified" if ip.is_unspecified else "this-network"
    scope = _scope_reason(ip)
    if scope is not None:
        return scope
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
    scope = _scope_reason(ip)
    if scope is not None:
        return scope
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
