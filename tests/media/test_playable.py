"""Playable copies and poster frames with a real ffmpeg/ffprobe, including files made to hurt."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image

from receiver.media.playable import (
    COPY_AUDIO,
    COPY_VIDEO,
    Copy,
    Failed,
    Limits,
    Plan,
    make_copy,
    make_poster,
    plan,
)
from receiver.media.probe import probe
from tests.support import avfiles


@pytest.fixture(scope="module")
def tiny_frames() -> bytes:
    return avfiles.many_tiny_frames(10_000)


@pytest.fixture(scope="module")
def clips() -> list[tuple[str, bytes]]:
    """A 3GP (H.263/AMR), a fast-start MP4 and an MP4 with its index at the end."""
    return [
        ("3gp", avfiles.video_3gp_amr(2)),
        ("mp4", avfiles.mp4_h264(2, faststart=True)),
        ("mp4", avfiles.mp4_h264(2)),
    ]


#: The reasons a copy may end with; anything else is a bug.
REASONS = {"too_long", "timeout", "cpu_limit", "memory_limit", "output_too_large", "unreadable"}


@pytest.mark.parametrize(
    ("kind", "ctype", "codecs", "expected"),
    [
        ("audio", "audio/amr", ["amr_nb"], Plan(COPY_AUDIO)),
        ("audio", "audio/amr-wb", ["amr_wb"], Plan(COPY_AUDIO)),
        ("audio", "audio/3gpp", ["aac"], Plan(COPY_AUDIO, remux=True)),
        ("audio", "audio/ogg", ["opus"], Plan(COPY_AUDIO)),
        ("audio", "audio/mpeg", ["mp3"], Plan(None)),
        ("audio", "audio/mp4", ["aac"], Plan(None)),
        ("video", "video/3gpp", ["h263", "amr_nb"], Plan(COPY_VIDEO)),
        ("video", "video/quicktime", ["h264", "aac"], Plan(COPY_VIDEO, remux=True)),
        ("video", "video/quicktime", ["hevc", "aac"], Plan(COPY_VIDEO)),
        ("video", "video/mp4", ["h264", "aac"], Plan(None)),
        ("video", "video/mp4", ["mpeg4"], Plan(COPY_VIDEO)),
        # ffprobe could not read it: a copy is tried, and ffmpeg says what is wrong.
        ("video", "video/mp4", [], Plan(COPY_VIDEO)),
        ("image", "image/jpeg", [], Plan(None)),
    ],
)
def test_the_rule_names_what_needs_a_copy(
    kind: str, ctype: str, codecs: list[str], expected: Plan
) -> None:
    assert plan(kind, ctype, codecs) == expected


def copy_of(data: bytes, tmp_path: Path, suffix: str, *, limits: Limits | None = None) -> object:
    source = tmp_path / f"source.{suffix}"
    source.write_bytes(data)
    facts = probe(io.BytesIO(data))
    kind = "video" if facts is not None and facts.has_video else "audio"
    if facts is None and suffix in ("mp4", "3gp", "mov"):
        kind = "video"
    chosen = plan(kind, None, facts.codecs if facts else ())
    duration = facts.duration_seconds if facts else None
    return make_copy(source, tmp_path, chosen, duration=duration, limits=limits)


def test_amr_voice_note_becomes_an_m4a_that_ffprobe_reads(tmp_path: Path) -> None:
    made = copy_of(avfiles.amr_voice_note(3), tmp_path, "amr")
    assert isinstance(made, Copy), made
    assert made.target.content_type == "audio/mp4" and made.path.suffix == ".m4a"
    facts = probe(made.path.open("rb"))
    assert facts is not None and facts.codecs == ("aac",) and not facts.has_video
    assert facts.duration_seconds == pytest.approx(3.0, abs=0.2)
    assert "mp4" in facts.container


def test_3gp_h263_amr_becomes_h264_aac_mp4(tmp_path: Path) -> None:
    data = avfiles.video_3gp_amr(3)
    assert probe(io.BytesIO(data)).codecs == ("h263", "amr_nb")  # type: ignore[union-attr]
    made = copy_of(data, tmp_path, "3gp")
    assert isinstance(made, Copy), made
    facts = probe(made.path.open("rb"))
    assert facts is not None and facts.codecs == ("h264", "aac")
    assert (facts.width, facts.height) == (176, 144) and not made.remuxed
    # The index is at the front (faststart), so a browser plays before it has it all.
    head = made.path.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and head.find(b"moov") < max(head.find(b"mdat"), 4096)


def test_quicktime_with_h264_is_only_remuxed(tmp_path: Path) -> None:
    made = copy_of(avfiles.quicktime_h264(), tmp_path, "mov")
    assert isinstance(made, Copy) and made.remuxed
    assert made.facts.codecs == ("h264", "aac")


def test_poster_frame_is_an_image_with_a_hash(tmp_path: Path) -> None:
    source = tmp_path / "clip.3gp"
    source.write_bytes(avfiles.video_3gp_amr(3))
    poster = make_poster(source, tmp_path, duration=3.0)
    assert not isinstance(poster, Failed), poster
    with Image.open(io.BytesIO(poster.data)) as im:
        assert im.format == "JPEG" and im.size == (176, 144)
    assert poster.content_type == "image/jpeg" and poster.phash is not None


def test_poster_of_audio_is_a_recorded_reason(tmp_path: Path) -> None:
    source = tmp_path / "note.amr"
    source.write_bytes(avfiles.amr_voice_note(1))
    poster = make_poster(source, tmp_path, duration=1.0)
    assert isinstance(poster, Failed) and poster.reason == "unreadable"


# -- bad input: each ends in a copy or a recorded reason, within its limits ----------------


def bounded(made: object, started: float, limits: Limits) -> object:
    assert time.monotonic() - started < limits.timeout + 5
    if isinstance(made, Copy):
        facts = probe(made.path.open("rb"))
        assert facts is not None and (facts.has_video or facts.has_audio)
    else:
        assert isinstance(made, Failed) and made.reason in REASONS and made.detail, made
    return made


@pytest.mark.parametrize("cut", [0.5, 0.05])
def test_truncated_3gp_and_mp4(tmp_path: Path, cut: float, clips: list[tuple[str, bytes]]) -> None:
    limits = Limits(timeout=30)
    for n, (name, data) in enumerate(clips):
        started = time.monotonic()
        work = tmp_path / f"{n}-{name}"
        work.mkdir()
        made = bounded(
            copy_of(data[: int(len(data) * cut)], work, name, limits=limits), started, limits
        )
        if cut == 0.05:  # no index, no frames: nothing to copy
            assert isinstance(made, Failed) and made.reason == "unreadable"


def test_mp4_with_its_index_at_the_end_is_copied(
    tmp_path: Path, clips: list[tuple[str, bytes]]
) -> None:
    data = clips[2][1]
    assert data.find(b"moov") > data.find(b"mdat")
    source = tmp_path / "late.mp4"
    source.write_bytes(data)
    made = make_copy(source, tmp_path, Plan(COPY_VIDEO, remux=True))
    assert isinstance(made, Copy) and made.facts.codecs == ("h264", "aac")
    assert made.path.read_bytes().find(b"moov") < made.path.read_bytes().find(b"mdat")


def test_ten_thousand_tiny_frames(tmp_path: Path, tiny_frames: bytes) -> None:
    limits = Limits(timeout=60)
    data = tiny_frames
    started = time.monotonic()
    made = bounded(copy_of(data, tmp_path, "mp4", limits=limits), started, limits)
    assert isinstance(made, Copy) and made.facts.codecs[0] == "h264"
    assert made.facts.duration_seconds == pytest.approx(10.0, abs=0.5)


def test_ten_hours_of_silence_is_too_long_without_running_ffmpeg(tmp_path: Path) -> None:
    data = avfiles.ten_hours_of_silence()
    started = time.monotonic()
    made = copy_of(data, tmp_path, "amr")
    assert isinstance(made, Failed) and made.reason == "too_long"
    assert "36,000 s" in made.detail and time.monotonic() - started < 5


def test_ten_hours_of_silence_with_a_lying_duration_stops_at_the_wall_clock(
    tmp_path: Path,
) -> None:
    source = tmp_path / "long.amr"
    source.write_bytes(avfiles.ten_hours_of_silence())
    limits = Limits(timeout=1.5, max_seconds=36_000)
    started = time.monotonic()
    made = make_copy(source, tmp_path, Plan(COPY_AUDIO), duration=None, limits=limits)
    assert isinstance(made, Failed) and made.reason == "timeout", made
    assert time.monotonic() - started < 5


def test_cpu_cap_stops_a_long_transcode(tmp_path: Path) -> None:
    source = tmp_path / "busy.mp4"
    source.write_bytes(avfiles.busy_video())
    started = time.monotonic()
    made = make_copy(source, tmp_path, Plan(COPY_VIDEO), limits=Limits(cpu_seconds=1))
    assert isinstance(made, Failed) and made.reason == "cpu_limit", made
    assert time.monotonic() - started < 30


def test_output_cap_stops_a_runaway_copy(tmp_path: Path, tiny_frames: bytes) -> None:
    source = tmp_path / "frames.mp4"
    source.write_bytes(tiny_frames)
    made = make_copy(source, tmp_path, Plan(COPY_VIDEO), limits=Limits(output_bytes=20_000))
    assert isinstance(made, Failed) and made.reason == "output_too_large", made


def test_memory_cap_is_a_recorded_reason(tmp_path: Path) -> None:
    source = tmp_path / "clip.3gp"
    source.write_bytes(avfiles.video_3gp_amr(1))
    made = make_copy(source, tmp_path, Plan(COPY_VIDEO), limits=Limits(memory_bytes=32 << 20))
    assert isinstance(made, Failed) and made.reason == "memory_limit", made


def test_mp4_that_makes_ffmpeg_read_past_its_end(tmp_path: Path) -> None:
    limits = Limits(timeout=30)
    started = time.monotonic()
    made = bounded(
        copy_of(avfiles.mp4_reading_past_its_end(), tmp_path, "mp4", limits=limits),
        started,
        limits,
    )
    assert isinstance(made, Failed) and made.reason == "unreadable"
