"""A real clamd (Debian's clamav-daemon) on a unix socket in a temp dir, with a generated
signature database, for integration tests.

There is no network for freshclam, so the database is written here: an .hdb
hash signature for the EICAR test file and .ndb body signatures for EICAR
anywhere in a file and for two markers that only exist once clamd unpacks a
ZIP member or inflates a PDF stream. A tiny database makes start-up quick.

The EICAR string is assembled from pieces so this file itself never matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from tests.support import samples
from tests.support.services import require

CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!" + b"$H+H*"
ZIP_MARKER = b"MMS-RECEIVER-ZIP-MEMBER-MARKER-7f3a9c"
PDF_MARKER = b"MMS-RECEIVER-PDF-STREAM-MARKER-91c2e4"
SIG_EICAR_HASH = "Test.EICAR.Hash.MMS"
SIG_EICAR_BODY = "Test.EICAR.Body.MMS"
SIG_ZIP = "Test.ZipMember.MMS"
SIG_PDF = "Test.PdfStream.MMS"
#: StreamMaxLength given to the test clamd (small, so the limit is cheap to cross).
STREAM_MAX = 2 * 1024 * 1024


def write_database(directory: Path, extra: dict[str, bytes] | None = None) -> None:
    """The signature files: one hash signature (.hdb), three body signatures (.ndb) and
    `extra` body signatures (name: bytes), as a signature update would bring."""
    directory.mkdir(parents=True, exist_ok=True)
    md5 = hashlib.md5(EICAR).hexdigest()  # the .hdb format is MD5:size:name
    (directory / "mms-test.hdb").write_text(f"{md5}:{len(EICAR)}:{SIG_EICAR_HASH}\n")
    # .ndb: Name:TargetType:Offset:HexSignature (TargetType 0 = any file).
    (directory / "mms-test.ndb").write_text(
        f"{SIG_EICAR_BODY}:0:*:{EICAR.hex()}\n"
        f"{SIG_ZIP}:0:*:{ZIP_MARKER.hex()}\n"
        f"{SIG_PDF}:0:*:{PDF_MARKER.hex()}\n"
        + "".join(f"{name}:0:*:{body.hex()}\n" for name, body in (extra or {}).items())
    )


def _deflated_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buf.getvalue()


def zip_with_marker() -> bytes:
    """A deflated ZIP whose member holds ZIP_MARKER (absent from the ZIP's own bytes)."""
    data = _deflated_zip({"readme.txt": b"harmless text " * 50, "payload.bin": ZIP_MARKER * 3})
    assert ZIP_MARKER not in data
    return data


def zip_with_eicar() -> bytes:
    data = _deflated_zip({"docs/eicar.com": EICAR + b"\n" * 200})
    assert EICAR not in data
    return data


def pdf_with_marker() -> bytes:
    """A one-page PDF whose FlateDecode content stream holds PDF_MARKER."""
    data = samples.pdf(b"BT /F1 12 Tf 72 712 Td (" + PDF_MARKER + b") Tj ET\n" * 4)
    assert PDF_MARKER not in data
    return data


class Clamd:
    """One clamd process serving a socket in its own temp dir."""

    def __init__(self, stream_max: int = STREAM_MAX, extra: dict[str, bytes] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="clamd-"))
        self.socket = self.dir / "clamd.sock"
        self.stream_max = stream_max
        self.proc: subprocess.Popen[bytes] | None = None
        write_database(self.dir / "db", extra)
        self.config = self.dir / "clamd.conf"
        self.config.write_text(
            "\n".join(
                [
                    f"LocalSocket {self.socket}",
                    f"DatabaseDirectory {self.dir / 'db'}",
                    f"LogFile {self.dir / 'clamd.log'}",
                    f"TemporaryDirectory {self.dir}",
                    "Foreground yes",
                    f"StreamMaxLength {stream_max}",
                    "MaxThreads 4",
                    "ReadTimeout 10",
                    "CommandReadTimeout 10",
                    "Bytecode no",
                    "",
                ]
            )
        )

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 30.0) -> Clamd:
        log = (self.dir / "stdout.log").open("wb")
        self.proc = subprocess.Popen(
            [CLAMD, "--config-file", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        from receiver.media.scan import ClamdClient

        client = ClamdClient(self.url, timeout=2)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clamd exited on start:\n{self.log()}")
            if self.socket.exists() and client.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"clamd did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "clamd.log"):
            path = self.dir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def kill(self) -> None:
        """SIGKILL, as a crash would (the socket file stays behind)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_clamd(stream_max: int = STREAM_MAX) -> Iterator[Clamd]:
    """A started clamd (skips locally, fails under CI=true when clamd is missing)."""
    require(os.path.exists(CLAMD), "clamd is not installed (apt-get install clamav-daemon)")
    server = Clamd(stream_max)
    try:
        try:
            server.start()
        except RuntimeError as exc:
            require(False, f"clamd could not start: {exc}")
        yield server
    finally:
        server.cleanup()
