"""Data lifecycle: purge past retention (objects, then rows; resumable), export as JSON lines."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from receiver import lifecycle
from receiver.cli import main
from receiver.errors import ConfigError
from receiver.index import MediaIndex
from receiver.storage import open_store
from receiver.storage.base import ObjectStore
from tests.conftest import ACCOUNT_SID, base_env

NOW = datetime(2024, 6, 30, 12, 0, tzinfo=UTC)


class World:
    """An index and a store with messages of known ages and their objects."""

    def __init__(self, index: MediaIndex, store: ObjectStore, now: datetime = NOW) -> None:
        self.index = index
        self.store = store
        self.now = now
        self.counter = 0

    def message(
        self, age: timedelta, *, files: int = 2, orphan: bool = False, finish: bool = True
    ) -> str:
        self.counter += 1
        sid = f"MM{self.counter:032d}"
        row = {
            "sid": sid,
            "account_sid": ACCOUNT_SID,
            "direction": "inbound",
            "from_addr": "+15550001111",
            "from_channel": "sms",
            "to_addr": "+15550002222",
            "to_channel": "sms",
            "body": f"body {self.counter}",
            "num_media": files,
            "params": "[]",
            "received_at": self.now - age,
        }
        media = [
            {
                "idx": i,
                "url": f"https://api.twilio.com/x/{sid}/{i}",
                "media_sid": f"ME{self.counter:030d}{i:02d}",
                "declared_type": "image/jpeg",
            }
            for i in range(files)
        ]
        assert self.index.record_message(row, media)
        if finish and files:
            claimed = self.index.claim_media(
                "test-owner", lease_seconds=60, limit=50, max_attempts=8, message_sid=sid
            )
            for item in claimed:
                key = f"media/{ACCOUNT_SID}/{sid}/{item.idx}-{item.media_sid}.jpg"
                thumb = f"derived/{ACCOUNT_SID}/{sid}/{item.idx}-{item.media_sid}.thumb.webp"
                self.store.put_bytes(key, b"jpeg" * 100, content_type="image/jpeg")
                self.store.put_bytes(thumb, b"webp", content_type="image/webp")
                assert self.index.finish_media(
                    item.id,
                    "test-owner",
                    state="stored",
                    storage_key=key,
                    size_bytes=400,
                    detected_type="image/jpeg",
                    kind="image",
                    sha256="0" * 64,
                )
                self.index.set_thumbnail(item.id, thumb)
        if orphan:  # an upload whose index update never happened (crash)
            self.store.put_bytes(
                f"media/{ACCOUNT_SID}/{sid}/9-orphan.jpg", b"x", content_type="image/jpeg"
            )
        return sid

    def keys(self, sid: str) -> list[str]:
        return [
            *self.store.iter_keys(f"media/{ACCOUNT_SID}/{sid}/"),
            *self.store.iter_keys(f"derived/{ACCOUNT_SID}/{sid}/"),
        ]


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Any:
    index = MediaIndex.open(db_url)
    store = open_store((tmp_path / "media").as_uri())
    yield World(index, store)
    index.close()


def test_dry_run_reports_and_changes_nothing(world: World) -> None:
    old = [world.message(timedelta(days=40)) for _ in range(3)]
    new = world.message(timedelta(days=5))
    before = sorted(world.store.iter_keys("media/")), sorted(world.store.iter_keys("derived/"))
    report = lifecycle.purge(world.index, world.store, NOW - timedelta(days=30), now=NOW)
    assert report.dry_run
    assert (report.messages, report.media_items, report.objects, report.stored_bytes) == (
        3,
        6,
        12,
        2400,
    )
    assert "would delete 3 message(s)" in report.summary()
    assert (
        sorted(world.store.iter_keys("media/")),
        sorted(world.store.iter_keys("derived/")),
    ) == before
    assert all(world.index.get_message(sid) for sid in [*old, new])


def test_purge_deletes_objects_then_rows_and_keeps_recent_messages(world: World) -> None:
    old = [world.message(timedelta(days=40), orphan=(i == 0)) for i in range(3)]
    empty = world.message(timedelta(days=41), files=0)
    new = world.message(timedelta(days=5))
    new_keys = world.keys(new)
    report = lifecycle.purge(
        world.index, world.store, NOW - timedelta(days=30), dry_run=False, batch_size=2, now=NOW
    )
    assert (report.messages, report.media_items) == (4, 6)
    assert report.objects == 13  # 6 originals, 6 thumbnails and the orphan upload
    for sid in [*old, empty]:
        assert world.index.get_message(sid) is None
        assert world.index.media_of(sid) == []
        assert world.keys(sid) == []
    assert world.index.get_message(new) is not None
    assert world.keys(new) == new_keys and len(new_keys) == 4
    again = lifecycle.purge(
        world.index, world.store, NOW - timedelta(days=30), dry_run=False, now=NOW
    )
    assert again.messages == 0


def test_an_interrupted_purge_finishes_on_the_next_run(world: World) -> None:
    old = [world.message(timedelta(days=60)) for _ in range(5)]
    seen = 0

    def crash_after_two(n: int) -> None:
        nonlocal seen
        seen += n
        if seen == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lifecycle.purge(
            world.index,
            world.store,
            NOW - timedelta(days=30),
            dry_run=False,
            progress=crash_after_two,
            now=NOW,
        )
    assert sum(world.index.get_message(sid) is None for sid in old) == 2
    # A crash between the objects and the row: the objects are gone, the row is not.
    world.store.delete_prefix(f"media/{ACCOUNT_SID}/{old[3]}/")
    report = lifecycle.purge(
        world.index, world.store, NOW - timedelta(days=30), dry_run=False, now=NOW
    )
    assert report.messages == 3
    assert all(world.index.get_message(sid) is None and world.keys(sid) == [] for sid in old)


def test_messages_being_processed_are_skipped_until_their_lease_ends(world: World) -> None:
    busy = world.message(timedelta(days=50), finish=False)
    claimed = world.index.claim_media(
        "worker-1", lease_seconds=600, limit=10, max_attempts=8, message_sid=busy, now=NOW
    )
    assert claimed
    report = lifecycle.purge(
        world.index, world.store, NOW - timedelta(days=30), dry_run=False, now=NOW
    )
    assert (report.messages, report.skipped_in_progress) == (0, 1)
    assert world.index.get_message(busy) is not None
    later = lifecycle.purge(
        world.index,
        world.store,
        NOW - timedelta(days=30),
        dry_run=False,
        now=NOW + timedelta(hours=1),
    )
    assert later.messages == 1 and world.index.get_message(busy) is None


def test_deleting_one_message_removes_all_its_objects(world: World) -> None:
    sid = world.message(timedelta(days=1), orphan=True)
    other = world.message(timedelta(days=1))
    message = world.index.get_message(sid)
    assert message is not None
    assert lifecycle.erase_message(world.index, world.store, message) == 5
    assert world.keys(sid) == [] and world.index.get_message(sid) is None
    assert len(world.keys(other)) == 4


def test_erasing_deletes_recorded_keys_outside_the_message_prefixes(world: World) -> None:
    sid = world.message(timedelta(days=1), files=1)
    (item,) = world.index.media_of(sid)
    elsewhere = "imported/2023/photo.jpg"  # written by an older layout
    world.store.put_bytes(elsewhere, b"old", content_type="image/jpeg")
    world.index.set_thumbnail(item.id, elsewhere)
    message = world.index.get_message(sid)
    assert message is not None
    # The original, and the thumbnail made before the old one was recorded
    # instead, both under the prefixes; plus the recorded key elsewhere.
    assert lifecycle.erase_message(world.index, world.store, message) == 3
    assert not world.store.exists(elsewhere) and world.keys(sid) == []
    assert world.index.get_message(sid) is None


def test_erasing_a_message_whose_sids_make_no_prefix_deletes_its_known_keys(
    world: World,
) -> None:
    sid = world.message(timedelta(days=1), files=1)
    message = world.index.get_message(sid)
    assert message is not None
    odd = replace(message, account_sid="AC-not-a-sid")
    assert lifecycle.erase_message(world.index, world.store, odd) == 2
    assert world.keys(sid) == [] and world.index.get_message(sid) is None


def test_outbound_files_go_a_whole_month_at_a_time(world: World) -> None:
    for month in ("2024/03", "2024/04", "2024/05", "2024/06"):
        world.store.put_bytes(
            f"outbound/{month}/tok{month[-2:]}abcdefgh.jpg", b"x", content_type="image/jpeg"
        )
    cutoff = datetime(2024, 5, 15, tzinfo=UTC)
    assert lifecycle.purge_outbound(world.store, cutoff) == 2
    assert len(list(world.store.iter_keys("outbound/"))) == 4
    assert lifecycle.purge_outbound(world.store, cutoff, dry_run=False) == 2
    assert sorted(world.store.iter_keys("outbound/")) == [
        "outbound/2024/05/tok05abcdefgh.jpg",
        "outbound/2024/06/tok06abcdefgh.jpg",
    ]


def test_export_writes_messages_with_their_media_manifest(world: World, tmp_path: Path) -> None:
    first = world.message(timedelta(days=10))
    second = world.message(timedelta(days=3), files=1)
    world.message(timedelta(days=1))
    out = tmp_path / "export.jsonl"
    ticks: list[int] = []
    with out.open("w") as fh:
        written = lifecycle.export(
            world.index,
            fh,
            since=NOW - timedelta(days=20),
            until=NOW - timedelta(days=2),
            progress=ticks.append,
            batch_size=1,
        )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == 2 == len(records) == sum(ticks)
    assert [r["sid"] for r in records] == [first, second]
    assert records[0]["body"] == "body 1" and records[0]["num_media"] == 2
    manifest = records[0]["media_manifest"]
    assert [m["index"] for m in manifest] == [0, 1]
    assert manifest[0]["storage_key"] in world.keys(first)
    assert manifest[0]["sha256"] == "0" * 64 and manifest[0]["size_bytes"] == 400
    assert manifest[0]["thumbnail_key"].endswith(".thumb.webp")
    assert "params" not in records[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        ("90", timedelta(days=90)),
        ("45m", timedelta(minutes=45)),
    ],
)
def test_ages(text: str, expected: timedelta) -> None:
    assert lifecycle.parse_duration(text) == expected


def test_moments() -> None:
    assert lifecycle.parse_moment("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert lifecycle.parse_moment("2024-05-01T12:00:00Z") == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert lifecycle.parse_moment("24h", now=NOW) == NOW - timedelta(hours=24)
    with pytest.raises(ValueError, match="expected a date"):
        lifecycle.parse_moment("last tuesday")


def test_retention_needs_days_or_an_age() -> None:
    with pytest.raises(ConfigError, match="RECEIVER_RETENTION_DAYS"):
        lifecycle.retention_cutoff(0, None, now=NOW)
    assert lifecycle.retention_cutoff(30, None, now=NOW) == NOW - timedelta(days=30)
    assert lifecycle.retention_cutoff(30, timedelta(days=7), now=NOW) == NOW - timedelta(days=7)


# -- the commands -------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path)


def seed(env: dict[str, str]) -> tuple[World, list[str], str]:
    from receiver.settings import Settings

    settings = Settings.from_env(env)
    index = MediaIndex.open(settings.database_url)
    world = World(index, open_store(settings.storage_url), now=datetime.now(UTC))
    old = [world.message(timedelta(days=100)) for _ in range(3)]
    new = world.message(timedelta(days=1))
    return world, old, new


def test_purge_command_is_a_dry_run_unless_executed(cli_env: dict[str, str]) -> None:
    world, old, new = seed(cli_env)
    runner = CliRunner()
    refused = runner.invoke(main, ["purge"], env=cli_env)
    assert refused.exit_code != 0 and "RECEIVER_RETENTION_DAYS" in refused.output
    dry = runner.invoke(main, ["purge", "--older-than", "30d"], env=cli_env)
    assert dry.exit_code == 0, dry.output
    assert "would delete 3 message(s)" in dry.output and "--execute" in dry.output
    assert all(world.index.get_message(sid) for sid in old)
    done = runner.invoke(
        main, ["purge", "--execute"], env={**cli_env, "RECEIVER_RETENTION_DAYS": "30"}
    )
    assert done.exit_code == 0, done.output
    assert "deleted 3 message(s)" in done.output
    assert all(world.index.get_message(sid) is None and world.keys(sid) == [] for sid in old)
    assert world.index.get_message(new) is not None and len(world.keys(new)) == 4
    world.index.close()


def test_export_command_writes_json_lines(cli_env: dict[str, str], tmp_path: Path) -> None:
    world, old, new = seed(cli_env)
    out = tmp_path / "since.jsonl"
    result = CliRunner().invoke(
        main, ["export", "--since", "7d", "--output", str(out)], env=cli_env
    )
    assert result.exit_code == 0, result.output
    assert "exported 1 message(s)" in result.output
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["sid"] == new and len(record["media_manifest"]) == 2
    everything = CliRunner().invoke(main, ["export", "--since", "2000-01-01"], env=cli_env)
    assert everything.exit_code == 0
    sids = [
        json.loads(line)["sid"] for line in everything.stdout.splitlines() if line.startswith("{")
    ]
    assert sids == [*old, new]
    bad = CliRunner().invoke(main, ["export", "--since", "yesterday-ish"], env=cli_env)
    assert bad.exit_code == 2 and "expected a date" in bad.output
    world.index.close()
