"""Address pinning: each host is resolved once, and the request goes to the checked address.

Where a host *name* must resolve to a given address, the fetcher gets a fake
resolver (its own hook), never a mock of the HTTP client.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
import urllib3.util.connection

from receiver.errors import FetchError
from receiver.media.fetch import Fetcher
from receiver.media.pinning import tls_name
from tests.support.fetching import FakeDNS, config, fetcher, read_all
from tests.support.mediaserver import MediaServer, make_tls

# ---------------------------------------------------------------------------
# Resolving: once per hop, bounded in time


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
# The connection goes to the address that was checked


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


def test_keep_alive_connections_are_reused(server: MediaServer) -> None:
    url = server.add("/x", b"data")
    media = fetcher(server)
    for _ in range(3):
        media.fetch(url, max_bytes=10).close()
    clients = {r.client for r in server.requests}
    assert len(clients) == 1


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("media.test", "media.test"),
        ("media.test:8443", "media.test"),
        (b"media.test:8443", "media.test"),
        ("127.0.0.1:8080", None),
        ("[::1]:443", None),
        ("", None),
        (None, None),
    ],
)
def test_tls_name_is_the_host_name_and_never_an_address(
    header: str | bytes | None, name: str | None
) -> None:
    # An IP address gets no SNI; a name is what the certificate must match.
    assert tls_name(header) == name
