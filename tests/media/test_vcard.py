"""The vCard reader: every version phones export, tolerant of damage, values kept as text."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.media.vcard import (
    MAX_ITEMS,
    MAX_VALUE_CHARS,
    ContactCard,
    decode_text,
    looks_like_vcard,
    parse_vcard,
    parse_vcards,
)
from tests.support import samples


def test_vcard_21_quoted_printable_with_soft_break_and_charset() -> None:
    card = parse_vcard(samples.VCARD_21)
    assert card == ContactCard(
        name="Jürgen Müller",
        phones=("+1 (555) 010-0100", "+1 555 010 0101"),
        emails=("juergen@example.com",),
        org="Acme Ltd, Field Service",
    )


def test_vcard_30_folding_groups_escapes_and_photo() -> None:
    started = time.perf_counter()
    card = parse_vcard(samples.VCARD_30)
    assert time.perf_counter() - started < 1.0  # a 20 KB photo is skipped, not parsed
    assert card is not None
    assert card.name == "Dr. Jane Appleseed"  # FN wins over N
    assert card.phones == ("+15550100100",)
    assert card.emails == ("jane.appleseed@example.com",)  # folded line joined
    assert card.org == "Example, Inc."  # escaped comma


def test_vcard_40_tel_uri() -> None:
    card = parse_vcard(samples.VCARD_40)
    assert card is not None
    assert card.name == "René François"
    assert card.phones == ("+1-555-555-0199",)
    assert card.emails == ("rene@example.org",)


def test_xss_payload_in_name_is_kept_verbatim_as_text() -> None:
    card = parse_vcard(samples.VCARD_XSS)
    assert card is not None
    assert card.name == '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_name_from_n_when_fn_is_missing() -> None:
    card = parse_vcard("BEGIN:VCARD\nVERSION:2.1\nN:Doe;John;Q.;Mr.;Jr.\nEND:VCARD\n")
    assert card is not None and card.name == "Mr. John Q. Doe Jr."


def test_no_name_at_all() -> None:
    card = parse_vcard("BEGIN:VCARD\nVERSION:3.0\nTEL:+15550100\nEND:VCARD\n")
    assert card == ContactCard(name="", phones=("+15550100",), emails=())


def test_several_cards_in_order() -> None:
    data = samples.vcard("A One", "+1") + samples.vcard("B Two", "+2") + samples.VCARD_40
    names = [c.name for c in parse_vcards(data)]
    assert names == ["A One", "B Two", "René François"]
    assert [c.name for c in parse_vcards(data, max_cards=2)] == ["A One", "B Two"]


def test_truncated_card_still_gives_what_it_had() -> None:
    card = parse_vcard(b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Cut Off\r\nTEL:+1555")
    assert card is not None
    assert card.name == "Cut Off" and card.phones == ("+1555",)


def test_nested_agent_card_is_ignored() -> None:
    data = (
        "BEGIN:VCARD\nVERSION:2.1\nFN:Boss\nAGENT:\nBEGIN:VCARD\nFN:Assistant\nTEL:+2\n"
        "END:VCARD\nTEL:+1\nEND:VCARD\n"
    )
    cards = parse_vcards(data)
    assert cards == [ContactCard(name="Boss", phones=("+1",), emails=())]


def test_cr_only_line_endings_and_lowercase_names() -> None:
    card = parse_vcard(b"begin:vcard\rversion:3.0\rfn:Old Mac\rtel;type=home:+1 555\rend:vcard\r")
    assert card is not None and card.name == "Old Mac" and card.phones == ("+1 555",)


def test_bare_21_parameters_and_qp_without_charset() -> None:
    data = b"BEGIN:VCARD\nVERSION:2.1\nFN;QUOTED-PRINTABLE:Caf=C3=A9 Owner\nEND:VCARD\n"
    card = parse_vcard(data)
    assert card is not None and card.name == "Café Owner"


def test_latin1_qp_charset() -> None:
    data = b"BEGIN:VCARD\nVERSION:2.1\nFN;CHARSET=ISO-8859-1;ENCODING=QUOTED-PRINTABLE:Z=FCrich\nEND:VCARD\n"
    card = parse_vcard(data)
    assert card is not None and card.name == "Zürich"


def test_unknown_charset_falls_back() -> None:
    data = b"BEGIN:VCARD\nFN;CHARSET=X-NOPE;ENCODING=QUOTED-PRINTABLE:Ann=20Lee\nEND:VCARD\n"
    card = parse_vcard(data)
    assert card is not None and card.name == "Ann Lee"


def test_windows_1252_file_without_declaration() -> None:
    card = parse_vcard("BEGIN:VCARD\nFN:Ren\xe9e\nEND:VCARD\n".encode("cp1252"))
    assert card is not None and card.name == "Renée"


def test_quoted_parameter_values_may_hold_colons() -> None:
    data = 'BEGIN:VCARD\nVERSION:4.0\nFN:Q\nEMAIL;PID="1:2";TYPE=work:q@example.com\nEND:VCARD\n'
    card = parse_vcard(data)
    assert card is not None and card.emails == ("q@example.com",)


def test_duplicates_removed_control_characters_stripped() -> None:
    data = "BEGIN:VCARD\nFN:Tab\x07Bell\nTEL:+1\nTEL:+1\nEMAIL:a@b\nEMAIL:a@b\nEND:VCARD\n"
    card = parse_vcard(data)
    assert card == ContactCard(name="TabBell", phones=("+1",), emails=("a@b",))


def test_bounds_on_items_and_lengths() -> None:
    lines = ["BEGIN:VCARD", "FN:" + "x" * 10_000]
    lines += [f"TEL:+1555{i:04d}" for i in range(500)]
    lines.append("END:VCARD")
    card = parse_vcard("\n".join(lines))
    assert card is not None
    assert len(card.name) == MAX_VALUE_CHARS
    assert len(card.phones) == MAX_ITEMS


def test_not_a_vcard() -> None:
    assert parse_vcard(b"hello world") is None
    assert parse_vcards(b"") == []
    assert not looks_like_vcard("hello")
    assert looks_like_vcard("\ufeff\r\n  begin:VCARD\n")


def test_decode_text_boms() -> None:
    assert decode_text(b"\xef\xbb\xbfabc") == "abc"
    assert decode_text(b"\xff\xfe" + "abc".encode("utf-16-le")) == "abc"
    assert decode_text(b"\xfe\xff" + "abc".encode("utf-16-be")) == "abc"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000) | st.binary(max_size=2000))
def test_fuzz_never_raises(data: str | bytes) -> None:
    if isinstance(data, str):
        data = "BEGIN:VCARD\n" + data
    for card in parse_vcards(data):
        assert isinstance(card.name, str)
        assert all(isinstance(p, str) and p for p in card.phones)


def test_malformed_charset_parameter() -> None:
    # Found by fuzzing: a NUL inside CHARSET made bytes.decode() raise ValueError.
    data = b"BEGIN:VCARD\nFN;CHARSET=utf\x008;ENCODING=QUOTED-PRINTABLE:Ann=20Lee\nEND:VCARD\n"
    card = parse_vcard(data)
    assert card is not None and card.name == "Ann Lee"
    for charset in (b"rot13", b"base64", b"zlib", b"punycode"):
        line = b"FN;CHARSET=" + charset + b";ENCODING=QUOTED-PRINTABLE:=FF=FEx\n"
        assert parse_vcard(b"BEGIN:VCARD\n" + line + b"END:VCARD\n") is not None


_NAMES = st.sampled_from(["FN", "N", "TEL", "EMAIL", "ORG", "item1.TEL", "PHOTO", "X-Y", "fn"])
_PARAMS = st.lists(
    st.sampled_from(
        [
            "CHARSET=UTF-8",
            "CHARSET=ISO-8859-1",
            "CHARSET=",
            "ENCODING=QUOTED-PRINTABLE",
            "QUOTED-PRINTABLE",
            "ENCODING=b",
            "TYPE=CELL",
            'TYPE="a:b;c"',
            "CELL",
            '"',
            "=",
        ]
    ),
    max_size=4,
)


@st.composite
def structured_cards(draw: st.DrawFn) -> str:
    """vCards built from real property names and parameters with arbitrary values."""
    lines = ["BEGIN:VCARD", draw(st.sampled_from(["VERSION:2.1", "VERSION:3.0", "VERSION:4.0"]))]
    for _ in range(draw(st.integers(0, 12))):
        head = ";".join([draw(_NAMES), *draw(_PARAMS)])
        value = draw(st.text(max_size=80))
        lines.append(f"{head}:{value}")
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from([" folded", "\tmore", "=", "=C3=A9", "END:VCARD"])))
    if draw(st.booleans()):
        lines.append("END:VCARD")
    return draw(st.sampled_from(["\r\n", "\n", "\r"])).join(lines)


@settings(max_examples=250, deadline=None)
@given(structured_cards())
def test_fuzz_structured_cards_never_raise(text: str) -> None:
    for card in parse_vcards(text.encode("utf-8", errors="surrogatepass"), max_cards=5):
        assert len(card.name) <= MAX_VALUE_CHARS
        assert len(card.phones) <= MAX_ITEMS and len(card.emails) <= MAX_ITEMS
