"""Time to a playable copy of a 30 s 3GP, with plain ffmpeg runs of the same file as baselines.

    python tests/benchmarks/bench_playable.py [--seconds 30] [--rounds 3]

The file is what an older phone records: QCIF H.263 at 15 frames a second with
AMR-NB audio in 3GPP (made here with ffmpeg; Debian's ffmpeg cannot encode AMR,
so the AMR frames are generated and muxed in). Same-run baselines on the same
file: ffprobe's facts (what the answer path already pays), a stream copy
(`ffmpeg -c copy`, the least any rewrite costs) and a decode-only pass
(`-f null`, the least a transcode costs). Then `make_copy` alone (ffmpeg under
its limits plus the ffprobe check of the result), the poster frame, and the
whole path through the service: the webhook is answered, then
`GET /api/media/<id>/playable` is polled until it answers 200. Medians of
`--rounds`; the load average is printed, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from receiver import create_app  # noqa: E402
from receiver.media.playable import make_copy, make_poster, plan  # noqa: E402
from receiver.media.probe import probe  # noqa: E402
from receiver.settings import Settings  # noqa: E402
from tests.conftest import AUTH, base_env  # noqa: E402
from tests.support import avfiles  # noqa: E402
from tests.support.mediaserver import MediaServer  # noqa: E402
from tests.support.webhooks import WebhookPoster, inbound_params, media_path, new_sid  # noqa: E402


def phone_3gp(seconds: int) -> bytes:
    video = avfiles.ffmpeg(
        *("-f", "lavfi", "-i", f"testsrc2=size=176x144:rate=15:duration={seconds}"),
        *("-c:v", "h263", "-b:v", "96k"),
        fmt="3gp",
    )
    return avfiles.ffmpeg_from(
        [(video, "3gp"), (avfiles.amr_voice_note(seconds), "amr")],
        *("-map", "0:v", "-map", "1:a", "-c", "copy"),
        fmt="3gp",
    )


def timed(fn: Callable[[], object], rounds: int) -> float:
    runs = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def ffmpeg_run(*args: str) -> None:
    exe = shutil.which("ffmpeg")
    assert exe is not None
    subprocess.run([exe, "-nostdin", "-v", "error", "-y", *args], check=True, timeout=300)


def through_the_service(data: bytes, rounds: int) -> float:
    """Webhook answered -> /playable answers 200, median seconds."""
    runs = []
    with MediaServer() as server:
        for _ in range(rounds):
            with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
                env = base_env(Path(tmp), RECEIVER_MEDIA_HOSTS=server.host_port)
                app = create_app(Settings.from_env(env))
                try:
                    client = app.test_client()
                    sid = new_sid()
                    url = server.add(media_path(sid, 0), data, content_type="video/3gpp")
                    params = inbound_params(sid, media=[(url, "video/3gpp")])
                    assert WebhookPoster(client).post(params).status_code == 200
                    answered = time.perf_counter()
                    (item,) = client.get(f"/api/messages/{sid}", headers=AUTH).get_json()["media"]
                    while True:
                        status = client.get(
                            f"/api/media/{item['id']}/playable", headers=AUTH
                        ).status_code
                        if status != 202:
                            break
                        time.sleep(0.02)
                    assert status == 200, status
                    runs.append(time.perf_counter() - answered)
                finally:
                    app.extensions["receiver"].close()
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = phone_3gp(args.seconds)
    facts = probe(io.BytesIO(data))
    assert facts is not None
    chosen = plan("video", "video/3gpp", facts.codecs)
    print(
        f"{args.seconds} s 3GP ({', '.join(facts.codecs)}, {facts.width}x{facts.height}), "
        f"{len(data):,} bytes; load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "phone.3gp"
        source.write_bytes(data)
        figures = [
            ("baseline: ffprobe facts", timed(lambda: probe(io.BytesIO(data)), args.rounds)),
            (
                "baseline: ffmpeg stream copy (-c copy)",
                timed(
                    lambda: ffmpeg_run("-i", str(source), "-c", "copy", str(work / "copy.3gp")),
                    args.rounds,
                ),
            ),
            (
                "baseline: ffmpeg decode only (-f null)",
                timed(lambda: ffmpeg_run("-i", str(source), "-f", "null", "-"), args.rounds),
            ),
            (
                "make_copy (H.264/AAC MP4, limits, ffprobe check)",
                timed(
                    lambda: make_copy(source, work, chosen, duration=facts.duration_seconds),
                    args.rounds,
                ),
            ),
            (
                "make_poster (frame + thumbnail + hash)",
                timed(
                    lambda: make_poster(source, work, duration=facts.duration_seconds),
                    args.rounds,
                ),
            ),
        ]
    figures.append(
        (
            "time to a playable copy (webhook answered -> 200)",
            through_the_service(data, args.rounds),
        )
    )
    width = max(len(name) for name, _ in figures)
    for name, seconds in figures:
        print(f"  {name:<{width}}  {seconds * 1000:8.0f} ms")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
