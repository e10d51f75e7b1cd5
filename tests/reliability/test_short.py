"""The reliability suite's short mode, as a test: nothing lost, nothing crashes, no forgery passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import fuzz
from tests.reliability.suite import run
from tests.support.postgres import pg_available
from tests.support.s3server import start_moto_server
from tests.support.services import require


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_short_mode_meets_every_target(tmp_path: Path) -> None:
    require(pg_available(), "PostgreSQL is not running on 127.0.0.1:5432")
    start_moto_server().stop()  # skips (fails under CI=true) when moto cannot run
    report = run("short", tmp_path)
    print(report.table())
    rows = {(r.area, r.check): r for r in report.rows}
    failed = [f"{r.area}: {r.check}: {r.figure}" for r in report.rows if not r.ok]
    assert not failed, "\n".join([*failed, *report.notes])
    assert rows[("load", "messages lost")].figure.startswith("0 of ")
    assert rows[("load", "5xx answers")].figure == "0"
    assert rows[("load", "files downloaded more than once")].figure == "0"
    assert rows[("load", "Conversations messages lost or not stored once")].figure.startswith(
        "0 lost, 0 without"
    )
    assert rows[("faults", "messages lost")].figure.startswith("0 of ")
    assert rows[("faults", "files lost")].figure.startswith("0 of ")
    assert rows[("faults", "partial or unexpected objects")].figure == "0"
    fuzz_rows = [
        r for r in report.rows if r.check.startswith("fuzz ") and r.check != "fuzz inputs in all"
    ]
    assert len(fuzz_rows) == len(fuzz.TARGETS) == 5 and all(
        ", 0 crashes" in r.figure for r in fuzz_rows
    )
    assert rows[("security", "forged or mutated signatures accepted")].figure.startswith("0 of ")
    assert rows[("security", "forged signatures over HTTP accepted")].figure.startswith("0 of ")
    assert rows[
        ("security", "SSRF targets fetched (direct, DNS-resolved, redirects)")
    ].figure.startswith("0 of ")
    assert rows[("security", "UI/API routes answering anonymous requests")].figure.startswith(
        "0 of "
    )
    for check in (
        "logout replay: old cookie on /messages and /api/messages",
        "sessions revoke --all: cookies of 8 browsers over 4 workers",
        "idle (30 min) and absolute (12 h) expiry, clock injected",
        "100 wrong passwords from 4 addresses over 4 workers: checked per address",
        "200 slow-body + 200 slow-header connections beside 8 signed senders",
        "hostile JSON and form bodies on webhook routes answering 5xx",
        "data-directory entries readable by group or others (after serve, worker, purge)",
    ):
        assert rows[("security", check)].ok, rows[("security", check)].figure
    assert rows[("events", "events lost")].figure.startswith("0 of ")
    assert rows[("events", "duplicates after deduplication by webhook-id")].figure.startswith("0 ")
    assert rows[("events", "events delivered to a removed endpoint")].figure == "0"
