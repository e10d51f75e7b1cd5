"""The "correct facts" corpus: generated files whose facts were once wrong, each read right."""

from __future__ import annotations

import io

import pytest

from receiver.media import types
from receiver.media.inspect import MAX_VCARDS, MediaInfo, inspect
from receiver.media.policy import Verdict, check, inbound_policy
from receiver.media.vcard import parse_vcard, parse_vcards
from tests.support import facts_corpus, samples
from tests.support.facts_corpus import CHARSET_CARDS, CharsetCard

POLICY = inbound_policy(5_000_000, 5_000_000)


def facts(data: bytes, declared: str | None) -> tuple[MediaInfo, Verdict]:
    info = inspect(io.BytesIO(data), declared)
    return info, check(info, POLICY)


# -- vCards: CHARSET for 8-bit and quoted-printable values, several cards ---------------


@pytest.mark.parametrize("card", CHARSET_CARDS, ids=[c.label for c in CHARSET_CARDS])
def test_vcard_values_are_read_in_their_charset(card: CharsetCard) -> None:
    data = card.data()
    if card.charset != "utf-8" and not card.quoted_printable:
        # The case that used to fail: the bytes are not UTF-8 (or not the right text as such).
        assert data.decode("utf-8", errors="replace") != data.decode(card.charset)
    info, verdict = facts(data, "text/x-vcard")
    assert info.kind == "contact" and info.detected_type == "text/vcard"
    contact = info.contact
    assert contact is not None
    assert contact.name == card.name
    assert contact.org == card.org
    assert contact.phones == ("+81 90 1234 5678",)
    assert verdict.accepted


def test_shift_jis_trail_byte_backslash_is_not_an_escape() -> None:
    # "ソ" is 0x83 0x5C in Shift_JIS: the 0x5C must stay part of the character.
    data = facts_corpus.vcard_21("ソ ソ", "ソ\\表", charset="shift_jis", spelled="SHIFT_JIS")
    assert b"\x83\x5c" in data
    card = parse_vcard(data)
    assert card is not None
    assert card.name == "ソ ソ"
    # The value was "ソ\表" in Shift_JIS; "\\" escapes nothing in 2.1 and is kept.
    assert card.org is not None and card.org.startswith("ソ") and card.org.endswith("表")


def test_each_card_of_a_file_keeps_its_own_charset() -> None:
    sjis = facts_corpus.vcard_21("山田 花子", "ソニー", charset="shift_jis", spelled="SHIFT_JIS")
    latin = facts_corpus.vcard_21("Müller Jürgen", "Groß", charset="latin-1", spelled="ISO-8859-1")
    names = [c.name for c in parse_vcards(sjis + latin)]
    assert names == ["山田 花子", "Müller Jürgen"]


def test_unknown_charset_falls_back_without_raising() -> None:
    data = facts_corpus.vcard_21("Zoë Ann", "X", charset="utf-8", spelled="X-NO-SUCH-CHARSET")
    card = parse_vcard(data)
    assert card is not None and card.name == "Zoë Ann"


def test_str_input_is_not_decoded_twice() -> None:
    text = "BEGIN:VCARD\nVERSION:2.1\nFN;CHARSET=SHIFT_JIS:山田\nEND:VCARD\n"
    card = parse_vcard(text)
    assert card is not None and card.name == "山田"


def test_a_file_with_several_cards_lists_every_contact() -> None:
    data = facts_corpus.address_book(3)
    info = inspect(io.BytesIO(data), "text/vcard")
    assert [c.name for c in info.contacts] == ["Contact 1", "Contact 2", "Contact 3"]
    assert [c.phones for c in info.contacts] == [
        ("+15550100001",),
        ("+15550100002",),
        ("+15550100003",),
    ]
    assert info.contact == info.contacts[0]  # the single card stays for its readers


def test_a_huge_address_book_is_cut_at_the_cap() -> None:
    info = inspect(io.BytesIO(facts_corpus.address_book(MAX_VCARDS + 20)), "text/vcard")
    assert len(info.contacts) == MAX_VCARDS
    assert info.contacts[-1].name == f"Contact {MAX_VCARDS}"


# -- SMIL presentation parts ------------------------------------------------------------


@pytest.mark.parametrize("declaration", [True, False], ids=["with-doctype", "bare"])
@pytest.mark.parametrize("declared", ["application/smil", "application/smil+xml", None])
def test_smil_is_a_presentation_part_and_accepted(declaration: bool, declared: str | None) -> None:
    data = facts_corpus.smil(("img", "photo.jpg"), ("text", "text.txt"), declaration=declaration)
    info = inspect(io.BytesIO(data), declared)
    assert (info.detected_type, info.kind, info.extension) == (
        "application/smil+xml",
        "presentation",
        "smil",
    )
    assert not info.mismatch
    verdict = check(info, POLICY)
    assert verdict.accepted and verdict.detail == ""


def test_smil_declared_as_text_is_accepted_with_the_difference_explained() -> None:
    info = inspect(io.BytesIO(facts_corpus.smil(("img", "a.jpg"))), "text/plain")
    verdict = check(info, POLICY)
    assert info.kind == "presentation" and info.mismatch
    assert verdict.accepted
    assert verdict.detail == "declared text/plain, bytes are application/smil+xml"


def test_html_is_not_taken_for_smil() -> None:
    info = inspect(io.BytesIO(b"<html><body><p>smil</p></body></html>"), "text/html")
    assert info.kind == "document" and info.detected_type == "text/html"


# -- AMR-WB ----------------------------------------------------------------------------


def test_amr_wb_is_its_own_type() -> None:
    info, verdict = facts(facts_corpus.amr_wb(), "audio/amr-wb")
    assert (info.detected_type, info.kind, info.extension) == ("audio/amr-wb", "audio", "awb")
    assert not info.mismatch
    assert verdict.accepted and verdict.detail == ""
    assert types.extension_of("audio/amr-wb") == "awb"


def test_amr_narrow_band_stays_amr() -> None:
    info, _ = facts(facts_corpus.amr_nb(), "audio/amr")
    assert (info.detected_type, info.extension) == ("audio/amr", "amr")


def test_amr_wb_declared_as_amr_is_kept_with_the_difference_explained() -> None:
    info, verdict = facts(facts_corpus.amr_wb(), "audio/amr")
    assert info.mismatch
    assert verdict.accepted
    assert verdict.detail == "declared audio/amr, bytes are audio/amr-wb"


# -- detail explains every type mismatch -------------------------------------------------


def test_accepted_mismatch_has_a_detail() -> None:
    info, verdict = facts(samples.jpeg(), "image/png")
    assert verdict.accepted
    assert verdict.detail == "declared image/png, bytes are image/jpeg"


def test_rejection_of_a_mismatched_file_names_both_the_reason_and_the_mismatch() -> None:
    info = inspect(io.BytesIO(samples.jpeg()), "image/png")
    verdict = check(info, inbound_policy(100, 100))
    assert verdict.reason == "too_large"
    assert verdict.detail.endswith("; declared image/png, bytes are image/jpeg")
    assert "over the" in verdict.detail


def test_kind_mismatch_detail_is_unchanged() -> None:
    info, verdict = facts(samples.jpeg(), "video/mp4")
    assert verdict.reason == "type_mismatch"
    assert verdict.detail == "declared video/mp4 (video) but the bytes are image/jpeg (image)"


def test_no_mismatch_no_detail() -> None:
    _, verdict = facts(samples.jpeg(), "image/jpeg")
    assert verdict.accepted and verdict.detail == ""
