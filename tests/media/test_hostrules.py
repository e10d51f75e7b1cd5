"""Where a media download may go: URL forms, allowed hosts and address classes.

The address classes are checked directly; the URL and host rules through a
Fetcher against real servers on loopback, with a fake resolver where a host
name must resolve to a given address.
"""

from __future__ import annotations

import pytest

from receiver.errors import BlockedHost
from receiver.media.fetch import FetchConfig, Fetcher
from receiver.media.hostrules import blocked_reason, is_public, parse_address
from tests.support.fetching import FakeDNS, config, fetcher, read_all
from tests.support.mediaserver import MediaServer

# ---------------------------------------------------------------------------
# Address classes


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


# ---------------------------------------------------------------------------
# Redirects: every hop's host and addresses are checked


def test_redirect_to_unlisted_loopback_port_is_blocked(
    server: MediaServer, other: MediaServer
) -> None:
    other.add("/x", b"secret internal data")
    server.redirect("/go", other.url("/x"))
    with pytest.raises(BlockedHost) as info:
        fetcher(server).fetch(server.url("/go"), max_bytes=100)
    assert info.value.reason == "blocked_host"
    assert "loopback" in str(info.value)
    assert other.count() == 0


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:1/x",
        "http://10.0.0.1/x",
        "http://172.16.5.4/x",
        "http://192.168.0.1/admin",
        "http://100.64.0.1/x",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::1]:8080/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[::ffff:169.254.169.254]/x",
        "http://[fd00::1]/x",
        "http://[fe80::1]/x",
        "http://0.0.0.0:80/x",
        "http://224.0.0.1/x",
    ],
)
def test_redirect_to_non_public_literal_is_blocked(server: MediaServer, location: str) -> None:
    server.redirect("/go", location)
    with pytest.raises(BlockedHost) as info:
        fetcher(server).fetch(server.url("/go"), max_bytes=100)
    assert info.value.reason == "blocked_host"
    assert not info.value.retryable


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "100.64.0.1", "fd00::1"]
)
def test_redirect_to_name_resolving_to_non_public_address_is_blocked(
    server: MediaServer, address: str
) -> None:
    dns = FakeDNS({"cdn.test": [address]})
    server.redirect("/go", "http://cdn.test/file.jpg")
    with pytest.raises(BlockedHost) as info:
        fetcher(server, resolver=dns).fetch(server.url("/go"), max_bytes=100)
    assert address in str(info.value)
    assert dns.calls == [("cdn.test", 80)]


def test_name_with_any_non_public_address_is_blocked(server: MediaServer) -> None:
    dns = FakeDNS({"cdn.test": ["93.184.216.34", "10.0.0.1"]})
    server.redirect("/go", "http://cdn.test/file.jpg")
    with pytest.raises(BlockedHost, match=r"10\.0\.0\.1"):
        fetcher(server, resolver=dns).fetch(server.url("/go"), max_bytes=100)


def test_redirect_to_ipv6_loopback_server_is_blocked(server: MediaServer) -> None:
    if not MediaServer.ipv6_available():
        pytest.skip("no IPv6 loopback on this machine")
    with MediaServer("::1") as v6:
        v6.add("/x", b"internal")
        server.redirect("/go", v6.url("/x"))
        with pytest.raises(BlockedHost, match="loopback"):
            fetcher(server).fetch(server.url("/go"), max_bytes=100)
        assert v6.count() == 0


def test_allowlisted_ipv6_server_is_fetched(server: MediaServer) -> None:
    if not MediaServer.ipv6_available():
        pytest.skip("no IPv6 loopback on this machine")
    with MediaServer("::1") as v6:
        url = v6.add("/x", b"over ipv6")
        assert v6.host_port.startswith("[::1]:")
        assert read_all(fetcher(v6).fetch(url, max_bytes=100)) == b"over ipv6"
        assert v6.requests[0].header("Host") == v6.host_port


@pytest.mark.parametrize(
    "location",
    ["file:///etc/passwd", "ftp://example.com/x", "gopher://127.0.0.1:70/_x", "data:,hello"],
)
def test_redirect_to_non_http_scheme_is_blocked(server: MediaServer, location: str) -> None:
    server.redirect("/go", location)
    with pytest.raises(BlockedHost, match="only http and https"):
        fetcher(server).fetch(server.url("/go"), max_bytes=100)


# ---------------------------------------------------------------------------
# First URL: allowlist, scheme, userinfo


def test_non_allowlisted_first_host_is_refused_without_a_lookup(server: MediaServer) -> None:
    dns = FakeDNS({"evil.test": ["93.184.216.34"]})
    with pytest.raises(BlockedHost, match="not an allowed media host"):
        fetcher(server, resolver=dns).fetch("https://evil.test/a.jpg", max_bytes=100)
    assert dns.calls == []


def test_allowlisted_host_on_another_port_is_refused(
    server: MediaServer, other: MediaServer
) -> None:
    url = other.add("/x", b"data")
    with pytest.raises(BlockedHost):
        fetcher(server).fetch(url, max_bytes=100)
    assert other.count() == 0


def test_entry_without_port_allows_public_addresses_only(server: MediaServer) -> None:
    server.add("/x", b"data")
    dns = FakeDNS({"media.test": ["127.0.0.1"]})
    media = Fetcher(config(allowed_hosts=("media.test",)), resolver=dns)
    with pytest.raises(BlockedHost, match="loopback"):
        media.fetch(server.url("/x", host="media.test"), max_bytes=100)
    assert server.count() == 0


def test_outbound_mode_allows_any_public_host_but_no_private_one(server: MediaServer) -> None:
    url = server.add("/x", b"data")
    media = Fetcher(config(allowed_hosts=(), require_allowlisted=False))
    with pytest.raises(BlockedHost, match="loopback"):
        media.fetch(url, max_bytes=100)
    # A listed host:port is still reachable (tests, the service's own /m/ links).
    listed = Fetcher(config(server, require_allowlisted=False))
    assert read_all(listed.fetch(url, max_bytes=100)) == b"data"


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/x", "file:///etc/passwd", "javascript:alert(1)", "//127.0.0.1/x", "x"],
)
def test_non_http_first_url_is_refused(server: MediaServer, url: str) -> None:
    with pytest.raises(BlockedHost):
        fetcher(server).fetch(url, max_bytes=100)


def test_userinfo_is_refused_and_not_echoed(server: MediaServer) -> None:
    url = f"http://user:hunter2@{server.host_port}/x"
    with pytest.raises(BlockedHost) as info:
        fetcher(server).fetch(url, max_bytes=100)
    assert "hunter2" not in str(info.value)
    assert server.count() == 0


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.1", "017700000001"])
def test_numeric_host_spellings_are_refused(host: str) -> None:
    media = Fetcher(config(allowed_hosts=(), require_allowlisted=False))
    with pytest.raises(BlockedHost, match="non-standard"):
        media.fetch(f"http://{host}/x", max_bytes=10)


def test_config_accepts_host_port_and_ipv6_entries() -> None:
    cfg = FetchConfig(allowed_hosts=["api.twilio.com", "127.0.0.1:8123", "[::1]:9000", "::1"])  # type: ignore[arg-type]
    assert cfg.allowed_hosts == ("api.twilio.com", "127.0.0.1:8123", "[::1]:9000", "::1")
