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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from receiver.errors import BlockedHost, ConfigError, FetchError, TooLarge
from receiver.media.fetch import ByteBudget, FetchConfig, Fetcher
from tests.support.fetching import fetcher, read_all
from tests.support.mediaserver import MediaServer, Reply

ACCOUNT = "AC" + "0" * 32
OTHER_ACCOUNT = "AC" + "1" * 32
MEDIA_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages/MM{'a' * 32}/Media/ME{'b' * 32}"
CREDENTIALS = ("SK" + "c" * 32, "top-secret-api-key-value")
BASIC = "Basic " + base64.b64encode(f"{CREDENTIALS[0]}:{CREDENTIALS[1]}".encode()).decode()


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


# ---------------------------------------------------------------------------
# First URL: allowlist, scheme, userinfo


# ---------------------------------------------------------------------------
# Pinning: the connection goes to the address that was checked


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


def test_the_two_builders_make_the_inbound_and_outbound_configs(tmp_path: Any) -> None:
    from receiver.settings import Settings

    settings = Settings(
        storage_url=f"file://{tmp_path}",
        database_url=f"sqlite:///{tmp_path}/x.db",
        account_sid=ACCOUNT,
        api_key=CREDENTIALS[0],
        api_secret=CREDENTIALS[1],
        media_hosts=("api.twilio.com", "127.0.0.1:9999"),
        api_base="https://api.twilio.test",
        fetch_deadline=12.0,
    )
    inbound = FetchConfig.inbound(settings)
    assert inbound.credentials == CREDENTIALS
    assert inbound.account_sid == ACCOUNT
    assert inbound.allowed_hosts == ("api.twilio.com", "127.0.0.1:9999")
    assert inbound.require_allowlisted is True
    assert (inbound.api_base, inbound.deadline) == ("https://api.twilio.test", 12.0)

    outbound = FetchConfig.outbound(settings)
    assert (outbound.credentials, outbound.account_sid) == (None, None)
    assert outbound.require_allowlisted is False
    # Listed host:port entries stay reachable (local media hosts, tests).
    assert outbound.allowed_hosts == ("api.twilio.com", "127.0.0.1:9999")
    assert (outbound.attempts, outbound.backoff) == (2, 0.25)
    assert outbound.api_base == "https://api.twilio.test"


def test_allowing_adds_hosts_to_a_copy_and_validates_them() -> None:
    base = FetchConfig(allowed_hosts=("api.twilio.com",), require_allowlisted=False)
    wider = base.allowing("127.0.0.1:8000", "[::1]:9000")
    assert wider.allowed_hosts == ("api.twilio.com", "127.0.0.1:8000", "[::1]:9000")
    assert base.allowed_hosts == ("api.twilio.com",)
    assert wider.require_allowlisted is False
    with pytest.raises(ConfigError, match="allowed_hosts"):
        base.allowing("not a host")


def test_a_retry_after_date_is_left_to_the_fetchers_own_backoff(server: MediaServer) -> None:
    # A date far ahead would make the fetcher give up at once if it were honoured
    # (see test_retry_after_beyond_the_deadline_gives_up_at_once).
    url = server.add(
        "/x", b"", status=503, headers=(("Retry-After", "Fri, 01 Jan 2100 00:00:00 GMT"),)
    )
    with pytest.raises(FetchError) as info:
        fetcher(server).fetch(url, max_bytes=100)
    assert info.value.retryable
    assert server.count("/x") == 3
