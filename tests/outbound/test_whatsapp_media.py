"""Outbound media rules per channel: WhatsApp (JPEG/PNG up to 5 MB, other types up to
16 MB, one file, no animations) and RCS (MMS's 5 MB, its fallback), through the real
inspector, policy and transform."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path
from typing import Any

import pytest

from receiver.errors import OutboundError
from receiver.media.inspect import inspect
from receiver.media.policy import check, mms_policy, whatsapp_policy
from receiver.media.probe import probe
from receiver.media.transform import animation_to_mp4
from receiver.outbound import OutboundRequest
from tests.outbound.conftest import Running, write
from tests.support import samples
from tests.support.services import require

WA_TO = "whatsapp:+447700900123"
WA_FROM = "whatsapp:+15017122661"


def wa(*media: str, to: str = WA_TO) -> OutboundRequest:
    return OutboundRequest(to=to, from_=WA_FROM, body="Your order", media=media)


def big_pdf(size: int) -> bytes:
    """A PDF made `size` bytes long by a comment line after its header."""
    data = samples.pdf()
    assert data.startswith(b"%PDF-1.4\n")
    return data.replace(b"%PDF-1.4\n", b"%PDF-1.4\n%" + b"x" * size + b"\n", 1)


def refusal(service: Running, request: OutboundRequest) -> OutboundError:
    with pytest.raises(OutboundError) as caught:
        service.outbound.prepare(request, host=False)
    return caught.value


def test_whatsapp_photo_is_fitted_to_5mb_outside_the_us(service: Running, tmp_path: Path) -> None:
    source = write(tmp_path, "IMG_0001.jpg", samples.camera_jpeg_12mp())
    assert Path(source).stat().st_size > 5_000_000
    prepared = service.outbound.prepare(wa(source), host=False)
    (item,) = prepared.media
    assert prepared.mode == "mms"
    assert item.content_type == "image/jpeg" and item.size <= 5_000_000


def test_whatsapp_heic_becomes_jpeg(service: Running, tmp_path: Path) -> None:
    (item,) = service.outbound.prepare(
        wa(write(tmp_path, "a.heic", samples.heic())), host=False
    ).media
    assert item.content_type == "image/jpeg"


def test_whatsapp_document_may_be_larger_than_mms_allows(service: Running, tmp_path: Path) -> None:
    data = big_pdf(7_000_000)
    pdf = write(tmp_path, "invoice.pdf", data)
    (item,) = service.outbound.prepare(wa(pdf), host=False).media
    assert item.content_type == "application/pdf" and item.size == len(data)
    # The same file to RCS keeps MMS's limits (MMS is its fallback).
    rcs = OutboundRequest(
        to="rcs:+15558675310", from_=WA_FROM.replace("whatsapp", "rcs"), media=(pdf,)
    )
    assert refusal(service, rcs).reason == "too_large"


def test_whatsapp_animation_becomes_an_mp4(service: Running, tmp_path: Path) -> None:
    require(shutil.which("ffmpeg") is not None, "ffmpeg is not installed")
    gif = write(tmp_path, "party.gif", samples.gif_animated())
    (item,) = service.outbound.prepare(wa(gif), host=False).media
    assert (item.content_type, item.kind, item.filename) == ("video/mp4", "video", "party.mp4")
    assert item.changes == ("converted animated image/gif to video/mp4",)
    probed = probe(io.BytesIO(converted_again(gif, item)))
    assert probed is not None and probed.has_video and not probed.has_audio


def converted_again(source: str, item: Any) -> bytes:
    """The MP4 made from `source` again; ffmpeg is deterministic, so it is the prepared one."""
    data = animation_to_mp4(io.BytesIO(Path(source).read_bytes()))
    assert data is not None and hashlib.sha256(data).hexdigest() == item.sha256
    return data


def test_whatsapp_refuses_an_animation_it_cannot_convert_with_the_fix() -> None:
    data = samples.gif_animated()
    info = inspect(io.BytesIO(data), "image/gif", size=len(data))
    verdict = check(info, whatsapp_policy())
    assert verdict.reason == "unsupported_type" and not verdict.fixable
    assert "animated image/gif" in verdict.detail and "ffmpeg -i in.gif" in verdict.detail
    # MMS plays animations: the same file passes its policy.
    assert check(info, mms_policy()).accepted


def test_whatsapp_carries_one_file_per_message(service: Running, tmp_path: Path) -> None:
    a = write(tmp_path, "a.jpg", samples.jpeg(64, 48))
    b = write(tmp_path, "b.jpg", samples.jpeg(64, 48))
    error = refusal(service, wa(a, b))
    assert error.reason == "too_many_media" and "at most 1" in str(error)


def test_whatsapp_refuses_types_it_does_not_play(service: Running, tmp_path: Path) -> None:
    error = refusal(service, wa(write(tmp_path, "card.rtf", b"{\\rtf1\\ansi hello}")))
    assert error.reason == "unsupported_type" and "whatsapp" in str(error)
