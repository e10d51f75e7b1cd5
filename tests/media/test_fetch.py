"""The media fetcher against real HTTP servers on loopback.

Every test here downloads over real sockets from `MediaServer`; where a test
needs a host *name* to resolve to a given address, it passes a fake resolver
to the Fetcher (the fetcher's own hook), never a mock of the HTTP client.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import posixpath
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
import urllib3.util.connection

from receiver.errors import BlockedHost, ConfigError, FetchError, TooLarge
from receiver.media.fetch import ByteBudget, FetchConfig, Fetcher, FetchResult
from tests.support.mediaserver import MediaServer, Reply, make_tls

ACCOUNT = "AC" + "0" * 32
OTHER_ACCOUNT = "AC" + "1" * 32
MEDIA_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages/MM{'a' * 32}/Media/ME{'b' * 32}"
CREDENTIALS = ("SK" + "c" * 32, "top-secret-api-key-value")
BASIC = "Basic " + base64.b64encode(f"{CREDENTIALS[0]}:{CREDENTIALS[1]}".encode()).decode()


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with MediaServer() as media:
        yield media


@pytest.fixture
def other() -> Iterator[MediaServer]:
    """A second server: another port on loopback, so another origin."""
    with MediaServer() as media:
        yield media


def config(*servers: MediaServer, **overrides: Any) -> FetchConfig:
    """Short timeouts and backoff so failure paths stay fast."""
    values: dict[str, Any] = {
        "allowed_hosts": tuple(s.host_port for s in servers),
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "deadline": 5.0,
        "backoff": 0.01,
    }
    values.update(overrides)
    return FetchConfig(**values)


def fetcher(*servers: MediaServer, resolver: Any = None, **overrides: Any) -> Fetcher:
    return Fetcher(config(*servers, **overrides), resolver=resolver)


def read_all(result: FetchResult) -> bytes:
    try:
        return result.file.read()
    finally:
        result.close()


class FakeDNS:
    """A resolver that answers from a table and counts lookups."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return list(self.table[host])


# ---------------------------------------------------------------------------
# Byte-exact downloads


@pytest.mark.parametrize("size", [1, 300_000, 3 * 1024 * 1024])
def test_download_is_byte_exact_with_sha256_and_head(server: MediaServer, size: int) -> None:
    body = os.urandom(size)
    url = server.add("/photo.jpg", body, content_type="image/jpeg")
    result = fetcher(server, spool_bytes=1024 * 1024).fetch(url, max_bytes=size)
    assert result.file.tell() == 0
    assert result.size == size
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert result.head == body[:8192]
    assert result.content_type == "image/jpeg"
    assert result.final_url == url
    assert result.redirects == 0
    assert result.elapsed > 0
    assert read_all(result) == body


def test_large_download_spools_to_disk(server: MediaServer) -> None:
    body = os.urandom(2 * 1024 * 1024)
    url = server.add("/big", body)
    result = fetcher(server, spool_bytes=256 * 1024).fetch(url, max_bytes=len(body))
    assert result.file._rolled  # type: ignore[attr-defined]
    assert read_all(result) == body


def test_zero_byte_body_is_returned(server: MediaServer) -> None:
    url = server.add("/empty", b"", content_type="image/png")
    result = fetcher(server).fetch(url, max_bytes=100)
    assert (result.size, result.head, result.sha256) == (0, b"", hashlib.sha256(b"").hexdigest())
    assert read_all(result) == b""


def test_chunked_body_without_content_length(server: MediaServer) -> None:
    body = os.urandom(200_000)
    url = server.add("/chunked", body, chunked=True)
    result = fetcher(server).fetch(url, max_bytes=len(body))
    assert read_all(result) == body


# ---------------------------------------------------------------------------
# Per-file cap and per-message budget


def test_honest_content_length_over_cap_fails_before_reading_the_body(server: MediaServer) -> None:
    # Reading this body would take 1000 s; failing fast proves it is not read.
    url = server.add("/huge", b"x" * 1000, drip=1)
    started = time.monotonic()
    with pytest.raises(TooLarge) as info:
        fetcher(server).fetch(url, max_bytes=999)
    assert info.value.reason == "too_large"
    assert not info.value.retryable
    assert time.monotonic() - started < 1.0
    assert server.count("/huge") == 1


@pytest.mark.parametrize(
    "options",
    [
        {"content_length": None},  # no Content-Length, body ends at close
        {"chunked": True},  # chunked, no Content-Length
        {"chunked": True, "content_length": 10},  # chunked with a lying Content-Length
    ],
    ids=["no-length", "chunked", "chunked-lying-length"],
)
def test_cap_is_enforced_while_streaming(server: MediaServer, options: dict[str, Any]) -> None:
    url = server.add("/big", os.urandom(500_000), **options)
    budget = ByteBudget(10_000_000)
    with pytest.raises(TooLarge) as info:
        fetcher(server).fetch(url, max_bytes=100_000, budget=budget)
    assert info.value.reason == "too_large"
    assert budget.used == 0  # what was taken is given back
    assert server.count("/big") == 1  # not retried


def test_short_lying_content_length_never_yields_more_than_declared(server: MediaServer) -> None:
    url = server.add("/liar", b"A" * 10 + b"B" * 100_000, content_length=10)
    result = fetcher(server).fetch(url, max_bytes=1000)
    assert read_all(result) == b"A" * 10


def test_body_shorter_than_content_length_is_a_retryable_failure(server: MediaServer) -> None:
    url = server.add("/short", b"x" * 10, content_length=1000)
    with pytest.raises(FetchError) as info:
        fetcher(server).fetch(url, max_bytes=10_000)
    assert info.value.reason == "fetch_failed"
    assert info.value.retryable
    assert server.count("/short") == 3


def test_body_exactly_at_the_cap_is_accepted(server: MediaServer) -> None:
    url = server.add("/exact", b"z" * 4096, content_length=None)
    assert fetcher(server).fetch(url, max_bytes=4096).size == 4096


def test_gzip_sent_anyway_is_decoded_and_capped_on_decoded_bytes(server: MediaServer) -> None:
    # A 20 MB run of zeros compresses to ~20 KB: the cap must see 20 MB.
    bomb = gzip.compress(b"\0" * 20_000_000)
    url = server.add("/bomb", bomb, headers=(("Content-Encoding", "gzip"),))
    with pytest.raises(TooLarge):
        fetcher(server).fetch(url, max_bytes=1_000_000)
    small = server.add(
        "/small", gzip.compress(b"hello" * 100), headers=(("Content-Encoding", "gzip"),)
    )
    assert read_all(fetcher(server).fetch(small, max_bytes=1000)) == b"hello" * 100
    assert server.requests[0].header("Accept-Encoding") == "identity"


@pytest.mark.parametrize("length", ["auto", None], ids=["content-length", "no-length"])
def test_message_budget_spans_files(server: MediaServer, length: Any) -> None:
    first = server.add("/one", b"1" * 1000, content_length=length)
    second = server.add("/two", b"2" * 1000, content_length=length)
    budget = ByteBudget(1500)
    media = fetcher(server)
    assert media.fetch(first, max_bytes=1000, budget=budget).size == 1000
    with pytest.raises(TooLarge) as info:
        media.fetch(second, max_bytes=1000, budget=budget)
    assert info.value.reason == "message_too_large"
    assert budget.used == 1000
    assert budget.remaining == 500


def test_budget_holds_under_concurrent_downloads(server: MediaServer) -> None:
    urls = [server.add(f"/m{i}", os.urandom(40_000), chunked=True) for i in range(6)]
    budget = ByteBudget(100_000)
    media = fetcher(server, chunk_size=4096)

    def one(url: str) -> int | str:
        try:
            return media.fetch(url, max_bytes=50_000, budget=budget).size
        except TooLarge as exc:
            return exc.reason

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(one, urls))
    sizes = [o for o in outcomes if isinstance(o, int)]
    assert sizes, outcomes
    assert set(outcomes) - set(sizes) <= {"message_too_large"}
    assert "message_too_large" in outcomes
    assert budget.used == sum(sizes) <= 100_000


def test_byte_budget_is_all_or_nothing() -> None:
    budget = ByteBudget(10)
    budget.take(6)
    with pytest.raises(TooLarge):
        budget.take(5)
    assert budget.used == 6
    budget.release(6)
    assert budget.used == 0


# ---------------------------------------------------------------------------
# Deadline, timeouts, resets


def test_server_dripping_one_byte_a_second_is_cut_at_the_deadline(server: MediaServer) -> None:
    url = server.add("/drip", b"x" * 60, drip=1)
    budget = ByteBudget(1000)
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetcher(server, deadline=1.5, read_timeout=5.0).fetch(url, max_bytes=1000, budget=budget)
    elapsed = time.monotonic() - started
    assert info.value.reason == "fetch_failed"
    assert info.value.retryable
    assert "deadline" in str(info.value)
    assert 1.4 <= elapsed < 2.5
    assert budget.used == 0
    assert server.count("/drip") == 1  # no retry once the deadline is spent


def test_deadlines_of_concurrent_downloads_share_one_watchdog(server: MediaServer) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    slow = [server.add(f"/slow/{i}", b"x" * 60, drip=1) for i in range(4)]
    f = fetcher(server, deadline=1.0, read_timeout=5.0)
    with ThreadPoolExecutor(4) as pool:
        started = time.monotonic()
        futures = [pool.submit(f.fetch, url, max_bytes=1000) for url in slow]
        time.sleep(0.4)  # four downloads in progress, each with a deadline
        assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
        assert [t.name for t in threading.enumerate()].count("fetch-deadlines") == 1
        for future in futures:
            with pytest.raises(FetchError) as info:
                future.result()
            assert "deadline" in str(info.value)
    assert time.monotonic() - started < 2.0  # all cut at about 1 s


def test_slow_first_byte_is_cut_at_the_deadline(server: MediaServer) -> None:
    url = server.add("/late", b"x", latency=10)
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetcher(server, deadline=1.0, read_timeout=5.0).fetch(url, max_bytes=10)
    assert info.value.retryable
    assert time.monotonic() - started < 2.0


def test_headers_dripped_slowly_are_cut_at_the_deadline(server: MediaServer) -> None:
    # Each byte arrives well within the read timeout; only the deadline stops it.
    url = server.add("/slowloris", b"x", header_drip=4)
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetcher(server, deadline=1.5, read_timeout=5.0).fetch(url, max_bytes=10)
    assert info.value.retryable
    assert "deadline" in str(info.value)
    assert 1.4 <= time.monotonic() - started < 2.5


def test_retries_stop_at_the_deadline(server: MediaServer) -> None:
    url = server.add("/busy", b"", status=503)
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetcher(server, attempts=20, backoff=0.2, deadline=1.0).fetch(url, max_bytes=10)
    assert info.value.retryable
    assert 2 <= server.count("/busy") < 20
    assert time.monotonic() - started < 1.2


def test_read_timeout_is_retried_then_reported(server: MediaServer) -> None:
    url = server.add("/stall", b"x", latency=10)
    with pytest.raises(FetchError) as info:
        fetcher(server, read_timeout=0.3, deadline=5.0).fetch(url, max_bytes=10)
    assert info.value.retryable
    assert "timed out" in str(info.value)
    assert server.count("/stall") == 3


def test_connection_reset_mid_body(server: MediaServer) -> None:
    url = server.add("/reset", os.urandom(200_000), reset_after=50_000)
    budget = ByteBudget(1_000_000)
    with pytest.raises(FetchError) as info:
        fetcher(server).fetch(url, max_bytes=1_000_000, budget=budget)
    assert info.value.reason == "fetch_failed"
    assert info.value.retryable
    assert budget.used == 0
    assert server.count("/reset") == 3  # each attempt started over


def test_reset_once_then_complete(server: MediaServer) -> None:
    body = os.urandom(100_000)
    url = server.add_replies("/flaky", Reply(body=body, reset_after=1000), Reply(body=body))
    result = fetcher(server).fetch(url, max_bytes=len(body))
    assert read_all(result) == body
    assert server.count("/flaky") == 2


def test_connection_refused_is_retryable() -> None:
    with MediaServer() as gone:
        entry = gone.host_port
        url = gone.url("/x")
    media = Fetcher(FetchConfig(allowed_hosts=(entry,), backoff=0.01, connect_timeout=1))
    with pytest.raises(FetchError) as info:
        media.fetch(url, max_bytes=10)
    assert info.value.retryable
    assert "connection failed" in str(info.value)


def test_slow_dns_is_bounded_by_the_connect_timeout(server: MediaServer) -> None:
    def slow(host: str, port: int) -> list[str]:
        time.sleep(3)
        return ["127.0.0.1"]

    media = Fetcher(
        config(allowed_hosts=(f"media.test:{server.port}",), connect_timeout=0.3, attempts=1),
        resolver=slow,
    )
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        media.fetch(server.url("/x", host="media.test"), max_bytes=10)
    assert info.value.retryable
    assert time.monotonic() - started < 1.0


def test_unknown_host_is_a_retryable_fetch_failure(server: MediaServer) -> None:
    media = Fetcher(config(allowed_hosts=("nowhere.test",), attempts=1), resolver=FakeDNS({}))
    with pytest.raises(FetchError) as info:
        media.fetch("http://nowhere.test/x", max_bytes=10)
    assert info.value.reason == "fetch_failed"
    assert info.value.retryable


# ---------------------------------------------------------------------------
# HTTP statuses


def test_401_body_is_never_returned_as_media(server: MediaServer) -> None:
    page = b"<html><body>401 Unauthorized</body></html>"
    url = server.add("/m.jpg", page, status=401, content_type="text/html")
    with pytest.raises(FetchError) as info:
        fetcher(server).fetch(url, max_bytes=10_000)
    assert info.value.reason == "fetch_failed"
    assert not info.value.retryable
    assert "401" in str(info.value)
    assert server.count("/m.jpg") == 1


@pytest.mark.parametrize(("status", "retryable"), [(403, False), (400, False), (410, False)])
def test_client_errors_are_final(server: MediaServer, status: int, retryable: bool) -> None:
    url = server.add("/x", b"nope", status=status, content_type="text/plain")
    with pytest.raises(FetchError) as info:
        fetcher(server).fetch(url, max_bytes=100)
    assert info.value.retryable is retryable
    assert server.count("/x") == 1


@pytest.mark.parametrize("status", [500, 502, 503, 404, 429])
def test_server_errors_and_404_are_retried_then_left_retryable(
    server: MediaServer, status: int
) -> None:
    url = server.add("/x", b"<html>busy</html>", status=status, content_type="text/html")
    with pytest.raises(FetchError) as info:
        fetcher(server).fetch(url, max_bytes=100)
    assert info.value.retryable
    assert str(status) in str(info.value)
    assert server.count("/x") == 3


@pytest.mark.parametrize("status", [503, 404])
def test_failure_then_success_is_retried(server: MediaServer, status: int) -> None:
    body = os.urandom(5000)
    url = server.add_replies(
        "/soon",
        Reply(body=b"<html>not yet</html>", status=status, content_type="text/html"),
        Reply(body=body, content_type="image/gif"),
    )
    result = fetcher(server).fetch(url, max_bytes=10_000)
    assert read_all(result) == body
    assert result.content_type == "image/gif"
    assert server.count("/soon") == 2


def test_retry_after_beyond_the_deadline_gives_up_at_once(server: MediaServer) -> None:
    url = server.add("/x", b"", status=503, headers=(("Retry-After", "60"),))
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetcher(server).fetch(url, max_bytes=100)
    assert info.value.retryable
    assert server.count("/x") == 1
    assert time.monotonic() - started < 1.0


def test_206_is_not_media(server: MediaServer) -> None:
    url = server.add("/part", b"abc", status=206)
    with pytest.raises(FetchError):
        fetcher(server).fetch(url, max_bytes=100)


# ---------------------------------------------------------------------------
# Redirects


def test_redirects_are_followed(server: MediaServer) -> None:
    body = os.urandom(1000)
    final = server.add("/final", body, content_type="image/png")
    server.redirect("/start", "/hop")
    server.redirect("/hop", final, status=307)
    result = fetcher(server).fetch(server.url("/start"), max_bytes=1000)
    assert read_all(result) == body
    assert (result.redirects, result.final_url) == (2, final)


def test_redirect_loop_is_caught(server: MediaServer) -> None:
    server.redirect("/a", "/b")
    server.redirect("/b", "/a")
    with pytest.raises(FetchError) as info:
        fetcher(server).fetch(server.url("/a"), max_bytes=100)
    assert "loop" in str(info.value)
    assert not info.value.retryable
    assert server.count() == 2


def test_self_redirect_is_a_loop(server: MediaServer) -> None:
    server.redirect("/me", "/me")
    with pytest.raises(FetchError, match="loop"):
        fetcher(server).fetch(server.url("/me"), max_bytes=100)


@pytest.mark.parametrize(("hops", "ok"), [(5, True), (6, False)])
def test_at_most_five_redirects(server: MediaServer, hops: int, ok: bool) -> None:
    server.add("/end", b"done")
    for i in range(hops):
        server.redirect(f"/r{i}", f"/r{i + 1}" if i + 1 < hops else "/end")
    media = fetcher(server)
    if ok:
        assert media.fetch(server.url("/r0"), max_bytes=10).redirects == 5
    else:
        with pytest.raises(FetchError, match="more than 5") as info:
            media.fetch(server.url("/r0"), max_bytes=10)
        assert not info.value.retryable
        assert server.count("/end") == 0


def test_redirect_without_location_fails(server: MediaServer) -> None:
    url = server.add("/r", b"", status=302)
    with pytest.raises(FetchError, match="without a Location"):
        fetcher(server).fetch(url, max_bytes=10)


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


# ---------------------------------------------------------------------------
# Pinning: the connection goes to the address that was checked


def test_connection_goes_to_the_checked_address_with_the_original_host(
    server: MediaServer,
) -> None:
    url = server.add("/x", b"pinned")
    dns = FakeDNS({"media.test": ["127.0.0.1"]})
    media = Fetcher(config(allowed_hosts=(f"media.test:{server.port}",)), resolver=dns)
    result = media.fetch(server.url("/x", host="media.test"), max_bytes=100)
    assert read_all(result) == b"pinned"
    assert result.final_url == server.url("/x", host="media.test")
    assert dns.calls == [("media.test", server.port)]  # resolved once, by us
    assert server.requests[0].header("Host") == f"media.test:{server.port}"
    assert url  # the same route, reached by name


def test_dns_rebinding_cannot_move_the_connection(
    server: MediaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name resolves to a public address when checked and to 127.0.0.1 after.

    Connections are observed at urllib3's socket factory (and refused there,
    so nothing leaves the machine): every one goes to the checked public
    address, none to the rebound one, and urllib3 never sees the name.
    """
    server.add("/x", b"internal secret")
    answers = iter([["93.184.216.34"]] + [["127.0.0.1"]] * 10)
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    connects: list[tuple[str, int]] = []

    def record(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        connects.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", record)
    media = Fetcher(config(allowed_hosts=("rebind.test",), attempts=1), resolver=rebinding)
    with pytest.raises(FetchError):
        media.fetch(f"http://rebind.test:{server.port}/x", max_bytes=100)
    assert lookups == ["rebind.test"]
    assert connects == [("93.184.216.34", server.port)]
    assert server.count() == 0


def test_next_checked_address_is_tried_when_one_is_unreachable(server: MediaServer) -> None:
    # Nothing listens on [::1] at this port (or IPv6 is missing): the first
    # address refuses, the second one serves.
    dns = FakeDNS({"media.test": ["::1", "127.0.0.1"]})
    server.add("/x", b"second address")
    media = Fetcher(config(allowed_hosts=(f"media.test:{server.port}",)), resolver=dns)
    result = media.fetch(server.url("/x", host="media.test"), max_bytes=100)
    assert read_all(result) == b"second address"
    assert len(dns.calls) == 1


def test_https_is_pinned_with_the_name_used_for_sni_and_certificate(
    tmp_path: Any,
) -> None:
    tls = make_tls(tmp_path, ["media.test"])
    with MediaServer(tls=tls) as secure:
        body = os.urandom(20_000)
        secure.add("/x", body, content_type="image/jpeg")
        dns = FakeDNS({"media.test": ["127.0.0.1"], "wrong.test": ["127.0.0.1"]})
        media = Fetcher(
            config(
                allowed_hosts=(f"media.test:{secure.port}", f"wrong.test:{secure.port}"),
                ca_bundle=tls.ca_file,
            ),
            resolver=dns,
        )
        result = media.fetch(secure.url("/x", host="media.test"), max_bytes=len(body))
        assert read_all(result) == body
        assert "media.test" in secure.sni_names
        assert secure.requests[0].header("Host") == f"media.test:{secure.port}"

        # Same address, but the certificate is not valid for this name.
        with pytest.raises(FetchError) as info:
            media.fetch(secure.url("/x", host="wrong.test"), max_bytes=len(body))
        assert not info.value.retryable
        assert "certificate" in str(info.value)
        assert secure.count() == 1


# ---------------------------------------------------------------------------
# Twilio credentials


@pytest.fixture
def twilio(server: MediaServer) -> Fetcher:
    """A fetcher whose api_base is the local server, with credentials."""
    return fetcher(
        server,
        api_base=server.base_url,
        credentials=CREDENTIALS,
        account_sid=ACCOUNT,
    )


def test_basic_auth_is_sent_to_the_accounts_media_path(
    server: MediaServer, twilio: Fetcher
) -> None:
    url = server.add(MEDIA_PATH, b"jpeg bytes", content_type="image/jpeg")
    assert read_all(twilio.fetch(url, max_bytes=100)) == b"jpeg bytes"
    assert server.requests[0].header("Authorization") == BASIC


@pytest.mark.parametrize(
    "path",
    [
        MEDIA_PATH.replace(ACCOUNT, OTHER_ACCOUNT),  # another account's media
        f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json",  # not a media path
        f"/2010-04-01/Accounts/{ACCOUNT}/Messages/MM1/Media/ME1/../../x",
        "/anything/else",
    ],
)
def test_basic_auth_is_not_sent_to_other_paths_of_the_same_host(
    server: MediaServer, twilio: Fetcher, path: str
) -> None:
    # Dot segments are removed before sending, so serve the normalized path.
    server.add(posixpath.normpath(path), b"data")
    twilio.fetch(server.url(path), max_bytes=100)
    assert server.requests[0].header("Authorization") is None


def test_basic_auth_is_not_forwarded_across_a_redirect_to_another_host(
    server: MediaServer, other: MediaServer
) -> None:
    cdn = other.add("/media/abc?X-Amz-Signature=presigned", b"cdn bytes", content_type="image/png")
    server.redirect(MEDIA_PATH, cdn, status=307)
    media = fetcher(
        server,
        other,
        api_base=server.base_url,
        credentials=CREDENTIALS,
        account_sid=ACCOUNT,
    )
    result = media.fetch(server.url(MEDIA_PATH), max_bytes=100)
    assert read_all(result) == b"cdn bytes"
    assert result.redirects == 1
    assert server.requests[0].header("Authorization") == BASIC
    assert other.requests[0].header("Authorization") is None


def test_basic_auth_is_not_sent_again_after_leaving_the_api_origin(
    server: MediaServer, other: MediaServer
) -> None:
    # api -> other host -> back to an api media path: the way back gets nothing.
    second = MEDIA_PATH.replace("ME" + "b" * 32, "ME" + "d" * 32)
    server.add(second, b"back home")
    other.redirect("/bounce", server.url(second))
    server.redirect(MEDIA_PATH, other.url("/bounce"))
    media = fetcher(
        server, other, api_base=server.base_url, credentials=CREDENTIALS, account_sid=ACCOUNT
    )
    assert read_all(media.fetch(server.url(MEDIA_PATH), max_bytes=100)) == b"back home"
    auth = [r.header("Authorization") for r in server.requests]
    assert auth == [BASIC, None]
    assert other.requests[0].header("Authorization") is None


def test_basic_auth_needs_the_exact_api_origin(server: MediaServer) -> None:
    # Same host, different scheme in api_base: not the same origin.
    server.add(MEDIA_PATH, b"data")
    media = fetcher(
        server,
        api_base=f"https://{server.host_port}",
        credentials=CREDENTIALS,
        account_sid=ACCOUNT,
    )
    media.fetch(server.url(MEDIA_PATH), max_bytes=100)
    assert server.requests[0].header("Authorization") is None


def test_credentials_without_account_sid_are_never_sent(server: MediaServer) -> None:
    url = server.add(MEDIA_PATH, b"data")
    media = fetcher(server, api_base=server.base_url, credentials=CREDENTIALS)
    media.fetch(url, max_bytes=100)
    assert server.requests[0].header("Authorization") is None


def test_401_with_and_without_credentials_explains_and_never_leaks(
    server: MediaServer, other: MediaServer
) -> None:
    url = server.add(MEDIA_PATH, b"<html>401</html>", status=401, content_type="text/html")
    media = fetcher(server, api_base=server.base_url, credentials=CREDENTIALS, account_sid=ACCOUNT)
    with pytest.raises(FetchError) as sent:
        media.fetch(url, max_bytes=100)
    assert "refused the credentials" in str(sent.value)
    assert CREDENTIALS[1] not in str(sent.value)
    assert CREDENTIALS[1] not in repr(media.config)

    bare = fetcher(server, api_base=server.base_url)
    with pytest.raises(FetchError) as unsent:
        bare.fetch(url, max_bytes=100)
    assert "no credentials were sent" in str(unsent.value)


def test_error_messages_leave_out_presigned_queries(server: MediaServer) -> None:
    url = server.add("/obj", b"", status=403)
    with pytest.raises(FetchError) as info:
        fetcher(server).fetch(url + "?X-Amz-Signature=s3cr3t", max_bytes=10)
    assert "s3cr3t" not in str(info.value)
    assert "/obj" in str(info.value)


# ---------------------------------------------------------------------------
# Outbound pre-flight and HEAD


def test_head_and_get_agree(server: MediaServer) -> None:
    body = os.urandom(3000)
    url = server.add("/promo.gif", body, content_type="image/gif")
    media = fetcher(server, require_allowlisted=False)
    check = media.head_and_get(url, max_bytes=5 * 1024 * 1024)
    assert check.head.status == 200
    assert check.head.content_type == "image/gif"
    assert check.head.content_length == 3000
    assert check.problems == ()
    assert read_all(check.result) == body
    assert [r.method for r in server.requests] == ["HEAD", "GET"]
    assert all(r.header("Authorization") is None for r in server.requests)


def test_preflight_reports_disagreements(server: MediaServer) -> None:
    url = server.add_replies(
        "/liar",
        Reply(body=b"x" * 10, content_type="image/png"),  # HEAD
        Reply(body=b"<html></html>", content_type="text/html"),  # GET
    )
    check = fetcher(server).head_and_get(url, max_bytes=1000)
    problems = " | ".join(check.problems)
    assert "image/png" in problems and "text/html" in problems
    assert "10 bytes" in problems
    check.result.close()


def test_head_reports_statuses_and_follows_redirects(server: MediaServer) -> None:
    server.add("/gone", b"", status=404, content_type="text/plain")
    server.redirect("/old", "/gone")
    head = fetcher(server).head(server.url("/old"))
    assert (head.status, head.ok, head.redirects) == (404, False, 1)


def test_head_obeys_the_same_host_rules(server: MediaServer) -> None:
    server.redirect("/go", "http://169.254.169.254/latest/")
    with pytest.raises(BlockedHost):
        fetcher(server).head(server.url("/go"))


# ---------------------------------------------------------------------------
# Configuration and per-thread requests.Session objects


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"allowed_hosts": ("bad host",)}, "allowed_hosts"),
        ({"allowed_hosts": ("http://x.test/",)}, "allowed_hosts"),
        ({"allowed_hosts": ("x.test:99999",)}, "allowed_hosts"),
        ({"allowed_hosts": ()}, "allowed_hosts"),
        ({"api_base": "ftp://api.twilio.com"}, "api_base"),
        ({"credentials": ("SK1", "")}, "credentials"),
        ({"account_sid": "AC/../x"}, "account_sid"),
        ({"deadline": 0}, "deadline"),
        ({"attempts": 0}, "attempts"),
        ({"max_redirects": -1}, "max_redirects"),
    ],
)
def test_config_names_the_bad_field(changes: dict[str, Any], field: str) -> None:
    base = FetchConfig(allowed_hosts=("api.twilio.com",))
    with pytest.raises(ConfigError, match=field):
        replace(base, **changes)


def test_config_accepts_host_port_and_ipv6_entries() -> None:
    cfg = FetchConfig(allowed_hosts=["api.twilio.com", "127.0.0.1:8123", "[::1]:9000", "::1"])  # type: ignore[arg-type]
    assert cfg.allowed_hosts == ("api.twilio.com", "127.0.0.1:8123", "[::1]:9000", "::1")


def test_one_session_per_thread(server: MediaServer) -> None:
    media = fetcher(server)
    sessions: list[Any] = []
    lock = threading.Lock()

    def grab() -> None:
        first, again = media._session(), media._session()
        assert first is again
        with lock:
            sessions.append(first)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in sessions}) == 4
    media.close()


def test_keep_alive_connections_are_reused(server: MediaServer) -> None:
    url = server.add("/x", b"data")
    media = fetcher(server)
    for _ in range(3):
        media.fetch(url, max_bytes=10).close()
    clients = {r.client for r in server.requests}
    assert len(clients) == 1


def test_from_settings_builds_inbound_and_outbound_configs(tmp_path: Any) -> None:
    from receiver.settings import Settings

    settings = Settings(
        storage_url=f"file://{tmp_path}",
        database_url=f"sqlite:///{tmp_path}/x.db",
        account_sid=ACCOUNT,
        api_key=CREDENTIALS[0],
        api_secret=CREDENTIALS[1],
        media_hosts=("api.twilio.com", "127.0.0.1:9999"),
    )
    inbound = FetchConfig.from_settings(settings)
    assert inbound.credentials == CREDENTIALS
    assert inbound.account_sid == ACCOUNT
    assert inbound.allowed_hosts == ("api.twilio.com", "127.0.0.1:9999")
    outbound = FetchConfig.from_settings(settings, outbound=True)
    assert outbound.credentials is None
    assert outbound.require_allowlisted is False
