"""One deadline per download: the watchdog cuts servers that trickle bytes.

Real servers on loopback drip bytes slowly; only the deadline can stop them.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from receiver.errors import FetchError
from receiver.media.deadline import deadline_scope
from receiver.media.fetch import ByteBudget
from tests.support.fetching import fetcher
from tests.support.mediaserver import MediaServer

# ---------------------------------------------------------------------------
# A deadline covers headers and body, and one thread watches them all


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


def test_scopes_nest_and_each_finishes_on_leaving() -> None:
    with deadline_scope(30.0) as outer:
        with deadline_scope(0.05) as inner:
            time.sleep(0.1)
            assert inner.expired
            assert inner.remaining() < 0
        assert inner.finished
        assert not outer.expired and not outer.finished
        assert outer.elapsed() >= 0.1
    assert outer.finished
