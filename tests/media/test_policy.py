"""Policy verdicts: every reason, in order, inbound and outbound.

Twilio's outbound limits: https://www.twilio.com/docs/messaging/guides/accepted-mime-types and
https://support.twilio.com/hc/en-us/articles/360018832773.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace

import pytest

from receiver.media import types
from receiver.media.inspect import MediaInfo, inspect
from receiver.media.policy import (
    INBOUND_TYPES,
    MMS_TYPES,
    REASONS,
    Policy,
    Verdict,
    check,
    check_count,
    inbound_policy,
    mms_policy,
)
from tests.support import samples

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

MB = 1_000_000
INBOUND = inbound_policy(20 * 1024 * 1024, 50 * 1024 * 1024)
MMS = mms_policy()


def info_of(data: bytes, declared: str | None) -> MediaInfo:
    return inspect(io.BytesIO(data), declared)


def facts(
    detected: str, size: int, *, frames: int | None = None, animated: bool = False
) -> MediaInfo:
    """MediaInfo as inspect would give it for a file of `size` bytes (no need to build one)."""
    return MediaInfo(
        detected_type=detected,
        declared_type=detected,
        kind=types.kind_of(detected),
        extension=types.extension_of(detected),
        size_bytes=size,
        frames=frames,
        animated=animated,
    )


# --- inbound ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "declared"),
    [
        (samples.jpeg(), "image/jpeg"),
        (samples.heic(), "image/heic"),
        (samples.gif_animated(), "image/gif"),
        (samples.webp(), "image/webp"),
        (samples.VCARD_30, "text/vcard"),
        (samples.pdf(), "application/pdf"),
        (samples.mp4_header(), "video/mp4"),
        (samples.docx(), "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        (samples.pkpass(), "application/vnd.apple.pkpass"),
    ],
)
def test_inbound_accepts(data: bytes, declared: str) -> None:
    assert check(info_of(data, declared), INBOUND) == Verdict(True)


def test_every_problem_becomes_its_reason() -> None:
    cases = {
        "empty": info_of(b"", "image/jpeg"),
        "corrupt": info_of(samples.truncated(samples.jpeg(300, 200)), "image/jpeg"),
        "decompression_bomb": info_of(samples.png_bomb(), "image/png"),
    }
    for reason, info in cases.items():
        verdict = check(info, INBOUND)
        assert not verdict.accepted
        assert verdict.reason == reason
        assert verdict.detail
        assert not verdict.fixable
    gif_bomb = info_of(samples.gif_many_frames(3000), "image/gif")
    assert check(gif_bomb, MMS).reason == "decompression_bomb"


def test_problem_comes_before_mismatch() -> None:
    # An empty body declared as an image is "empty", not a type question.
    assert check(info_of(b"", "image/jpeg"), INBOUND).reason == "empty"


@pytest.mark.parametrize(
    "body", [samples.HTML_ERROR_PAGE, samples.TWILIO_401_XML, samples.TWILIO_401_JSON]
)
def test_error_page_declared_as_jpeg_is_a_type_mismatch(body: bytes) -> None:
    verdict = check(info_of(body, "image/jpeg"), INBOUND)
    assert verdict == Verdict(False, "type_mismatch", verdict.detail)
    assert "image/jpeg" in verdict.detail
    assert check(info_of(body, "image/jpeg"), MMS).reason == "type_mismatch"


def test_html_declared_as_html_is_unsupported() -> None:
    verdict = check(info_of(samples.HTML_ERROR_PAGE, "text/html"), INBOUND)
    assert verdict.reason == "unsupported_type"


def test_svg_with_script_is_refused_inbound() -> None:
    as_svg = check(info_of(samples.SVG_WITH_SCRIPT, "image/svg+xml"), INBOUND)
    assert as_svg.reason == "unsupported_type"
    # Declared as a raster image it is refused earlier, as a mismatch.
    as_png = check(info_of(samples.SVG_WITH_SCRIPT, "image/png"), INBOUND)
    assert as_png.reason == "type_mismatch"


@pytest.mark.parametrize(
    ("data", "declared"),
    [
        (samples.WINDOWS_EXE, "application/octet-stream"),
        (samples.plain_zip(), "application/zip"),
        (samples.TWILIO_401_JSON, "application/json"),
    ],
)
def test_executables_archives_and_json_are_unsupported(data: bytes, declared: str) -> None:
    assert check(info_of(data, declared), INBOUND).reason == "unsupported_type"


def test_heic_name_holding_jpeg_is_accepted_and_flagged() -> None:
    info = info_of(samples.jpeg(), "image/heic")
    assert info.mismatch
    verdict = check(info, INBOUND)
    assert verdict.accepted
    assert "image/heic" in verdict.detail and "image/jpeg" in verdict.detail


def test_audio_declared_for_a_video_container_is_not_a_mismatch() -> None:
    # Voice memos arrive as audio/mp4 in an MP4 container libmagic calls video.
    verdict = check(info_of(samples.mp4_header(), "audio/mp4"), INBOUND)
    assert verdict.accepted


def test_vcard_declared_as_plain_text_is_accepted() -> None:
    info = info_of(samples.VCARD_30, "text/plain")
    assert info.kind == "contact" and info.mismatch
    assert check(info, INBOUND).accepted


def test_unknown_application_declaration_is_not_checked_for_kind() -> None:
    verdict = check(info_of(samples.jpeg(), "application/x-unknown-content-type"), INBOUND)
    assert verdict.accepted


def test_inbound_size_caps() -> None:
    policy = inbound_policy(max_file_bytes=1000, max_message_bytes=2500)
    assert check(facts("image/jpeg", 1000), policy).accepted
    too_big = check(facts("image/jpeg", 1001), policy)
    assert (too_big.reason, too_big.fixable) == ("too_large", False)
    assert check(facts("image/jpeg", 1000), policy, message_bytes=1500).accepted
    over = check(facts("image/jpeg", 1000), policy, message_bytes=1501)
    assert over.reason == "message_too_large"


def test_order_type_before_size() -> None:
    policy = inbound_policy(max_file_bytes=10, max_message_bytes=10)
    html = replace(info_of(samples.HTML_ERROR_PAGE, "text/html"), size_bytes=10**9)
    assert check(html, policy).reason == "unsupported_type"


# --- outbound MMS -------------------------------------------------------------------


def test_mms_policy_numbers() -> None:
    assert (MMS.max_files, MMS.max_message_bytes, MMS.max_file_bytes) == (10, 5 * MB, 5 * MB)
    assert MMS.file_limit("image/jpeg") == 5 * MB
    assert MMS.file_limit("application/pdf") == 600_000
    carrier = mms_policy(carrier_budget=600_000)
    assert carrier.max_message_bytes == 600_000
    assert carrier.file_limit("image/gif") == 600_000
    assert mms_policy(carrier_budget=300_000).file_limit("video/mp4") == 300_000


@pytest.mark.parametrize(
    ("make", "declared"),
    [
        (samples.heic, "image/heic"),
        (samples.webp, "image/webp"),
        (samples.bmp, "image/bmp"),
        (samples.tiff, "image/tiff"),
    ],
)
def test_mms_converts_other_image_formats(make: Callable[..., bytes], declared: str) -> None:
    verdict = check(info_of(make(64, 48), declared), MMS)
    assert (verdict.accepted, verdict.reason, verdict.fixable) == (
        False,
        "unsupported_type",
        True,
    )
    assert "JPEG" in verdict.detail


def test_mms_oversize_images_are_fixable() -> None:
    for mime in ("image/jpeg", "image/png", "image/gif"):
        verdict = check(facts(mime, 6 * MB), MMS)
        assert (verdict.reason, verdict.fixable) == ("too_large", True)
    animated = facts("image/gif", 6 * MB, frames=40, animated=True)
    assert check(animated, MMS).fixable


def test_mms_non_images_have_the_600kb_advice_and_are_not_fixable() -> None:
    assert check(facts("video/mp4", 599_999), MMS).accepted
    verdict = check(facts("video/mp4", 700_000), MMS)
    assert (verdict.reason, verdict.fixable) == ("too_large", False)
    assert check(facts("application/pdf", 40 * MB), MMS).reason == "too_large"


def test_mms_carrier_budget() -> None:
    policy = mms_policy(carrier_budget=600_000)
    assert check(facts("image/jpeg", 500_000), policy).accepted
    verdict = check(facts("image/jpeg", 700_000), policy)
    assert (verdict.reason, verdict.fixable) == ("too_large", True)


def test_mms_message_total() -> None:
    verdict = check(facts("image/jpeg", 2 * MB), MMS, message_bytes=4 * MB)
    assert (verdict.reason, verdict.fixable) == ("message_too_large", True)
    full = check(facts("image/jpeg", 2 * MB), MMS, message_bytes=5 * MB)
    assert (full.reason, full.fixable) == ("message_too_large", False)
    pdf = check(facts("application/pdf", 500_000), MMS, message_bytes=4_800_000)
    assert (pdf.reason, pdf.fixable) == ("message_too_large", False)


def test_mms_refuses_types_twilio_does_not_take() -> None:
    for mime in ("text/html", "application/zip", "text/plain", "image/svg+xml"):
        verdict = check(facts(mime, 100), MMS)
        assert (verdict.reason, verdict.fixable) == ("unsupported_type", False)


def test_mms_accepts_twilio_documented_types() -> None:
    for mime in ("audio/amr", "video/3gpp", "text/vcard", "text/calendar", "application/pdf"):
        assert check(facts(mime, 1000), MMS).accepted


def test_check_count() -> None:
    assert check_count(10, MMS).accepted
    verdict = check_count(11, MMS)
    assert (verdict.accepted, verdict.reason) == (False, "message_too_large")
    assert "10" in verdict.detail


# --- the data itself ----------------------------------------------------------------


def test_type_sets_use_canonical_names() -> None:
    for mime in INBOUND_TYPES | MMS_TYPES:
        assert types.normalize(mime) == mime, mime
    assert "image/svg+xml" not in INBOUND_TYPES
    assert "text/html" not in INBOUND_TYPES


def test_reasons_match_the_contract() -> None:
    assert set(REASONS) == {
        "type_mismatch",
        "unsupported_type",
        "too_large",
        "message_too_large",
        "decompression_bomb",
        "corrupt",
        "empty",
        "blocked_host",
        "fetch_failed",
        "malware",  # clamd's verdict (receiver/media/scan.py), same vocabulary
    }
    for reason in (
        "blocked_host",
        "fetch_failed",
        "malware",
    ):  # produced by the fetcher, same vocabulary
        assert Verdict(False, reason).reason == reason


def test_verdict_and_policy_validate_themselves() -> None:
    with pytest.raises(ValueError, match="unknown reason"):
        Verdict(False, "nope")
    with pytest.raises(ValueError, match="needs a reason"):
        Verdict(False)
    with pytest.raises(ValueError, match="max_file_bytes"):
        Policy("x", frozenset(), max_file_bytes=0, max_message_bytes=1, max_files=1)
    with pytest.raises(ValueError, match="canonical"):
        Policy("x", frozenset({"image/jpg"}), max_file_bytes=1, max_message_bytes=1, max_files=1)
    with pytest.raises(ValueError, match="carrier_budget"):
        mms_policy(carrier_budget=0)


def test_type_table_normalises_and_classifies() -> None:
    assert types.normalize(" Image/JPG ; q=1") == "image/jpeg"
    assert types.normalize("text/x-vcard") == "text/vcard"
    assert types.normalize("audio/ogg; codecs=opus") == "audio/ogg"
    assert types.normalize("") is None and types.normalize(None) is None
    assert types.kind_of("video/x-unknown") == "video"
    assert types.kind_of("application/rss+xml") == "document"
    assert types.kind_of("image/svg+xml") == "document"
    assert types.kind_of("application/x-whatever") == "other"
    assert types.extension_of("image/heif-sequence") == "heif"
    assert types.extension_of("application/x-whatever") == "bin"
    assert not types.is_informative("application/octet-stream")
    assert types.is_informative("image/png")
