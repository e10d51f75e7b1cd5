"""Generated files for the "correct facts" cases: phone-style vCards in many charsets,
several cards in one file, carrier SMIL parts and AMR-WB voice notes.

Everything is built here from text and codec rules (no downloads), the way the
senders' software writes it: vCard 2.1 with a CHARSET parameter and raw 8-bit
values (or quoted-printable), SMIL as MMS clients send it (OMA MMS conformance),
AMR files with the storage-format magic of RFC 4867 section 5.
"""

from __future__ import annotations

import quopri
from dataclasses import dataclass


@dataclass(frozen=True)
class CharsetCard:
    """One vCard written in `charset`, and the name and organisation it must give back."""

    label: str
    charset: str
    name: str
    org: str
    #: The CHARSET parameter as the exporter spells it (None: the exporter names none).
    spelled: str | None
    quoted_printable: bool = False

    def data(self) -> bytes:
        return vcard_21(
            self.name,
            self.org,
            charset=self.charset,
            spelled=self.spelled,
            qp=self.quoted_printable,
        )


def vcard_21(
    name: str,
    org: str,
    *,
    charset: str,
    spelled: str | None,
    qp: bool = False,
    phone: str = "+81 90 1234 5678",
) -> bytes:
    """A vCard 2.1 as feature phones export it: CRLF, N/FN/ORG in `charset`."""
    family, _, given = name.partition(" ")
    params = f";CHARSET={spelled}" if spelled else ""
    if qp:
        params += ";ENCODING=QUOTED-PRINTABLE"

    def value(text: str) -> bytes:
        raw = text.encode(charset)
        return quopri.encodestring(raw).replace(b"=\n", b"=\r\n") if qp else raw

    lines = [
        b"BEGIN:VCARD",
        b"VERSION:2.1",
        b"N" + params.encode() + b":" + value(f"{given};{family}"),
        b"FN" + params.encode() + b":" + value(name),
        b"ORG" + params.encode() + b":" + value(org),
        b"TEL;CELL:" + phone.encode(),
        b"END:VCARD",
    ]
    return b"\r\n".join(lines) + b"\r\n"


#: One card per charset phones use. "ソニー" has the Shift_JIS trail byte 0x5C (a
#: backslash in ASCII): decoding after unescaping would corrupt it.
CHARSET_CARDS = (
    CharsetCard("shift_jis-8bit", "shift_jis", "山田 ソウタ", "ソニー表示", "SHIFT_JIS"),
    CharsetCard("shift_jis-qp", "shift_jis", "山田 花子", "ソニー", "Shift_JIS", True),
    CharsetCard("cp932-8bit", "cp932", "髙橋 ①郎", "株式会社テスト", "WINDOWS-31J"),
    # Phones name SHIFT_JIS and write Microsoft's superset (NEC row 13, IBM kanji).
    CharsetCard("cp932-as-shift_jis", "cp932", "髙橋 ②郎", "ﾃｽﾄ㈱", "SHIFT_JIS"),
    CharsetCard("euc-jp-8bit", "euc_jp", "佐藤 一郎", "東京商事", "EUC-JP"),
    CharsetCard("iso-8859-1-8bit", "iso-8859-1", "Müller Jürgen", "Bäckerei Groß", "ISO-8859-1"),
    CharsetCard("iso-8859-2-8bit", "iso-8859-2", "Dvořák Ľudmila", "Žluťoučký kůň", "ISO-8859-2"),
    CharsetCard("iso-8859-5-8bit", "iso-8859-5", "Иванов Пётр", "Рога и копыта", "ISO-8859-5"),
    CharsetCard("iso-8859-7-8bit", "iso-8859-7", "Παπαδόπουλος Νίκος", "Ταβέρνα", "ISO-8859-7"),
    CharsetCard("koi8-r-8bit", "koi8-r", "Смирнов Олег", "Завод", "KOI8-R"),
    CharsetCard("big5-8bit", "big5", "陳 大文", "台灣公司", "BIG5"),
    CharsetCard("gb2312-qp", "gb2312", "王 小明", "北京公司", "GB2312", True),
    CharsetCard("utf-8-8bit", "utf-8", "Nguyễn Văn", "Công ty 😀", "UTF-8"),
    CharsetCard("utf-8-unnamed", "utf-8", "Łukasz Żółw", "Firma", None),
    CharsetCard("cp1252-unnamed", "cp1252", "François Cœur", "Café €", None),
)


def address_book(count: int = 3) -> bytes:
    """One .vcf holding `count` contacts (3.0, LF line ends, as phones share a list)."""
    cards = [
        (
            "BEGIN:VCARD\nVERSION:3.0\n"
            f"FN:Contact {i}\nN:{i};Contact;;;\nTEL;TYPE=CELL:+1555010{i:04d}\n"
            f"EMAIL:contact{i}@example.com\nEND:VCARD\n"
        )
        for i in range(1, count + 1)
    ]
    return "".join(cards).encode()


def smil(*parts: tuple[str, str], declaration: bool = True) -> bytes:
    """The SMIL layout a carrier adds to an MMS, naming `parts` (region, file name)."""
    pars = "".join(
        f'<par dur="5000ms"><{tag} src="{src}" region="{tag}"/></par>' for tag, src in parts
    )
    body = (
        "<smil><head><layout>"
        '<root-layout width="320" height="480"/>'
        '<region id="img" left="0" top="0" width="320" height="320" fit="meet"/>'
        '<region id="text" left="0" top="320" width="320" height="160" fit="scroll"/>'
        f"</layout></head><body>{pars}</body></smil>"
    )
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE smil PUBLIC "-//W3C//DTD SMIL 1.0//EN" '
        '"http://www.w3.org/TR/REC-smil/SMIL10.dtd">\n'
        if declaration
        else ""
    )
    return (head + body).encode()


def amr_wb(frames: int = 50) -> bytes:
    """An AMR-WB storage-format file: magic, then 23.85 kbit/s speech frames (mode 8).

    Each frame is a header byte (frame type 8, quality bit set) and 60 bytes of
    speech bits (RFC 4867 section 5.3); 50 frames are one second.
    """
    frame = bytes([8 << 3 | 0x04]) + bytes((i * 37) & 0xFF for i in range(60))
    return b"#!AMR-WB\n" + frame * frames


def amr_nb(frames: int = 50) -> bytes:
    """An AMR (narrow-band) storage-format file: magic, then 12.2 kbit/s frames (mode 7)."""
    frame = bytes([7 << 3 | 0x04]) + bytes((i * 53) & 0xFF for i in range(31))
    return b"#!AMR\n" + frame * frames
