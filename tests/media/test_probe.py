"""ffprobe facts with a real ffprobe: audio-only containers, codecs, durations, bad files."""

from __future__ import annotations

import io

import pytest

from receiver.media.inspect import MediaInfo, inspect, with_av_facts
from receiver.media.policy import check, inbound_policy
from receiver.media.probe import ffprobe_version, probe
from tests.support import avfiles

POLICY = inbound_policy(5_000_000, 5_000_000)


def facts_of(data: bytes, declared: str) -> MediaInfo:
    info = inspect(io.BytesIO(data), declared)
    return with_av_facts(info, probe(io.BytesIO(data)))


def test_audio_only_3gpp_is_audio_and_no_mismatch_when_declared_so() -> None:
    data = avfiles.voice_memo_3gp()
    plain = inspect(io.BytesIO(data), "audio/3gpp")
    assert plain.detected_type == "video/3gpp" and plain.mismatch  # libmagic alone
    info = facts_of(data, "audio/3gpp")
    assert (info.detected_type, info.kind, info.extension) == ("audio/3gpp", "audio", "3gp")
    assert not info.mismatch
    assert info.codecs == ("aac",)
    assert info.duration_seconds == pytest.approx(2.0, abs=0.2)
    assert "3gp" in info.container
    verdict = check(info, POLICY)
    assert verdict.accepted and verdict.detail == ""


def test_video_3gpp_stays_video_with_its_codecs_and_size() -> None:
    info = facts_of(avfiles.video_3gp(), "video/3gpp")
    assert (info.detected_type, info.kind) == ("video/3gpp", "video")
    assert info.codecs == ("h263", "aac")
    assert (info.width, info.height) == (176, 144)
    assert info.rotation == 0


def test_audio_only_mp4_is_audio_mp4() -> None:
    info = facts_of(avfiles.audio_only_mp4(), "audio/mp4")
    assert (info.detected_type, info.kind, info.extension) == ("audio/mp4", "audio", "m4a")
    assert not info.mismatch


@pytest.mark.parametrize("cut", [0.5, 0.1])
def test_truncated_files_give_no_facts_and_no_error(cut: float) -> None:
    data = avfiles.video_3gp()
    truncated = data[: int(len(data) * cut)]
    fp = io.BytesIO(truncated)
    facts = probe(fp)
    assert fp.tell() == 0
    if facts is not None:  # ffprobe may still read the header of a half file
        assert facts.has_video
    info = with_av_facts(inspect(io.BytesIO(truncated), "video/3gpp"), facts)
    assert info.kind == "video"


def test_not_media_gives_none() -> None:
    assert probe(io.BytesIO(b"\x00" * 100)) is None


def test_version_line() -> None:
    version = ffprobe_version()
    assert version is not None and version.startswith("ffprobe version")


def test_mp4_with_the_moov_atom_at_the_end_is_read() -> None:
    data = avfiles.audio_only_mp4()
    assert data.index(b"moov") > data.index(b"mdat")  # ffmpeg's default layout: index last
    facts = probe(io.BytesIO(data))
    assert facts is not None and facts.has_audio and not facts.has_video
    assert facts.duration_seconds == pytest.approx(2.0, abs=0.2)
