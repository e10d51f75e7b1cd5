"""The clamd client against a real clamd with a generated signature database."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from receiver.media.scan import ClamdClient, ScanUnavailable, parse_clamd_url
from tests.support import samples
from tests.support.clamd import (
    EICAR,
    SIG_EICAR_BODY,
    SIG_EICAR_HASH,
    SIG_PDF,
    SIG_ZIP,
    STREAM_MAX,
    pdf_with_marker,
    running_clamd,
    zip_with_eicar,
    zip_with_marker,
)


def signature(name: str | None) -> str:
    # clamd marks signatures outside its official database ".UNOFFICIAL".
    return (name or "").removesuffix(".UNOFFICIAL")


def test_version_names_the_engine(clamd: Any) -> None:
    assert ClamdClient(clamd.url).version().startswith("ClamAV ")
    assert ClamdClient(clamd.url).ping()


@pytest.mark.parametrize(
    ("label", "data", "expected"),
    [
        ("eicar", EICAR, {SIG_EICAR_BODY, SIG_EICAR_HASH}),
        ("eicar-inside-a-file", b"GIF89a" + bytes(500) + EICAR + bytes(500), {SIG_EICAR_BODY}),
        ("eicar-in-zip", zip_with_eicar(), {SIG_EICAR_BODY, SIG_EICAR_HASH}),
        ("marker-in-zip-member", zip_with_marker(), {SIG_ZIP}),
        ("marker-in-pdf-stream", pdf_with_marker(), {SIG_PDF}),
    ],
)
def test_matches_are_malware_with_the_signature(
    clamd: Any, label: str, data: bytes, expected: set[str]
) -> None:
    result = ClamdClient(clamd.url).scan(io.BytesIO(data))
    assert result.verdict == "malware", label
    assert signature(result.signature) in expected


@pytest.mark.parametrize("chunk_size", [1, 7, 34, 67, 4096])
def test_eicar_split_across_chunk_boundaries_is_found(clamd: Any, chunk_size: int) -> None:
    data = b"x" * 5 + EICAR + b"y" * 5  # the string straddles chunks of every size above
    result = ClamdClient(clamd.url, chunk_size=chunk_size).scan(io.BytesIO(data))
    assert result.verdict == "malware" and signature(result.signature) == SIG_EICAR_BODY


@pytest.mark.parametrize(
    "data",
    [samples.jpeg(), samples.pdf(), samples.docx(), samples.vcard(), b"hello"],
    ids=["jpeg", "pdf", "docx", "vcard", "text"],
)
def test_ordinary_files_are_clean(clamd: Any, data: bytes) -> None:
    fp = io.BytesIO(data)
    result = ClamdClient(clamd.url).scan(fp)
    assert result.clean and result.signature is None
    assert fp.tell() == 0  # left ready for the store


def test_over_the_stream_limit_is_too_large_without_sending(clamd: Any) -> None:
    fp = io.BytesIO(b"a" * 2000)
    assert ClamdClient(clamd.url, stream_max=1999).scan(fp).verdict == "too_large"


def test_clamd_refusing_a_stream_over_its_limit_is_too_large(clamd: Any) -> None:
    # The service was told a larger limit than clamd has: clamd's own refusal counts.
    fp = io.BytesIO(b"a" * (STREAM_MAX + 4096))
    result = ClamdClient(clamd.url, stream_max=STREAM_MAX * 4).scan(fp)
    assert result.verdict == "too_large"


def test_unreachable_clamd_gives_no_verdict(tmp_path: Path) -> None:
    with pytest.raises(ScanUnavailable, match="unreachable"):
        ClamdClient(f"unix://{tmp_path}/none.sock").scan(io.BytesIO(b"x"))
    with pytest.raises(ScanUnavailable):
        ClamdClient("tcp://127.0.0.1:9", timeout=1).version()
    assert not ClamdClient(f"unix://{tmp_path}/none.sock").ping()


class _KillsClamdAfterFirstRead(io.BytesIO):
    def __init__(self, data: bytes, server: Any) -> None:
        super().__init__(data)
        self.server = server
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        if self.reads == 2:
            self.server.kill()
        return super().read(size)


def test_clamd_killed_mid_scan_gives_no_verdict() -> None:
    with running_clamd() as server:
        fp = _KillsClamdAfterFirstRead(b"z" * (1024 * 1024), server)
        with pytest.raises(ScanUnavailable):
            ClamdClient(server.url, chunk_size=4096, timeout=5).scan(fp)
        assert fp.reads >= 2


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("unix:///run/clamav/clamd.ctl", ("unix", "/run/clamav/clamd.ctl")),
        ("tcp://127.0.0.1:3310", ("tcp", ("127.0.0.1", 3310))),
        ("tcp://clamd", ("tcp", ("clamd", 3310))),
    ],
)
def test_clamd_urls(url: str, expected: tuple[str, object]) -> None:
    assert parse_clamd_url(url) == expected


@pytest.mark.parametrize("url", ["", "http://clamd:3310", "unix://", "tcp://host:99999", "clamd"])
def test_bad_clamd_urls_name_the_accepted_forms(url: str) -> None:
    with pytest.raises(ValueError, match="unix:///path/to/clamd.ctl or tcp://host:port"):
        parse_clamd_url(url)
