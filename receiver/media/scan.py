"""A small clamd client: INSTREAM scans and VERSION, over a unix or TCP socket.

The protocol (clamd(8), "INSTREAM"): send ``zINSTREAM\\0``, then the file as
chunks, each prefixed with its length as a 4-byte big-endian integer, and a
zero-length chunk to end; clamd answers ``stream: OK``, ``stream: <signature>
FOUND`` or ``... ERROR``. clamd refuses a stream longer than its
``StreamMaxLength`` ("INSTREAM size limit exceeded"), so files over the limit
the service was told are never sent. No network beyond the one socket, no
web framework.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from receiver.settings import Settings

__all__ = [
    "ClamdClient",
    "ScanResult",
    "ScanUnavailable",
    "Scanner",
    "parse_clamd_url",
    "scanner_for",
]

#: clamd's own default StreamMaxLength (clamd.conf(5)): 25 MB.
DEFAULT_STREAM_MAX = 25 * 1024 * 1024
CHUNK = 64 * 1024


class ScanUnavailable(Exception):
    """clamd could not be reached or gave no verdict; the file is neither clean nor not."""


@dataclass(frozen=True)
class ScanResult:
    """One verdict: `clean`, `malware` (with the signature) or `too_large` (over the limit)."""

    verdict: str
    signature: str | None = None

    @property
    def clean(self) -> bool:
        return self.verdict == "clean"


def parse_clamd_url(url: str) -> tuple[str, str | tuple[str, int]]:
    """("unix", path) for ``unix:///run/clamav/clamd.ctl``, ("tcp", (host, port)) for
    ``tcp://127.0.0.1:3310``; ValueError naming the accepted forms otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme == "unix" and parts.path:
        return "unix", parts.path
    if parts.scheme == "tcp" and parts.hostname:
        try:
            port = parts.port or 3310
        except ValueError:
            port = -1
        if 0 < port < 65536:
            return "tcp", (parts.hostname, port)
    raise ValueError(
        f"RECEIVER_CLAMD_URL: {url!r} is not unix:///path/to/clamd.ctl or tcp://host:port"
    )


class ClamdClient:
    """Talks to one clamd; each call opens its own connection (clamd serves one command each)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        stream_max: int = DEFAULT_STREAM_MAX,
        chunk_size: int = CHUNK,
    ) -> None:
        self.url = url
        self.family, self.address = parse_clamd_url(url)
        self.timeout = timeout
        #: clamd's StreamMaxLength, as configured for this service (it cannot be asked).
        self.stream_max = stream_max
        self.chunk_size = chunk_size

    def _connect(self) -> socket.socket:
        family = socket.AF_UNIX if self.family == "unix" else socket.AF_INET
        if self.family == "tcp" and ":" in str(self.address[0]):
            family = socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.address)
        except OSError as exc:
            sock.close()
            raise ScanUnavailable(f"clamd at {self.url} is unreachable ({exc})") from None
        return sock

    def _command(self, command: bytes) -> str:
        with self._connect() as sock:
            try:
                sock.sendall(b"z" + command + b"\0")
                return _read_reply(sock)
            except OSError as exc:
                raise ScanUnavailable(f"clamd at {self.url} failed ({exc})") from None

    def ping(self) -> bool:
        """Whether clamd answers PING with PONG."""
        try:
            return self._command(b"PING") == "PONG"
        except ScanUnavailable:
            return False

    def version(self) -> str:
        """clamd's version line: "ClamAV 1.4.6/27480/Tue Dec  1 09:30:00 2026" (engine,
        signature version, signature date); ScanUnavailable when clamd is not there."""
        return self._command(b"VERSION")

    def scan(self, fp: BinaryIO, size: int | None = None) -> ScanResult:
        """Stream `fp` (from its start) to clamd; raises ScanUnavailable without a verdict.

        A file over `stream_max` is `too_large` without being sent.
        """
        if size is None:
            fp.seek(0, 2)
            size = fp.tell()
        if size > self.stream_max:
            return ScanResult("too_large")
        fp.seek(0)
        with self._connect() as sock:
            try:
                sock.sendall(b"zINSTREAM\0")
                while chunk := fp.read(self.chunk_size):
                    sock.sendall(struct.pack(">I", len(chunk)) + chunk)
                sock.sendall(struct.pack(">I", 0))
                reply = _read_reply(sock)
            except OSError as exc:
                # clamd answers a stream over its StreamMaxLength, then hangs up mid-send.
                reply = _late_reply(sock)
                if "size limit exceeded" not in reply:
                    raise ScanUnavailable(f"clamd at {self.url} failed mid-scan ({exc})") from None
            finally:
                fp.seek(0)
        return _verdict(reply, self.url)


def _read_reply(sock: socket.socket) -> str:
    data = bytearray()
    while not data.endswith(b"\0"):
        part = sock.recv(4096)
        if not part:
            if not data:
                raise OSError("connection closed without an answer")
            break
        data += part
        if len(data) > 65536:
            raise OSError("answer too long")
    return data.rstrip(b"\0").decode("utf-8", errors="replace").strip()


def _late_reply(sock: socket.socket) -> str:
    try:
        sock.settimeout(1.0)
        return _read_reply(sock)
    except OSError:
        return ""


def _verdict(reply: str, url: str) -> ScanResult:
    # "stream: OK", "stream: Eicar-Signature FOUND", "INSTREAM size limit exceeded. ERROR".
    body = reply.split(":", 1)[1].strip() if reply.startswith("stream:") else reply
    if body == "OK":
        return ScanResult("clean")
    if body.endswith(" FOUND"):
        return ScanResult("malware", body.removesuffix(" FOUND").strip() or "unknown")
    if "size limit exceeded" in body:
        return ScanResult("too_large")
    raise ScanUnavailable(f"clamd at {url} gave no verdict: {reply[:200]}")


@dataclass(frozen=True)
class Scanner:
    """clamd and what to do without it: `required` waits for clamd, optional stores unscanned."""

    client: ClamdClient
    required: bool = True

    @property
    def stream_max(self) -> int:
        return self.client.stream_max


def scanner_for(settings: Settings) -> Scanner | None:
    """clamd as configured, or None when RECEIVER_CLAMD_URL is not set (scanning off)."""
    if not settings.clamd_url:
        return None
    client = ClamdClient(settings.clamd_url, stream_max=settings.clamd_stream_max)
    return Scanner(client, required=settings.scan_mode == "required")
