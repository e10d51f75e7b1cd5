"""A small, tolerant vCard reader (2.1, 3.0 and 4.0): name, phones, emails, organisation.

Phones send whatever their address book exports: CRLF or LF, folded lines,
2.1 quoted-printable with soft line breaks, values in the CHARSET a parameter
names (8-bit or quoted-printable: Shift_JIS, ISO-8859-x...), 3.0/4.0 backslash
escapes, grouped properties (``item1.TEL``), a missing FN. The reader never
raises on such input; it returns what it could read. Values are kept as plain
text: escaping for HTML is the job of whoever renders them.
"""

from __future__ import annotations

import codecs
import quopri
import re
from dataclasses import dataclass

#: Bounds that keep one card a small record, whatever the sender put in it.
MAX_VALUE_CHARS = 1000
MAX_ITEMS = 50

_WANTED = frozenset({"FN", "N", "TEL", "EMAIL", "ORG"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class ContactCard:
    """What a shared contact says: a display name, phone numbers, emails, organisation."""

    name: str
    phones: tuple[str, ...]
    emails: tuple[str, ...]
    org: str | None = None


_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _has_bom(data: bytes) -> bool:
    return any(data.startswith(bom) for bom, _ in _BOMS)


def decode_text(data: bytes) -> str:
    """Decode vCard bytes: BOM first (UTF-8/UTF-16), then UTF-8, then Windows-1252."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Old 2.1 exporters write the platform code page without saying so.
        return data.decode("cp1252", errors="replace")


def _split_unquoted(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split on `sep` outside double quotes (parameter values may quote ':' and ';')."""
    if '"' not in text:
        return text.split(sep, maxsplit)
    parts: list[str] = []
    start = 0
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
            if len(parts) == maxsplit:
                break
    parts.append(text[start:])
    return parts


def _split_escaped(value: str, sep: str) -> list[str]:
    """Split a structured value on `sep` not preceded by a backslash escape."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    r"""Undo 3.0/4.0 escapes: \n, \N, \, \; \\ (and tolerate any other escaped char)."""
    out: list[str] = []
    it = iter(value)
    for ch in it:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(it, "")
        out.append("\n" if nxt in ("n", "N") else nxt)
    return "".join(out)


def _clean(value: str) -> str:
    """Strip control characters and surrounding space; cap the length."""
    return _CONTROL.sub("", value).strip()[:MAX_VALUE_CHARS]


@dataclass
class _Property:
    name: str
    params: dict[str, list[str]]
    value: str


def _parse_params(raw: list[str]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for item in raw:
        if not item:
            continue
        if "=" in item:
            key, _, val = item.partition("=")
            values = [v.strip().strip('"') for v in _split_unquoted(val, ",")]
        else:
            # vCard 2.1 allows bare parameter values: TEL;CELL;QUOTED-PRINTABLE:...
            key, values = _bare_param_key(item), [item.strip().strip('"')]
        params.setdefault(key.strip().upper(), []).extend(values)
    return params


def _bare_param_key(value: str) -> str:
    upper = value.strip().upper()
    if upper in ("QUOTED-PRINTABLE", "BASE64", "B", "8BIT", "7BIT"):
        return "ENCODING"
    if upper.startswith("CHARSET"):
        return "CHARSET"
    return "TYPE"


def _is_qp(params: dict[str, list[str]]) -> bool:
    return any(v.upper() == "QUOTED-PRINTABLE" for v in params.get("ENCODING", ()))


#: Charset names exporters write that Python's codecs spell differently.
_CHARSET_NAMES = {"windows-31j": "cp932", "cswindows31j": "cp932", "x-sjis": "shift_jis"}
#: Vendor supersets phones write while naming the standard (NEC/IBM extensions of
#: Shift_JIS, GBK in "GB2312"): tried when the named charset cannot decode the bytes.
_SUPERSETS = {
    "shift_jis": "cp932",
    "euc_jp": "euc_jis_2004",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "big5hkscs",
    "euc_kr": "cp949",
}


def _decode_value(raw: bytes, params: dict[str, list[str]]) -> str:
    """A value's bytes in its CHARSET; without one (or an unknown one) UTF-8, else Windows-1252."""
    name = (params.get("CHARSET") or [""])[0].strip()
    try:
        codec = codecs.lookup(_CHARSET_NAMES.get(name.lower(), name)).name if name else ""
    except (LookupError, ValueError):
        # Unknown or malformed CHARSET (e.g. a NUL inside the name): guess as below.
        codec = ""
    if codec:
        for candidate, errors in ((codec, "strict"), (_SUPERSETS.get(codec, codec), "replace")):
            try:
                return raw.decode(candidate, errors=errors)
            except (LookupError, ValueError):
                # Not decodable in it, or no text encoding at all (rot13, base64).
                continue
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Old 2.1 exporters write the platform code page without saying so.
        return raw.decode("cp1252", errors="replace")


def _logical_lines(text: str) -> list[str]:
    """Physical lines joined into logical ones: RFC folding and 2.1 QP soft breaks."""
    # Parts are collected in lists: a folded base64 PHOTO has thousands of pieces,
    # and repeated string concatenation would be quadratic.
    logical: list[list[str]] = []
    for physical in re.split(r"\r\n|\r|\n", text):
        if logical and physical[:1] in (" ", "\t"):
            logical[-1].append(physical[1:])
        elif logical and logical[-1][-1].endswith("=") and _is_qp_line(logical[-1][0]):
            # A QP soft line break: the '=' ends the physical line, the value goes on.
            logical[-1][-1] = logical[-1][-1][:-1]
            logical[-1].append(physical)
        else:
            logical.append([physical])
    return ["".join(parts) for parts in logical]


def _is_qp_line(first_part: str) -> bool:
    """Whether a content line's parameters (before its first ':') ask for quoted-printable."""
    return "QUOTED-PRINTABLE" in first_part.split(":", 1)[0].upper()


def _parse_line(line: str, *, raw: bool) -> _Property | None:
    """One content line; with `raw`, the line holds bytes as Latin-1 characters (see
    `parse_vcards`), and the value is decoded in its own CHARSET here."""
    # Decide on the name first, so large properties we do not read (PHOTO, LOGO,
    # SOUND carry base64 blobs) are never split character by character.
    name = re.split(r"[;:]", line, maxsplit=1)[0].strip().upper()
    # Apple groups related properties: "item1.TEL".
    name = name.rsplit(".", 1)[-1]
    if name not in _WANTED:
        return None
    parts = _split_unquoted(line, ":", 1)
    if len(parts) != 2:
        return None
    head, value = parts
    name_params = _split_unquoted(head, ";")
    params = _parse_params(name_params[1:])
    # The fields read here are short; a huge one is cut before any per-character work.
    value = value[: MAX_VALUE_CHARS * 4]
    if _is_qp(params):
        value = _decode_value(quopri.decodestring(value.encode("latin-1", "replace")), params)
    elif raw:
        # 8-bit values honour CHARSET too (Shift_JIS, ISO-8859-x from 2.1 exporters).
        # Decoding happens before unescaping: a Shift_JIS trail byte can be a backslash.
        value = _decode_value(value.encode("latin-1"), params)
    return _Property(name, params, value)


def _name_from_n(value: str) -> str:
    # N = family;given;additional;prefix;suffix
    fields = [_clean(_unescape(p)) for p in _split_escaped(value, ";")]
    fields += [""] * (5 - len(fields))
    family, given, additional, prefix, suffix = fields[:5]
    return " ".join(p for p in (prefix, given, additional, family, suffix) if p)


class _CardBuilder:
    def __init__(self) -> None:
        self.fn = ""
        self.n = ""
        self.phones: list[str] = []
        self.emails: list[str] = []
        self.org: str | None = None

    def add(self, prop: _Property) -> None:
        if prop.name == "FN" and not self.fn:
            self.fn = _clean(_unescape(prop.value))
        elif prop.name == "N" and not self.n:
            self.n = _name_from_n(prop.value)
        elif prop.name == "TEL":
            phone = _clean(_unescape(prop.value))
            if phone.lower().startswith("tel:"):  # vCard 4.0 VALUE=uri
                phone = phone[4:].strip()
            self._append(self.phones, phone)
        elif prop.name == "EMAIL":
            email = _clean(_unescape(prop.value))
            if email.lower().startswith("mailto:"):
                email = email[7:].strip()
            self._append(self.emails, email)
        elif prop.name == "ORG" and self.org is None:
            units = [_clean(_unescape(p)) for p in _split_escaped(prop.value, ";")]
            org = ", ".join(u for u in units if u)
            self.org = org or None

    @staticmethod
    def _append(items: list[str], value: str) -> None:
        if value and value not in items and len(items) < MAX_ITEMS:
            items.append(value)

    def build(self) -> ContactCard:
        return ContactCard(
            name=self.fn or self.n,
            phones=tuple(self.phones),
            emails=tuple(self.emails),
            org=self.org,
        )


def parse_vcards(data: bytes | str, *, max_cards: int = 100) -> list[ContactCard]:
    """Every card in a vCard file (at most `max_cards`), in order; never raises on bad input.

    A card without END:VCARD (a truncated file) is still returned with what it had.
    Properties of nested 2.1 AGENT cards are ignored.
    """
    raw = isinstance(data, bytes) and not _has_bom(data)
    if isinstance(data, bytes):
        # Without a BOM each value may have its own CHARSET, so the bytes are kept
        # (Latin-1 maps every byte to one character) and decoded value by value.
        text = data.decode("latin-1") if raw else decode_text(data)
    else:
        text = data
    cards: list[ContactCard] = []
    builder: _CardBuilder | None = None
    depth = 0
    for line in _logical_lines(text):
        stripped = line.strip()
        if not stripped:
            continue
        upper = stripped.upper()
        if upper.startswith("BEGIN:VCARD"):
            depth += 1
            if depth == 1:
                builder = _CardBuilder()
            continue
        if upper.startswith("END:VCARD"):
            if depth == 1 and builder is not None:
                cards.append(builder.build())
                builder = None
                if len(cards) >= max_cards:
                    return cards
            depth = max(depth - 1, 0)
            continue
        if depth != 1 or builder is None:
            continue
        prop = _parse_line(stripped, raw=raw)
        if prop is not None:
            builder.add(prop)
    if builder is not None:
        cards.append(builder.build())
    return cards[:max_cards]


def parse_vcard(data: bytes | str) -> ContactCard | None:
    """The first card of a vCard file, or None when there is none."""
    cards = parse_vcards(data, max_cards=1)
    return cards[0] if cards else None


def looks_like_vcard(text: str) -> bool:
    """Whether decoded text starts (after a BOM and blank space) with BEGIN:VCARD."""
    return text.lstrip("\ufeff \t\r\n").upper().startswith("BEGIN:VCARD")
