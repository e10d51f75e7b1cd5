"""Preparing attachments: fetched or read, inspected, checked, fixed or refused with the fix.

Every case runs the real fetcher, inspector, policy, transform and storage; media URLs
are served over real HTTP by the loopback media server.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from receiver.errors import OutboundError
from receiver.outbound import OutboundRequest, short_filename, sms_segments, validate_request
from tests.outbound.conftest import RECIPIENT, SENDER, Running, req, write
from tests.support import samples
from tests.support.mediaserver import MediaServer
from tests.support.services import free_port


def refused(service: Running, request: OutboundRequest, reason: str) -> str:
    with pytest.raises(OutboundError) as info:
        service.outbound.prepare(request, host=False)
    assert info.value.reason == reason, str(info.value)
    return str(info.value)


# -- fixed --------------------------------------------------------------------------------


def test_heic_becomes_jpeg_without_gps(service: Running, tmp_path: Path) -> None:
    source = write(tmp_path, "shoes.heic", samples.heic(gps=True))
    prepared = service.outbound.prepare(req(source))
    (item,) = prepared.media
    assert (item.content_type, item.filename) == ("image/jpeg", "shoes.jpg")
    assert "converted image/heic to image/jpeg" in item.changes
    with service.services.store.open(item.key) as fh:
        im = Image.open(io.BytesIO(fh.read()))
    assert im.format == "JPEG" and not im.getexif()


@pytest.mark.parametrize("maker", [samples.webp, samples.bmp, samples.tiff])
def test_webp_bmp_tiff_become_jpeg(service: Running, tmp_path: Path, maker: Any) -> None:
    name = {"webp": "a.webp", "bmp": "a.bmp", "tiff": "a.tiff"}[maker.__name__]
    prepared = service.outbound.prepare(req(write(tmp_path, name, maker())), host=False)
    assert prepared.media[0].content_type == "image/jpeg"


def test_oversize_jpeg_is_fitted_to_5mb_then_to_the_carrier_budget(
    service: Running, tmp_path: Path
) -> None:
    source = write(tmp_path, "IMG_0001.jpg", samples.camera_jpeg_12mp())
    assert Path(source).stat().st_size > 5_000_000
    (item,) = service.outbound.prepare(req(source), host=False).media
    # Re-encoded once at full resolution: quality 95 4:4:4 -> 85 4:2:0 already fits.
    assert item.size <= 5_000_000 and (item.width, item.height) == (4000, 3000)
    (small,) = service.outbound.prepare(req(source, carrier_budget=600_000), host=False).media
    assert 300_000 < small.size <= 600_000
    assert any(c.startswith("resized 4000x3000 to ") for c in small.changes)


def test_two_big_photos_share_the_message_budget(service: Running, tmp_path: Path) -> None:
    a = write(tmp_path, "a.jpg", samples.camera_jpeg_12mp())
    b = write(tmp_path, "b.png", samples.png(1200, 900))
    small = write(tmp_path, "c.jpg", samples.jpeg(64, 48))
    prepared = service.outbound.prepare(req(a, b, small, carrier_budget=1_000_000), host=False)
    assert prepared.total_bytes <= 1_000_000
    assert prepared.media[2].size < 5000  # small files keep their size


def test_oversize_animated_gif_keeps_its_animation(service: Running, tmp_path: Path) -> None:
    data = samples.gif_photo_animated()
    source = write(tmp_path, "promo.gif", data)
    prepared = service.outbound.prepare(req(source, carrier_budget=len(data) // 2))
    (item,) = prepared.media
    assert item.content_type == "image/gif" and item.size <= len(data) // 2
    with service.services.store.open(item.key) as fh:
        im = Image.open(io.BytesIO(fh.read()))
        assert im.format == "GIF" and im.n_frames == 12


def test_text_only_message_is_sms(service: Running) -> None:
    prepared = service.outbound.prepare(req(body="plain text"))
    assert (prepared.mode, prepared.media, prepared.segments) == ("sms", (), 1)


# -- refused, each with the reason and the fix ----------------------------------------------


def test_eleven_attachments(service: Running, tmp_path: Path) -> None:
    path = write(tmp_path, "a.jpg", samples.jpeg())
    message = refused(service, req(*[path] * 11), "too_many_media")
    assert "at most 10" in message and "21623" in message


def test_body_over_1600_characters(service: Running) -> None:
    message = refused(service, req(body="x" * 1601), "body_too_long")
    assert "1601 characters" in message and "shorten" in message


@pytest.mark.parametrize("to", ["555-0100", "+1 555 867 5310", "15558675310", "+0123456789"])
def test_invalid_phone_number(service: Running, to: str) -> None:
    message = refused(service, req(to=to), "invalid_to")
    assert "E.164" in message


def test_no_sender_and_nothing_to_send() -> None:
    with pytest.raises(OutboundError, match="--from"):
        validate_request(OutboundRequest(to=RECIPIENT, body="x"))
    with pytest.raises(OutboundError, match="nothing to send"):
        validate_request(OutboundRequest(to=RECIPIENT, from_=SENDER))


def test_40mb_video(service: Running, tmp_path: Path) -> None:
    source = write(tmp_path, "clip.mp4", samples.mp4_header(size=40_000_000))
    message = refused(service, req(source), "too_large")
    assert "40.0 MB" in message and "does not resize video" in message
    assert "--fallback link" in message


def test_empty_file(service: Running, tmp_path: Path) -> None:
    message = refused(service, req(write(tmp_path, "photo.jpg", b"")), "empty")
    assert "empty" in message and "photo.jpg" in message


def test_gif_bomb(service: Running, tmp_path: Path) -> None:
    source = write(tmp_path, "bomb.gif", samples.gif_many_frames(5000))
    message = refused(service, req(source, fallback="link"), "decompression_bomb")
    assert "frames" in message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_png_decompression_bomb(service: Running, tmp_path: Path) -> None:
    refused(service, req(write(tmp_path, "big.png", samples.png_bomb())), "decompression_bomb")


def test_unsupported_type_names_the_fallback(service: Running, tmp_path: Path) -> None:
    message = refused(
        service, req(write(tmp_path, "a.zip", samples.plain_zip())), "unsupported_type"
    )
    assert "--fallback link" in message


def test_file_that_lies_about_its_type(service: Running, tmp_path: Path) -> None:
    source = write(tmp_path, "photo.jpg", b"<html><body>not a photo</body></html>")
    message = refused(service, req(source), "type_mismatch")
    assert "declared image/jpeg" in message and "text/html" in message


def test_non_us_destination_needs_the_link_fallback(service: Running, tmp_path: Path) -> None:
    source = write(tmp_path, "a.jpg", samples.jpeg())
    message = refused(service, req(source, to="+447700900123"), "mms_not_carried")
    assert "--fallback link" in message


def test_local_storage_without_public_url(
    serve: Any, outbound_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(outbound_env)
    env["RECEIVER_PUBLIC_URL"] = f"http://127.0.0.1:{free_port()}"
    running = serve(env)
    with pytest.raises(OutboundError) as info:
        running.outbound_with(public_url="").prepare(req(write(tmp_path, "a.jpg", samples.jpeg())))
    assert info.value.reason == "no_public_url"
    assert "RECEIVER_PUBLIC_URL" in str(info.value)


def test_files_are_refused_through_the_api_path(service: Running, tmp_path: Path) -> None:
    source = write(tmp_path, "a.jpg", samples.jpeg())
    request = OutboundRequest(to=RECIPIENT, from_=SENDER, media=(source,), allow_files=False)
    refused(service, request, "invalid_media")


# -- media URLs: public hosts only, bytes not claims ------------------------------------------


def test_unreachable_url(service: Running, media: MediaServer) -> None:
    message = refused(service, req(media.url("/missing.jpg")), "fetch_failed")
    assert "404" in message and "without a login" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/a.jpg",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/a.jpg",
        "file:///etc/passwd",
    ],
)
def test_private_urls_are_refused(service: Running, url: str) -> None:
    message = refused(
        service, req(url), "blocked_host" if url.startswith("http") else "invalid_media"
    )
    assert "public" in message or "http(s)" in message


def test_unlisted_loopback_port_is_private(service: Running) -> None:
    message = refused(service, req(f"http://127.0.0.1:{free_port()}/a.jpg"), "blocked_host")
    assert "loopback" in message


def test_redirect_to_a_private_address(service: Running, media: MediaServer) -> None:
    url = media.redirect("/r.jpg", "http://169.254.169.254/latest/meta-data/")
    message = refused(service, req(url), "blocked_host")
    assert "metadata" in message


def test_url_lying_about_its_content_type(service: Running, media: MediaServer) -> None:
    url = media.add("/promo.jpg", b"<html><body>Sign in</body></html>", content_type="image/jpeg")
    message = refused(service, req(url), "type_mismatch")
    assert "text/html" in message and "Content-Type" in message


def test_url_media_is_fetched_once_without_credentials(
    service: Running, media: MediaServer
) -> None:
    url = media.add("/promo.gif", samples.gif_animated(), content_type="image/gif")
    prepared = service.outbound.prepare(req(url), host=False)
    assert prepared.media[0].content_type == "image/gif"
    assert [r.method for r in media.requests] == ["GET"]
    assert media.requests[0].header("authorization") is None


# -- small pure functions -----------------------------------------------------------------------


def test_short_filenames_fit_twenty_characters() -> None:
    assert (
        short_filename("/x/IMG 2024-01-01 holiday photo.heic", "jpg", 0) == "IMG2024-01-01hol.jpg"
    )
    assert len(short_filename("https://e.com/a/very-long-name-of-file.gif?x=1", "gif", 0)) <= 20
    assert short_filename("/tmp/###.jpg", "jpg", 2) == "media3.jpg"


def test_sms_segments() -> None:
    assert sms_segments("a" * 160) == 1 and sms_segments("a" * 161) == 2
    assert sms_segments("é" * 160) == 1  # é is GSM-7
    assert sms_segments("ł" * 70) == 1 and sms_segments("ł" * 71) == 2
    assert sms_segments("{" * 80) == 1 and sms_segments("{" * 81) == 2


# -- malware scanning of outbound files (a real clamd) ------------------------------------


def test_malware_is_refused_before_anything_is_sent(
    service: Running, tmp_path: Path, clamd: Any
) -> None:
    from tests.support.clamd import EICAR, SIG_EICAR_BODY

    scanning = service.outbound_with(clamd_url=clamd.url)
    photo = write(tmp_path, "ok.jpg", samples.jpeg())
    bad = write(tmp_path, "pic.jpg", EICAR)  # declared image/jpeg by its name
    with pytest.raises(OutboundError) as info:
        scanning.prepare(req(photo, bad), host=False)
    assert info.value.reason == "malware"
    assert f"media 2 (pic.jpg): malware: clamd found {SIG_EICAR_BODY}" in str(info.value)
    (item,) = scanning.prepare(req(photo), host=False).media  # clean files still go
    assert item.content_type == "image/jpeg"


def test_scanning_required_and_clamd_away_sends_nothing(service: Running, tmp_path: Path) -> None:
    photo = write(tmp_path, "ok.jpg", samples.jpeg())
    away = f"unix://{tmp_path}/absent.sock"
    with pytest.raises(OutboundError) as info:
        service.outbound_with(clamd_url=away).prepare(req(photo), host=False)
    assert info.value.reason == "scan_unavailable"
    assert "RECEIVER_SCAN=optional" in str(info.value)
    optional = service.outbound_with(clamd_url=away, scan_mode="optional")
    assert len(optional.prepare(req(photo), host=False).media) == 1


def test_over_stream_max_with_scanning_required_is_refused(
    service: Running, tmp_path: Path, clamd: Any
) -> None:
    photo = write(tmp_path, "big.jpg", samples.jpeg(640, 480))
    scanning = service.outbound_with(clamd_url=clamd.url, clamd_stream_max=1000)
    with pytest.raises(OutboundError) as info:
        scanning.prepare(req(photo), host=False)
    assert info.value.reason == "too_large"
    assert "StreamMaxLength of 1,000 bytes" in str(info.value)
