"""Audio and video files made by a real ffmpeg (Debian's `ffmpeg`) from its test sources.

Phones' voice memos are AAC or AMR in a 3GPP container; Debian's ffmpeg has no
AMR encoder, so the memos here are AAC in 3GPP, which libmagic reads the same
way (the brand, not the tracks). Skips locally, fails under CI=true, when
ffmpeg is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.services import require


def ffmpeg(*args: str, fmt: str) -> bytes:
    """The output of `ffmpeg -nostdin <args> -f <fmt>` as bytes."""
    exe = shutil.which("ffmpeg")
    require(exe is not None, "ffmpeg is not installed (apt-get install ffmpeg)")
    assert exe is not None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        subprocess.run(
            [exe, "-nostdin", "-v", "error", "-y", *args, "-f", fmt, str(out)],
            check=True,
            timeout=60,
        )
        return out.read_bytes()


def voice_memo_3gp(seconds: int = 2) -> bytes:
    """Audio only, mono 8 kHz AAC in 3GPP: what a phone's voice recorder sends."""
    return ffmpeg(
        *("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"),
        *("-ac", "1", "-ar", "8000", "-c:a", "aac", "-b:a", "12k"),
        fmt="3gp",
    )


def video_3gp(seconds: int = 2) -> bytes:
    """QCIF H.263 video with AAC audio in 3GPP, as older phones record."""
    return ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc=size=176x144:rate=10:duration={seconds}"),
        *("-f", "lavfi", "-i", f"sine=duration={seconds}"),
        *("-c:v", "h263", "-c:a", "aac", "-ar", "8000", "-ac", "1", "-shortest"),
        fmt="3gp",
    )


def audio_only_mp4(seconds: int = 2) -> bytes:
    """AAC in an MP4 with the isom brand (not M4A), which libmagic calls video/mp4."""
    return ffmpeg(*("-f", "lavfi", "-i", f"sine=duration={seconds}"), "-c:a", "aac", fmt="mp4")


def ffmpeg_from(inputs: list[tuple[bytes, str]], *args: str, fmt: str) -> bytes:
    """`ffmpeg` over files holding `inputs` (bytes, suffix), e.g. to mux AMR into 3GPP."""
    with tempfile.TemporaryDirectory() as tmp:
        names: list[str] = []
        for n, (data, suffix) in enumerate(inputs):
            path = Path(tmp) / f"in{n}.{suffix}"
            path.write_bytes(data)
            names += ["-i", str(path)]
        return ffmpeg(*names, *args, fmt=fmt)


def amr_voice_note(seconds: int = 3) -> bytes:
    """An AMR-NB voice note (12.2 kbit/s frames; 50 frames a second)."""
    from tests.support.facts_corpus import amr_nb

    return amr_nb(frames=50 * seconds)


def video_3gp_amr(seconds: int = 3) -> bytes:
    """QCIF H.263 video with AMR-NB audio in 3GPP: an older phone's video. Debian's ffmpeg
    cannot encode AMR, so the AMR frames are muxed in as they are."""
    video = ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc=size=176x144:rate=10:duration={seconds}"),
        *("-c:v", "h263"),
        fmt="3gp",
    )
    return ffmpeg_from(
        [(video, "3gp"), (amr_voice_note(seconds), "amr")],
        *("-map", "0:v", "-map", "1:a", "-c", "copy"),
        fmt="3gp",
    )


def quicktime_h264(seconds: int = 2) -> bytes:
    """H.264/AAC in a QuickTime (.mov) container, as an iPhone records."""
    return ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc=size=160x120:rate=15:duration={seconds}"),
        *("-f", "lavfi", "-i", f"sine=duration={seconds}"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"),
        "-shortest",
        fmt="mov",
    )


def mp4_h264(seconds: int = 2, *, faststart: bool = False, rate: int = 15) -> bytes:
    """H.264/AAC MP4; without `faststart` the index (moov atom) is at the end."""
    return ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc=size=160x120:rate={rate}:duration={seconds}"),
        *("-f", "lavfi", "-i", f"sine=duration={seconds}"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"),
        "-shortest",
        *(("-movflags", "+faststart") if faststart else ()),
        fmt="mp4",
    )


def many_tiny_frames(frames: int = 10_000) -> bytes:
    """MPEG-4 Part 2 video (which browsers do not play) of `frames` 16x16 frames."""
    return ffmpeg(
        *("-f", "lavfi", "-i", f"color=c=red:size=16x16:rate=1000:duration={frames / 1000}"),
        *("-c:v", "mpeg4", "-q:v", "31"),
        fmt="mp4",
    )


def ten_hours_of_silence() -> bytes:
    """Ten hours of AMR-NB "no data" frames: one byte every 20 ms, 1.8 MB in all."""
    return b"#!AMR\n" + bytes([15 << 3 | 0x04]) * (10 * 3600 * 50)


def mp4_reading_past_its_end() -> bytes:
    """A fast-start MP4 whose chunk offsets (stco) point 100 MB past the end of the file."""
    data = bytearray(mp4_h264(2, faststart=True))
    at = data.find(b"stco")
    while at != -1:
        count = int.from_bytes(data[at + 8 : at + 12], "big")
        for n in range(count):
            pos = at + 12 + 4 * n
            offset = int.from_bytes(data[pos : pos + 4], "big") + 100_000_000
            data[pos : pos + 4] = offset.to_bytes(4, "big")
        at = data.find(b"stco", at + 4)
    return bytes(data)


def busy_video(seconds: int = 5) -> bytes:
    """720p MPEG-4 Part 2 at 30 frames a second: several CPU seconds to turn into H.264."""
    return ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}"),
        *("-c:v", "mpeg4"),
        fmt="mp4",
    )
