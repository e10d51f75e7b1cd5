"""The reliability suite: load, faults, bad input and security, with a table of figures.

    python -m tests.reliability.suite --mode short    # CI (a few minutes)
    python -m tests.reliability.suite --mode full     # operators (about half an hour)

Needs PostgreSQL on 127.0.0.1:5432 (TEST_PG_HOST/PORT/USER) for the load run,
moto (`pip install 'moto[server]'`), and, to restart a database mid-run, the
PostgreSQL server binaries (a private instance is started in a temp dir).
atheris, when installed, adds coverage-guided fuzzing to hypothesis.
Exit status 0 when every row meets its target.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from receiver.lifecycle import count_messages
from tests.reliability import events as events_area
from tests.reliability import fuzz, security
from tests.reliability.cluster import (
    ACCOUNT_SID,
    TOKEN,
    Cluster,
    PrivatePostgres,
    TcpProxy,
    conversation_losses,
    deliver,
    deliver_conversations,
    pg_bin,
    plan_messages,
    s3_outage,
    verify,
    wait_drained,
)
from tests.support.fake_mcs import FakeMcs
from tests.support.mediaserver import MediaServer
from tests.support.postgres import fresh_database
from tests.support.s3server import MotoS3Server


@dataclass(frozen=True)
class Mode:
    """How much of everything one run does."""

    load_messages: int
    load_duplicate_every: int
    fault_messages: int
    s3_outage: float
    fuzz_hypothesis: int
    fuzz_atheris: int
    forgeries: int
    http_forgeries: int
    drain_timeout: float
    hostile_bodies: int = 10_000
    #: Group MMS messages (onMessageAdded with one MCS file each) in the load area.
    load_conversations: int = 80
    event_messages: int = 200
    event_outage: float = 180.0


MODES = {
    # 200 messages + 50 duplicate deliveries; 5 s storage outage; ~10,000 fuzz inputs.
    # Events: 60 messages while the receiver is down for 5 s.
    "short": Mode(
        200,
        4,
        60,
        5.0,
        300,
        2_200,
        2_000,
        50,
        120.0,
        hostile_bodies=2_000,
        event_messages=60,
        event_outage=5.0,
    ),
    # 1,600 messages + 400 duplicates = 2,000 webhooks; 30 s outage; >100,000 fuzz inputs;
    # events: 200 messages while the receiver is down for 3 minutes.
    "full": Mode(1_600, 4, 400, 30.0, 2_500, 25_000, 10_000, 500, 420.0, load_conversations=400),
}


@dataclass
class Row:
    """One line of the figures table."""

    area: str
    check: str
    figure: str
    target: str
    ok: bool


@dataclass
class Report:
    """Every row, plus what ran where."""

    mode: str
    rows: list[Row] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    notes: list[str] = field(default_factory=list)

    def add(self, area: str, check: str, figure: Any, target: str, ok: bool) -> None:
        self.rows.append(Row(area, check, str(figure), target, bool(ok)))
        print(
            f"  [{'ok' if ok else 'FAIL'}] {area}: {check}: {figure} (target {target})", flush=True
        )

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)

    def table(self) -> str:
        lines = ["| area | check | figure | target | result |", "| --- | --- | --- | --- | --- |"]
        for r in self.rows:
            lines.append(
                f"| {r.area} | {r.check} | {r.figure} | {r.target} | {'pass' if r.ok else 'FAIL'} |"
            )
        return "\n".join(lines)

    def header(self) -> str:
        mem = ""
        with contextlib.suppress(OSError, ValueError):
            kib = int(Path("/proc/meminfo").read_text().split()[1])
            mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
        elapsed = time.monotonic() - self.started
        return (
            f"mode {self.mode}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
            f"{os.cpu_count()} cores{mem}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.machine()}, {elapsed:.0f} s"
        )


# -- load ------------------------------------------------------------------------------------


def run_load(report: Report, mode: Mode, work: Path, moto: MotoS3Server) -> None:
    """Signed webhooks with media at 16-way concurrency on 2 serve + 2 worker processes."""
    print("load:", flush=True)
    with (
        fresh_database(prefix="mmsr_rel_") as db,
        MediaServer() as media,
        FakeMcs(ACCOUNT_SID, TOKEN) as mcs,
    ):
        bucket = moto.new_bucket("load")
        cluster = Cluster(
            work / "load",
            database_url=db,
            storage_url=f"s3://{bucket}/receiver",
            s3_env=moto.env(),
            media=media,
            extra_env={
                "TWILIO_MCS_BASE": mcs.url,
                "TWILIO_CONVERSATIONS_BASE": mcs.url,
                "RECEIVER_MEDIA_HOSTS": f"{media.host_port},{mcs.host_port}",
            },
        )
        planned = plan_messages(
            media, mode.load_messages, duplicate_every=mode.load_duplicate_every, min_media=1
        )
        cluster.start()
        try:
            load = deliver(cluster.urls, planned, concurrency=16)
            index = cluster.index()
            drained = wait_drained(index, mode.drain_timeout)
            result = verify(index, planned, media, moto.client(), bucket, "receiver/")
            group = deliver_conversations(cluster.urls, mcs, mode.load_conversations)
            group_drained = wait_drained(index, mode.drain_timeout)
            group_missing, group_wrong, group_stored = conversation_losses(index, group.sids)
            before = count_messages(index)
            http = security.check_forgeries_over_http(cluster.urls[0], TOKEN, mode.http_forgeries)
            recorded = count_messages(index) - before
            index.close()
        finally:
            cluster.stop()
    explain(report, "load", result)
    webhooks = load.deliveries
    rate = webhooks / load.seconds if load.seconds else 0.0
    report.add(
        "load",
        "signed webhooks with media delivered (16-way, 2 serve + 2 worker)",
        f"{webhooks} in {load.seconds:.0f} s ({rate:.0f}/s), media drained {drained:.0f} s later",
        f"{len(planned) + sum(p.duplicate for p in planned)}",
        webhooks == len(planned) + sum(p.duplicate for p in planned) and not load.undelivered,
    )
    report.add("load", "5xx answers", load.server_errors, "0", load.server_errors == 0)
    report.add(
        "load",
        "messages lost",
        f"{len(result.messages_lost)} of {len(planned)}",
        "0",
        not result.messages_lost,
    )
    report.add(
        "load",
        "files lost or corrupt",
        f"{result.files_lost} of {result.items_planned}",
        "0",
        result.files_lost == 0,
    )
    report.add(
        "load",
        "duplicate deliveries stored once",
        f"{sum(p.duplicate for p in planned)} duplicates -> {result.messages_found} "
        f"messages, {result.objects_found} objects, {len(result.objects_unexpected)} extra",
        "one message and one object set each",
        result.messages_found == len(planned)
        and not result.objects_unexpected
        and result.items_stored == result.items_planned,
    )
    report.add(
        "load",
        "files downloaded more than once",
        result.processed_twice,
        "0",
        result.processed_twice == 0,
    )
    group_expected = len(group.sids) + group.duplicates
    report.add(
        "load",
        "Conversations webhooks with MCS media (16-way, RetryCount=1 duplicates)",
        f"{group.deliveries} in {group.seconds:.0f} s, slowest answer {group.slowest:.2f} s, "
        f"media drained {group_drained:.0f} s later",
        f"{group_expected}, each answered within 5 s",
        group.deliveries == group_expected and not group.undelivered and group.slowest < 5.0,
    )
    report.add(
        "load",
        "Conversations messages lost or not stored once",
        f"{group_missing} lost, {group_wrong} without exactly one stored file "
        f"({group_stored} files) of {len(group.sids)}; "
        f"{sum(n for c, n in group.statuses.items() if c >= 500)} 5xx",
        "0",
        group_missing == 0 and group_wrong == 0 and not any(c >= 500 for c in group.statuses),
    )
    report.add(
        "security",
        "forged signatures over HTTP accepted",
        f"{http.accepted} of {http.attempts}",
        "0",
        http.accepted == 0 and recorded == 0,
    )


def explain(report: Report, area: str, result: Any) -> None:
    """Say what went wrong, when something did (for the notes under the table)."""
    if result.items_not_stored:
        report.notes.append(f"{area}: items not stored, by state:reason: {result.items_not_stored}")
    for label, keys in (
        ("missing objects", result.objects_missing),
        ("corrupt objects", result.objects_corrupt),
        ("unexpected objects", result.objects_unexpected),
        ("lost items", result.items_lost),
    ):
        if keys:
            report.notes.append(f"{area}: {len(keys)} {label}, e.g. {keys[:3]}")


# -- faults ------------------------------------------------------------------------------------


@contextlib.contextmanager
def database_for_faults(report: Report) -> Iterator[tuple[str, PrivatePostgres | None]]:
    """A private PostgreSQL (restartable) when the server binaries exist, else a shared one."""
    if pg_bin() is None:
        report.notes.append("PostgreSQL server binaries not found: no database restart")
        with fresh_database(prefix="mmsr_rel_") as db:
            yield db, None
        return
    server = PrivatePostgres()
    try:
        server.start()
        yield server.url, server
    finally:
        server.close()


def in_background(fn: Callable[[], None]) -> threading.Thread:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def run_faults(report: Report, mode: Mode, work: Path) -> None:
    """Media host faults throughout; S3 down, PostgreSQL restarted, serve and worker SIGKILLed."""
    print("faults:", flush=True)
    with MotoS3Server() as moto, MediaServer() as media, database_for_faults(report) as (db, pg):
        bucket = moto.new_bucket("faults")
        # The service reaches S3 through a path the suite can cut.
        proxy = TcpProxy(moto.port)
        s3_env = {**moto.env(), "AWS_ENDPOINT_URL": proxy.url}
        cluster = Cluster(
            work / "faults",
            database_url=db,
            storage_url=f"s3://{bucket}/receiver",
            s3_env=s3_env,
            media=media,
            extra_env={"RECEIVER_FETCH_DEADLINE": "5", "RECEIVER_LEASE_SECONDS": "12"},
        )
        planned = plan_messages(
            media, mode.fault_messages, duplicate_every=4, min_media=1, faults=True, seed=13
        )
        quarter = max(1, len(planned) // 4)
        phases = [planned[i * quarter : (i + 1) * quarter] for i in range(3)]
        phases.append(planned[3 * quarter :])
        cluster.start()
        statuses: dict[str, Any] = {}
        try:
            statuses["media faults"] = deliver(cluster.urls, phases[0])

            # S3 unreachable while webhooks keep arriving.
            def storage_down() -> None:
                with s3_outage(moto, proxy, mode.s3_outage):
                    pass

            outage = in_background(storage_down)
            time.sleep(0.5)
            statuses["S3 outage"] = deliver(cluster.urls, phases[1])
            outage.join()

            # PostgreSQL restarted mid-delivery.
            if pg is not None:

                def pg_restart() -> None:
                    time.sleep(0.5)
                    pg.stop("fast")
                    time.sleep(3)
                    pg.start()

                restart = in_background(pg_restart)
                statuses["PostgreSQL restart"] = deliver(cluster.urls, phases[2])
                restart.join()
            else:
                statuses["PostgreSQL restart"] = deliver(cluster.urls, phases[2])

            # serve and worker killed with SIGKILL mid-delivery, then restarted.
            def kill_and_restart() -> None:
                time.sleep(0.5)
                cluster.serves[0].kill()
                cluster.workers[0].kill()
                time.sleep(2)
                cluster.workers[0].start()
                cluster.serves[0].start()

            killer = in_background(kill_and_restart)
            statuses["SIGKILL serve + worker"] = deliver(cluster.urls, phases[3])
            killer.join()
            for thread in (outage, killer):
                for exc in getattr(thread, "errors", []):
                    raise exc
            index = cluster.index()
            drained = wait_drained(index, mode.drain_timeout, requeue_after=mode.drain_timeout / 2)
            result = verify(index, planned, media, moto.client(), bucket, "receiver/")
            index.close()
        finally:
            cluster.stop()
            proxy.close()
    for name, load in statuses.items():
        codes = ", ".join(f"{code}x{n}" for code, n in sorted(load.statuses.items()))
        report.add(
            "faults",
            f"{name}: deliveries answered (client retries on 5xx/no answer)",
            f"{codes or '-'}; {load.connection_errors} connection errors, "
            f"{len(load.undelivered)} undelivered",
            "every message answered 200 in the end; a fault answers 503, never 500",
            not load.undelivered and 500 not in load.statuses,
        )
    explain(report, "faults", result)
    if pg is None:
        report.add("faults", "PostgreSQL restart", "not run (no server binaries)", "run", False)
    report.add(
        "faults",
        "messages lost",
        f"{len(result.messages_lost)} of {len(planned)}",
        "0",
        not result.messages_lost,
    )
    report.add(
        "faults",
        "files lost",
        f"{result.files_lost} of {result.items_planned} "
        f"(drained {drained:.0f} s after the last delivery)",
        "0",
        result.files_lost == 0 and result.items_stored == result.items_planned,
    )
    report.add(
        "faults",
        "partial or unexpected objects",
        len(result.objects_corrupt) + len(result.objects_unexpected),
        "0",
        not result.objects_corrupt and not result.objects_unexpected,
    )
    refetched = result.processed_twice
    report.add(
        "faults",
        "files fetched again after a fault (retries, taken-over leases)",
        f"{refetched} of {result.items_planned}",
        "allowed",
        True,
    )


# -- bad input and security ---------------------------------------------------------------------


def run_fuzz(report: Report, mode: Mode) -> None:
    print("bad input:", flush=True)
    use_atheris = fuzz.atheris_available()
    hypothesis_examples = mode.fuzz_hypothesis
    if not use_atheris and mode.fuzz_atheris:
        report.notes.append("atheris not installed: hypothesis alone makes up the fuzz volume")
        hypothesis_examples += mode.fuzz_atheris
    total = 0
    for target in fuzz.TARGETS:
        results = [fuzz.run_hypothesis(target, hypothesis_examples)]
        if use_atheris and mode.fuzz_atheris and target in fuzz.ATHERIS_TARGETS:
            results.append(fuzz.run_atheris(target, mode.fuzz_atheris))
        inputs = sum(r.inputs for r in results)
        crashes = sum(len(r.crashes) for r in results)
        forged = sum(r.accepted_forgeries for r in results)
        total += inputs
        engines = " + ".join(f"{r.engine} {r.inputs:,}" for r in results)
        slowest = max(r.slowest for r in results)
        report.add(
            "bad input",
            f"fuzz {target}",
            f"{inputs:,} inputs ({engines}), "
            f"{crashes} crashes" + (f", slowest {slowest * 1000:.0f} ms" if slowest else ""),
            "0 crashes",
            crashes == 0 and forged == 0,
        )
        for r in results:
            for crash in r.crashes[:3]:
                print(crash, file=sys.stderr)
    target_total = 100_000 if mode is MODES["full"] else 0
    report.add(
        "bad input",
        "fuzz inputs in all",
        f"{total:,}",
        f">= {target_total:,}" if target_total else "-",
        total >= target_total,
    )


def run_security(report: Report, mode: Mode, work: Path) -> None:
    print("security:", flush=True)
    forged = security.check_forgeries(mode.forgeries)
    report.add(
        "security",
        "forged or mutated signatures accepted",
        f"{forged.accepted} of {forged.attempts:,}",
        "0",
        forged.accepted == 0,
    )
    ssrf = security.check_ssrf(work)
    report.add(
        "security",
        "SSRF targets fetched (direct, DNS-resolved, redirects)",
        f"{ssrf.accepted} of {ssrf.attempts}",
        "0 (all refused as blocked_host)",
        ssrf.accepted == 0,
    )
    routes = security.check_routes(work)
    report.add(
        "security",
        "UI/API routes answering anonymous requests",
        f"{routes.accepted} of {routes.attempts} route/method pairs",
        "0",
        routes.accepted == 0,
    )
    sessions = security.check_sessions(work)
    report.add(
        "security",
        "logout replay: old cookie on /messages and /api/messages",
        f"{sessions.logout_replay.accepted} of {sessions.logout_replay.attempts} let in",
        "0 (302 to /login, 401)",
        sessions.logout_replay.accepted == 0 and sessions.logout_replay.attempts == 2,
    )
    report.add(
        "security",
        "sessions revoke --all: cookies of 8 browsers over 4 workers",
        f"{sessions.revoke_all.accepted} of {sessions.revoke_all.attempts} still open",
        "0",
        sessions.revoke_all.accepted == 0 and sessions.revoke_all.attempts == 8,
    )
    report.add(
        "security",
        "idle (30 min) and absolute (12 h) expiry, clock injected",
        f"{sessions.expiry.accepted} wrong of {sessions.expiry.attempts} checks",
        "0",
        sessions.expiry.accepted == 0 and sessions.expiry.attempts > 0,
    )
    most = max(sessions.checked_per_address.values())
    report.add(
        "security",
        "100 wrong passwords from 4 addresses over 4 workers: checked per address",
        f"at most {most} (of 25 each); operator from a 5th address: {sessions.operator_status}",
        "<= 5; 303",
        most <= 5 and sessions.operator_status == 303,
    )
    slow = security.check_slow_clients(work)
    report.add(
        "security",
        "200 slow-body + 200 slow-header connections beside 8 signed senders",
        f"/healthz p99 {slow.healthz_p99 * 1000:.0f} ms; webhooks 200 within 2 s: "
        f"{slow.webhooks_ok_in_time} of {slow.webhooks} (slowest {slow.slowest_webhook:.2f} s); "
        f"slow ones closed within 30 s: {slow.slow_closed_in_time} of {slow.slow_opened} "
        f"(slowest {slow.slowest_close:.1f} s)",
        "p99 < 500 ms; all; all",
        slow.healthz_p99 < 0.5
        and slow.healthz_failed == 0
        and slow.webhooks > 0
        and slow.webhooks_ok_in_time == slow.webhooks
        and slow.slow_closed_in_time == slow.slow_opened == 400,
    )
    hostile = security.check_hostile_bodies(work, mode.hostile_bodies)
    report.add(
        "security",
        "hostile JSON and form bodies on webhook routes answering 5xx",
        f"{hostile.accepted} of {hostile.attempts:,}",
        "0",
        hostile.accepted == 0 and hostile.attempts == mode.hostile_bodies,
    )
    modes = security.check_file_modes(work)
    report.add(
        "security",
        "data-directory entries readable by group or others (after serve, worker, purge)",
        f"{modes.accepted} of {modes.attempts}",
        "0",
        modes.accepted == 0 and modes.attempts > 0,
    )
    for check in (
        forged,
        ssrf,
        routes,
        sessions.logout_replay,
        sessions.revoke_all,
        sessions.expiry,
        hostile,
        modes,
    ):
        for detail in check.details:
            print(f"    {check.name}: {detail}", file=sys.stderr)


# -- events ----------------------------------------------------------------------------------------


def run_events(report: Report, mode: Mode, work: Path, moto: MotoS3Server) -> None:
    """Events to a receiver that is down while messages arrive (see tests/reliability/events.py)."""
    print("events:", flush=True)
    f = events_area.run_events(
        work,
        mode.event_messages,
        mode.event_outage,
        moto,
        lambda: database_for_faults(report),
    )
    restart = ", PostgreSQL restarted mid-drain" if f.pg_restarted else ""
    report.add(
        "events",
        f"events created ({f.messages} messages with media, receiver down "
        f"{f.outage_seconds:.0f} s, secret rotated mid-burst, worker SIGKILLed mid-drain"
        f"{restart})",
        f"{f.created} created, {f.delivered} delivered, drained {f.drain_seconds:.0f} s "
        f"after the receiver came back",
        "all delivered",
        f.created > 0 and f.delivered == f.created,
    )
    report.add("events", "events lost", f"{f.lost} of {f.created}", "0", f.lost == 0)
    report.add(
        "events",
        "duplicates after deduplication by webhook-id",
        f"{f.duplicates_after_dedup} ({f.redeliveries} redeliveries of a webhook-id)",
        "0",
        f.duplicates_after_dedup == 0,
    )
    report.add(
        "events",
        "bodies failing standardwebhooks verification (either secret)",
        f.unverified,
        "0",
        f.unverified == 0,
    )
    report.add(
        "events",
        "events delivered to a removed endpoint",
        f.removed_endpoint_received,
        "0",
        f.removed_endpoint_received == 0,
    )


# -- main ------------------------------------------------------------------------------------------


def run(mode_name: str, work: Path | None = None, *, only: set[str] | None = None) -> Report:
    """Run the suite (or `only` some areas) and return its report."""
    mode = MODES[mode_name]
    report = Report(mode_name)
    own = work is None
    root = Path(tempfile.mkdtemp(prefix="mmsr-reliability-")) if work is None else work
    wanted = only or {"load", "faults", "fuzz", "security", "events"}
    try:
        if "load" in wanted:
            with MotoS3Server() as moto:
                run_load(report, mode, root, moto)
        if "faults" in wanted:
            run_faults(report, mode, root)
        if "fuzz" in wanted:
            run_fuzz(report, mode)
        if "security" in wanted:
            run_security(report, mode, root)
        if "events" in wanted:
            with MotoS3Server() as moto:
                run_events(report, mode, root, moto)
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability.suite", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--mode", choices=sorted(MODES), default="short")
    parser.add_argument(
        "--only",
        action="append",
        choices=["load", "faults", "fuzz", "security", "events"],
        help="run only this area (repeatable)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    report = run(args.mode, only=set(args.only) if args.only else None)
    text = f"Reliability figures ({report.header()})\n\n{report.table()}\n"
    for note in report.notes:
        text += f"\nnote: {note}"
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
