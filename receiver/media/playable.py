"""Browser-playable copies and poster frames of audio and video, made by ffmpeg.

Phones send AMR voice notes, 3GPP video with H.263 and AMR audio, and
QuickTime; browsers play none of these. `plan` is the one rule that decides
from the detected type and ffprobe's codecs whether a file needs a copy, and
which: H.264/AAC in MP4 for video, AAC in M4A for audio.

ffmpeg is optional at run time (`check` says when it is missing): without it
there are no copies and no posters. Every run has a wall-clock limit, CPU,
memory and output-size caps (setrlimit in the child) and no stdin, so a file
that makes ffmpeg fail or hang ends in a `Failed` with a machine-readable
reason, never in a stuck thread. These functions are slow (seconds): they
belong on the derivative thread (receiver.inbound.playable), never on the
answer path. Why the rule is what it is: docs/design.md ("Playable copies").
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from receiver.media.probe import AVFacts, probe
from receiver.media.transform import Derived, make_thumbnail

__all__ = [
    "COPY_AUDIO",
    "COPY_VIDEO",
    "Copy",
    "Failed",
    "Limits",
    "Plan",
    "Target",
    "ffmpeg_path",
    "ffmpeg_version",
    "make_copy",
    "make_poster",
    "plan",
    "workdir",
]

#: Containers every current browser (Chromium, Firefox, Safari) plays, with the codecs it
#: plays inside each. Anything else, or any other codec, gets a copy.
BROWSER_PLAYS: dict[str, frozenset[str]] = {
    "video/mp4": frozenset({"h264", "aac", "mp3"}),
    "audio/mp4": frozenset({"aac", "mp3"}),
    "audio/mpeg": frozenset({"mp3"}),
    "audio/aac": frozenset({"aac"}),
    "audio/wav": frozenset({"pcm_s16le", "pcm_u8", "pcm_f32le"}),
    "audio/flac": frozenset({"flac"}),
}
#: Codecs an MP4 copy can carry as they are (a remux, no re-encoding).
REMUXABLE_VIDEO = frozenset({"h264", "aac", "mp3"})
REMUXABLE_AUDIO = frozenset({"aac", "mp3"})


@dataclass(frozen=True)
class Target:
    """What a copy is: its container's MIME type and the key extension."""

    content_type: str
    extension: str
    video: bool


COPY_VIDEO = Target("video/mp4", "mp4", video=True)
COPY_AUDIO = Target("audio/mp4", "m4a", video=False)


@dataclass(frozen=True)
class Plan:
    """Whether a file needs a copy to play in a browser, and which."""

    #: None: the original plays as it is.
    target: Target | None
    #: True when the codecs fit the target and only the container changes (fast, lossless).
    remux: bool = False


@dataclass(frozen=True)
class Limits:
    """What one ffmpeg run may use. The defaults suit MMS-sized files on a small host."""

    #: Wall-clock seconds before the run is killed.
    timeout: float = 120.0
    #: CPU seconds (all threads together) before the kernel stops it (SIGXCPU/SIGKILL).
    cpu_seconds: int = 120
    #: Address space in bytes: Debian's ffmpeg maps about 300 MB of libraries before it
    #: starts, and x264 at 720p needs a few hundred MB more.
    memory_bytes: int = 1536 * 1024 * 1024
    #: The largest file ffmpeg may write (RLIMIT_FSIZE): a runaway output stops here.
    output_bytes: int = 256 * 1024 * 1024
    #: Longer media is not copied (a recorded reason, `too_long`); `-t` also stops
    #: the output there when the probed duration was wrong.
    max_seconds: float = 1800.0
    threads: int = 2


@dataclass(frozen=True)
class Copy:
    """A playable copy on disk (the caller stores it and removes the directory)."""

    path: Path
    target: Target
    size: int
    facts: AVFacts
    remuxed: bool


@dataclass(frozen=True)
class Failed:
    """Why no copy (or poster) was made: a machine-readable reason and a human detail."""

    #: too_long, timeout, cpu_limit, memory_limit, output_too_large, unreadable, ffmpeg_missing
    reason: str
    detail: str


def plan(kind: str | None, detected_type: str | None, codecs: Sequence[str]) -> Plan:
    """The one rule: which audio/video files need a playable copy, and of what kind.

    Unknown codecs (ffprobe missing or unable to read the file) mean a copy is
    tried: ffmpeg then either makes one or records why it could not.
    """
    if kind not in ("audio", "video"):
        return Plan(None)
    base = (detected_type or "").split(";", 1)[0].strip().lower()
    known = frozenset(codecs)
    plays = BROWSER_PLAYS.get(base)
    if plays is not None and known and known <= plays:
        return Plan(None)
    if kind == "video":
        return Plan(COPY_VIDEO, remux=bool(known) and "h264" in known and known <= REMUXABLE_VIDEO)
    return Plan(COPY_AUDIO, remux=bool(known) and known <= REMUXABLE_AUDIO)


def ffmpeg_path() -> str | None:
    """ffmpeg on PATH (Debian's `ffmpeg` package), or None."""
    return shutil.which("ffmpeg")


def ffmpeg_version() -> str | None:
    """The first line of `ffmpeg -version`, or None when ffmpeg is missing or broken."""
    path = ffmpeg_path()
    if path is None:
        return None
    try:
        out = subprocess.run(
            [path, "-version"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.stdout.decode("utf-8", errors="replace").splitlines()
    return first[0].strip() if out.returncode == 0 and first else None


def make_copy(
    source: Path,
    workdir: Path,
    chosen: Plan,
    *,
    duration: float | None = None,
    limits: Limits | None = None,
) -> Copy | Failed:
    """Make the copy `chosen` of the file at `source` inside `workdir`.

    A remux that ffmpeg refuses (odd timestamps, a stream MP4 cannot hold)
    falls back to re-encoding. The result is checked with ffprobe: a copy
    without the expected track is `unreadable`, never served.
    """
    limits = limits or Limits()
    target = chosen.target
    if target is None:
        raise ValueError("make_copy: the plan says the original plays; there is nothing to copy")
    if duration is not None and duration > limits.max_seconds:
        return Failed(
            "too_long",
            f"{duration:,.0f} s is over the {limits.max_seconds:,.0f} s limit for playable copies",
        )
    out = workdir / f"playable.{target.extension}"
    attempts = [True, False] if chosen.remux else [False]
    result: Failed | None = None
    for remux in attempts:
        args = _copy_args(source, out, target, remux=remux, limits=limits)
        result = _run(args, limits)
        if result is None:
            made = _check_output(out, target)
            if isinstance(made, AVFacts):
                return Copy(out, target, out.stat().st_size, made, remuxed=remux)
            result = made
        if result.reason in ("timeout", "cpu_limit", "memory_limit", "output_too_large"):
            break  # re-encoding would only cost more
    assert result is not None
    return result


def make_poster(
    source: Path,
    workdir: Path,
    *,
    duration: float | None = None,
    limits: Limits | None = None,
) -> Derived | Failed:
    """A thumbnail (with its perceptual hash) of one frame near the start of a video.

    The frame is a second in (or a tenth of a shorter clip), past the black or
    blurred first frames; ffmpeg applies the display rotation.
    """
    limits = limits or Limits()
    frame = workdir / "poster.png"
    at = min(1.0, duration / 10) if duration else 0.0
    result: Failed | None = None
    for seek in dict.fromkeys((at, 0.0)):
        frame.unlink(missing_ok=True)
        args = [
            *("-ss", f"{seek:.3f}", "-i", str(source)),
            *("-map", "0:v:0", "-frames:v", "1", "-an", "-sn"),
            *("-f", "image2", "-c:v", "png", str(frame)),
        ]
        result = _run(args, limits)
        if result is None and frame.exists() and frame.stat().st_size > 0:
            try:
                with frame.open("rb") as fp:
                    return make_thumbnail(fp)
            except (ValueError, OSError) as exc:
                return Failed("unreadable", f"the poster frame could not be read: {exc}")
        if result is None:
            result = Failed("unreadable", f"ffmpeg found no video frame at {seek:.1f} s")
    assert result is not None
    return result


def _copy_args(
    source: Path, out: Path, target: Target, *, remux: bool, limits: Limits
) -> list[str]:
    args = ["-i", str(source), "-t", f"{limits.max_seconds:.0f}"]
    if target.video:
        args += ["-map", "0:v:0", "-map", "0:a:0?", "-sn", "-dn"]
        if remux:
            args += ["-c", "copy"]
        else:
            # Even sizes for yuv420p, at most 1280 wide; Main profile and yuv420p play
            # everywhere, including Safari on older iPhones.
            args += [
                *("-vf", "scale='trunc(min(iw,1280)/2)*2':-2"),
                *("-c:v", "libx264", "-preset", "veryfast", "-crf", "26"),
                *("-profile:v", "main", "-pix_fmt", "yuv420p"),
                *("-c:a", "aac", "-b:a", "96k", "-ar", "44100"),
            ]
    else:
        args += ["-map", "0:a:0", "-vn", "-sn", "-dn"]
        args += ["-c:a", "copy"] if remux else ["-c:a", "aac", "-b:a", "64k", "-ar", "44100"]
    # The index first, so a browser starts playing before the whole file arrives.
    return [*args, "-movflags", "+faststart", "-f", "mp4", str(out)]


def _run(args: list[str], limits: Limits) -> Failed | None:
    """Run ffmpeg with `args` under `limits`; None when it succeeded."""
    exe = ffmpeg_path()
    if exe is None:
        return Failed("ffmpeg_missing", "ffmpeg is not installed (apt-get install ffmpeg)")
    cmd = [exe, "-nostdin", "-hide_banner", "-v", "error", "-y", "-threads", str(limits.threads)]
    try:
        done = subprocess.run(
            [*cmd, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=limits.timeout,
            preexec_fn=lambda: _limit_child(limits),
            check=False,
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        return Failed("timeout", f"ffmpeg ran over its {limits.timeout:.0f} s limit; stopped")
    except OSError as exc:
        return Failed("ffmpeg_missing", f"ffmpeg could not run: {exc}")
    if done.returncode == 0:
        return None
    return _failure(done.returncode, done.stderr, limits)


def _limit_child(limits: Limits) -> None:  # pragma: no cover - runs in the child
    # Soft = hard: the kernel sends SIGKILL at once (ffmpeg catches SIGXCPU and tidies up).
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Below the webhook threads, like the thumbnail thread (an unprivileged process may
    # only lower its own priority, so this never fails for lack of rights).
    os.nice(10)


def _failure(code: int, stderr: bytes, limits: Limits) -> Failed:
    last = [line for line in stderr.decode("utf-8", errors="replace").splitlines() if line]
    said = last[-1].strip()[:300] if last else ""
    signals = {
        -signal.SIGXCPU: ("cpu_limit", f"ffmpeg used its {limits.cpu_seconds} s of CPU"),
        # RLIMIT_CPU's SIGKILL (the wall-clock kill is TimeoutExpired, handled before).
        -signal.SIGKILL: ("cpu_limit", f"ffmpeg used its {limits.cpu_seconds} s of CPU"),
        -signal.SIGXFSZ: (
            "output_too_large",
            f"the copy grew over {limits.output_bytes:,} bytes",
        ),
    }
    if code in signals:
        return Failed(*signals[code])
    # Under RLIMIT_AS the loader fails first ("failed to map segment": Debian's ffmpeg
    # maps about 300 MB of libraries), or an allocation does later.
    if any(m in said for m in ("Cannot allocate memory", "failed to map segment")) or (
        "out of memory" in said.lower()
    ):
        return Failed("memory_limit", f"ffmpeg ran out of its {limits.memory_bytes:,} bytes")
    if "File too large" in said:
        return Failed("output_too_large", f"the copy grew over {limits.output_bytes:,} bytes")
    return Failed("unreadable", f"ffmpeg could not convert it (exit {code}): {said}".rstrip(": "))


def _check_output(out: Path, target: Target) -> AVFacts | Failed:
    """ffprobe's facts of a finished copy, or why it is not one."""
    if not out.exists() or out.stat().st_size == 0:
        return Failed("unreadable", "ffmpeg finished without writing a copy")
    with out.open("rb") as fp:
        facts = probe(fp)
    if (
        facts is None
        or (target.video and not facts.has_video)
        or not (facts.has_video or facts.has_audio)
    ):
        return Failed("unreadable", "ffmpeg wrote a copy with no playable track")
    return facts


def workdir() -> tempfile.TemporaryDirectory[str]:
    """A private temporary directory for one file's copy and poster."""
    return tempfile.TemporaryDirectory(prefix="playable-")
