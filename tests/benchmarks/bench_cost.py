"""The cost model of one inbound MMS: CPU microseconds of each step, measured one at a time.

    python tests/benchmarks/bench_cost.py [--messages 60]

Each step runs on this thread, uncontended, with the real parts (SQLite index,
local store with fsync, the Fetcher against a loopback media server, Pillow),
and is timed with `time.thread_time()`: the CPU this thread spent, not the
wall time it waited. The message is the one `bench_inbound.py` sends (3 JPEGs
of about 300 KB); the tutorial's own work is measured the same way, so the two
columns of `docs/performance.md` come from the same run. The sum is the floor
of a message's cost; `bench_inbound.py` shows what concurrency adds to it.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from PIL import Image
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from receiver.index.records import MediaItem  # noqa: E402
from receiver.media.inspect import inspect  # noqa: E402
from receiver.media.policy import check  # noqa: E402
from receiver.media.transform import THUMBNAIL_QUALITY, make_thumbnail  # noqa: E402
from receiver.services import build_services  # noqa: E402
from receiver.settings import Settings  # noqa: E402
from receiver.storage.keys import derived_key, media_key  # noqa: E402
from receiver.twilio.signature import compute_signature  # noqa: E402
from receiver.twilio.webhook import parse_inbound  # noqa: E402
from receiver.web.app import build_app  # noqa: E402
from tests.benchmarks.bench_inbound import noisy_jpeg  # noqa: E402
from tests.support.mediaserver import MediaServer  # noqa: E402
from tests.support.webhooks import TOKEN, inbound_params, media_path, new_sid  # noqa: E402

FILES = 3


class Clock:
    """Sums this thread's CPU time per step name."""

    def __init__(self) -> None:
        self.spent: dict[str, list[float]] = defaultdict(list)

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        started = time.thread_time()
        value = fn()
        self.spent[name].append(time.thread_time() - started)
        return value


def receiver_message(svc: Any, app: Any, media: MediaServer, payload: bytes, clock: Clock) -> None:
    sid = new_sid()
    urls = [
        (media.add(media_path(sid, i), payload, content_type="image/jpeg"), "image/jpeg")
        for i in range(FILES)
    ]
    params = inbound_params(sid, media=urls)
    pipeline = svc.pipeline
    msg = clock("parse webhook parameters", lambda: parse_inbound(params))
    ingested = clock("ingest: commit message + 3 media rows", lambda: pipeline.ingest(msg))
    thumbs = []
    for row in ingested.items:
        row: MediaItem
        result = clock(
            "fetch 305 KB (requests, pinned, hashed)",
            lambda: svc.fetcher.fetch(row.url, max_bytes=svc.settings.max_media_bytes),
        )
        with result.file as fp:
            info = clock(
                "inspect (libmagic, image header)",
                lambda: inspect(fp, row.declared_type, size=result.size),
            )
            clock("policy check", lambda: check(info, pipeline.policy))
            key = media_key(msg.account_sid, sid, row.idx, row.media_sid, info.extension)
            fp.seek(0)
            clock(
                "store original (temp, fsync, rename, dir fsync)",
                lambda: svc.store.put(
                    key,
                    fp,
                    content_type=info.detected_type,
                    size=result.size,
                    metadata={"sha256": result.sha256, "message-sid": sid},
                ),
            )
        clock(
            "record outcome (finish_media)",
            lambda: svc.index.finish_media(
                row.id,
                pipeline.owner,
                state="stored",
                reason=None,
                detail=None,
                storage_key=key,
                detected_type=info.detected_type,
                kind=info.kind,
                size_bytes=result.size,
                sha256=result.sha256,
                width=info.width,
                height=info.height,
                facts={"mismatch": False},
            ),
        )

        def thumbnail() -> Any:
            with svc.store.open(key) as fp:
                return make_thumbnail(fp)

        thumb = clock("thumbnail: read, decode at 1/2, resize, encode", thumbnail)
        tkey = derived_key(key, "thumb", thumb.extension)
        clock(
            "store thumbnail",
            lambda: svc.store.put_bytes(tkey, thumb.data, content_type=thumb.content_type),
        )
        thumbs.append((row.id, tkey))
    clock("record 3 thumbnails (one transaction)", lambda: svc.index.set_thumbnails(thumbs))
    message = clock("read the message back for the reply", lambda: svc.index.get_message(sid))
    clock(
        "render the reply (Jinja + lxml TwiML)",
        lambda: svc.replies.twiml("message.txt", **svc.replies.context(message)),
    )
    sms = inbound_params(new_sid("SM"), body="hello")
    url = "http://localhost/twilio/messaging"
    headers = {"X-Twilio-Signature": compute_signature(TOKEN, url, sms)}
    environ = EnvironBuilder(
        "/twilio/messaging", method="POST", data=MultiDict(sms), headers=headers
    ).get_environ()

    def webhook() -> None:
        seen: list[str] = []
        b"".join(app(environ, lambda status, _headers: seen.append(status)))
        if not seen[0].startswith("200"):
            raise RuntimeError(f"webhook answered {seen[0]}")

    clock("whole webhook of an SMS via Flask (verify, parse, ingest, reply)", webhook)


def thumbnail_stages(payload: bytes, clock: Clock) -> None:
    """The stages inside one `make_thumbnail` of the payload, as it does them."""
    im = clock("  open and read the JPEG header", lambda: Image.open(io.BytesIO(payload)))

    def decode() -> Image.Image:
        im.draft("RGB", (im.width // 2, im.height // 2))
        im.load()
        return im.copy()

    frame = clock("  entropy-decode at 1/2 scale (DCT scaling)", decode)
    clock(
        "  resize to 320 px (bilinear)",
        lambda: frame.thumbnail((320, 320), Image.Resampling.BILINEAR, reducing_gap=2.0),
    )
    clock(
        "  encode the JPEG thumbnail (quality 80)",
        lambda: frame.save(io.BytesIO(), "JPEG", quality=THUMBNAIL_QUALITY),
    )


def tutorial_message(media: MediaServer, payload: bytes, out: Path, clock: Clock) -> None:
    sid = new_sid()
    for i in range(FILES):
        url = media.add(media_path(sid, i), payload, content_type="image/jpeg")
        data = clock("tutorial: requests.get(url).content", lambda: requests.get(url).content)

        def write() -> None:
            with open(out / f"{sid}-{i}.jpg", "wb") as fh:
                fh.write(data)

        clock("tutorial: write the file", write)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=60)
    args = parser.parse_args()
    payload = noisy_jpeg()
    with tempfile.TemporaryDirectory() as work, MediaServer() as media:
        settings = Settings.from_env(
            {
                "RECEIVER_DATA_DIR": work,
                "TWILIO_AUTH_TOKEN": TOKEN,
                "RECEIVER_MEDIA_HOSTS": media.host_port,
                "RECEIVER_API_TOKEN": "bench-api-token-0123456789abcdef",
                "RECEIVER_ADMIN_PASSWORD": "bench-admin-password",
            }
        )
        svc = build_services(settings)
        app = build_app(settings, svc)
        out = Path(work) / "tutorial"
        out.mkdir()
        ours, tutorial, stages = Clock(), Clock(), Clock()
        for n in range(args.messages + 5):
            clock, base = (Clock(), Clock()) if n < 5 else (ours, tutorial)  # 5 to warm up
            receiver_message(svc, app, media, payload, clock)
            for _ in range(FILES):
                thumbnail_stages(payload, stages if n >= 5 else Clock())
            tutorial_message(media, payload, out, base)
        svc.pipeline.shutdown()
    print(
        f"cost of one message (3 JPEGs of {len(payload) // 1000} KB), CPU microseconds "
        f"(median of {args.messages}, this thread only)"
    )
    for title, clock in (
        ("mms-receiver", ours),
        ("inside the thumbnails (3 per message)", stages),
        ("tutorial app", tutorial),
    ):
        total = 0.0
        print(f"\n{title}:")
        for name, spent in clock.spent.items():
            per_message = statistics.median(spent) * len(spent) / args.messages
            total += per_message
            print(f"  {per_message * 1e6:9.0f}  {name}")
        print(f"  {total * 1e6:9.0f}  total")


if __name__ == "__main__":
    main()
