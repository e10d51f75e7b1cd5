"""`mms-receiver backfill`: hashes and OCR text for images stored before they were made."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from receiver.cli import main
from receiver.inbound.backfill import backfill
from receiver.inbound.texts import TextJobs
from receiver.index.texts import ReadText
from receiver.media.ocr import TextReader
from tests.conftest import base_env
from tests.support import textimages
from tests.support.textimages import require_tesseract
from tests.web.seed import Item, Seeder


class Interrupted(Exception):
    pass


def seed_images(app: Any) -> list[int]:
    """Four stored images without hash or text (as an earlier version left them), one damaged,
    and a contact card; the image ids in id order."""
    seed = Seeder(app)
    english = textimages.english()
    for data in (english, english, b"\xff\xd8\xff\xe0 damaged", english, None):
        seed.message(items=[Item(data=data, thumbnail=data is None)])
    seed.message(items=[Item(kind="contact", detected_type="text/vcard", data=b"BEGIN:VCARD")])
    index = app.extensions["receiver"].index
    ids = [m.id for m in index.images_missing(hashes=True, limit=100)]
    assert len(ids) == 5
    return ids


def test_backfill_is_batched_resumable_and_reads_text(make_app: Any, db_url: str) -> None:
    require_tesseract("eng")
    app = make_app(RECEIVER_DATABASE_URL=db_url)
    svc = app.extensions["receiver"]
    index, store = svc.index, svc.store
    ids = seed_images(app)
    texts = TextJobs(index, store, TextReader(("eng",), timeout=60))

    dry = backfill(index, store, texts, batch=2, dry_run=True)
    assert (dry.hashes_missing, dry.texts_missing, dry.hashed, dry.read) == (5, 5, 0, 0)
    assert "5 image(s) without a perceptual hash, 5 without text" in dry.summary()
    assert all(index.hash_of(i) is None for i in ids)

    batches: list[str] = []

    def stop_after_first(line: str) -> None:
        batches.append(line)
        raise Interrupted

    with pytest.raises(Interrupted):
        backfill(index, store, texts, batch=2, progress=stop_after_first)
    # The first batch was recorded before the interruption, the rest was not touched.
    assert [index.hash_of(i) is not None for i in ids] == [True, True, False, False, False]

    lines: list[str] = []
    report = backfill(index, store, texts, batch=2, progress=lines.append)
    assert report.hashes_missing == 3  # went on where the first run stopped
    assert report.hashed == 2 and report.failed == 2  # the damaged file: no hash, no text
    assert report.texts_missing == 5 and report.read == 4
    assert lines and lines[-1].startswith("read 4 image(s)")
    assert [index.hash_of(i) is not None for i in ids] == [True, True, False, True, True]
    # Copies of one picture hash alike.
    assert index.hash_of(ids[0]) == index.hash_of(ids[1]) == index.hash_of(ids[3])
    for media_id in (ids[0], ids[1], ids[3]):
        assert index.get_media(media_id).text == textimages.ENGLISH
    assert index.text_of(ids[2]).outcome == "failed"  # type: ignore[union-attr]
    assert index.get_media(ids[4]).text == ""  # the plain test photo has no text

    again = backfill(index, store, texts, batch=2)
    assert (again.hashes_missing, again.texts_missing) == (1, 0)  # only the damaged file
    assert again.hashed == 0


def test_backfill_command(tmp_path: Path, make_app: Any) -> None:
    app = make_app()
    seed = Seeder(app)
    seed.message(items=[Item()])  # stored in 2024
    recent = seed.message(items=[Item()], received_at=datetime.now(UTC))
    index = app.extensions["receiver"].index
    (recent_id,) = (m.id for m in index.media_of(recent))
    env = base_env(tmp_path)
    runner = CliRunner()
    dry = runner.invoke(main, ["backfill", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "dry run: 2 image(s) without a perceptual hash" in dry.output
    assert "OCR is off" in dry.output
    done = runner.invoke(main, ["backfill", "--since", "30d"], env=env)
    assert done.exit_code == 0, done.output
    assert "hashed 1 of 1 image(s); 0 failed" in done.output
    assert index.hash_of(recent_id) is not None
    rest = runner.invoke(main, ["backfill"], env=env)
    assert "hashed 1 of 1 image(s)" in rest.output
    assert "hashed 0 of 0" in runner.invoke(main, ["backfill"], env=env).output

    require_tesseract("eng")
    missing = runner.invoke(main, ["backfill"], env={**env, "RECEIVER_OCR": "eng+fra_xyz"})
    assert missing.exit_code != 0
    assert "apt-get install tesseract-ocr-fra-xyz" in missing.output
    bad = runner.invoke(main, ["backfill"], env={**env, "RECEIVER_OCR": "french"})
    assert bad.exit_code != 0 and "RECEIVER_OCR" in bad.output
    checked = runner.invoke(main, ["check"], env={**env, "RECEIVER_OCR": "eng+fra_xyz"})
    assert checked.exit_code == 1
    assert "ocr: FAIL" in checked.output and "tesseract-ocr-fra-xyz" in checked.output
    good = runner.invoke(main, ["check"], env={**env, "RECEIVER_OCR": "eng"})
    assert "ocr: ok  tesseract" in good.output, good.output
    off = runner.invoke(main, ["check"], env=env)
    assert "ocr: off" in off.output


def test_retry_failed_reads_timed_out_and_failed_images_again(make_app: Any, db_url: str) -> None:
    require_tesseract("eng")
    app = make_app(RECEIVER_DATABASE_URL=db_url)
    svc = app.extensions["receiver"]
    index, store = svc.index, svc.store
    ids = seed_images(app)
    # A limit no reading can meet: every image times out, the damaged one fails first.
    hurried = TextJobs(index, store, TextReader(("eng",), timeout=0.001))
    first = backfill(index, store, hurried)
    assert (first.texts_missing, first.read) == (5, 0)
    outcomes = [index.text_of(i).outcome for i in ids]  # type: ignore[union-attr]
    assert outcomes == ["timeout", "timeout", "failed", "timeout", "timeout"]

    texts = TextJobs(index, store, TextReader(("eng",), timeout=60))
    plain = backfill(index, store, texts)
    assert plain.texts_missing == 0  # a recorded result is final without the option
    assert index.get_media(ids[0]).text is None

    dry = backfill(index, store, texts, retry_failed=True, dry_run=True)
    assert dry.texts_missing == 5
    assert "5 without text (or failed)" in dry.summary()
    assert index.text_of(ids[0]).outcome == "timeout"  # type: ignore[union-attr]

    again = backfill(index, store, texts, batch=2, retry_failed=True)
    assert (again.texts_missing, again.read) == (5, 4)
    for media_id in (ids[0], ids[1], ids[3]):
        assert index.get_media(media_id).text == textimages.ENGLISH
    assert index.get_media(ids[4]).text == ""
    damaged = index.text_of(ids[2])
    assert damaged is not None and damaged.outcome == "failed" and damaged.detail
    # Read once per run: only the damaged file is left to retry, and nothing without it.
    assert backfill(index, store, texts, retry_failed=True).texts_missing == 1
    assert backfill(index, store, texts).texts_missing == 0


def test_retry_failed_command(tmp_path: Path, make_app: Any) -> None:
    app = make_app()
    seed = Seeder(app)
    seed.message(items=[Item(data=textimages.english())])
    index = app.extensions["receiver"].index
    (item,) = index.images_missing(hashes=True, limit=10)
    index.set_texts(
        [ReadText(item.id, item.message_sid, "timeout", "", "eng", "tesseract ran over 1 s", 1.0)]
    )
    env = base_env(tmp_path)
    runner = CliRunner()
    off = runner.invoke(main, ["backfill", "--retry-failed"], env=env)
    assert off.exit_code != 0
    assert "RECEIVER_OCR" in off.output
    require_tesseract("eng")
    done = runner.invoke(main, ["backfill", "--retry-failed"], env={**env, "RECEIVER_OCR": "eng"})
    assert done.exit_code == 0, done.output
    assert "read text in 1 of 1" in done.output
    assert index.get_media(item.id).text == textimages.ENGLISH
