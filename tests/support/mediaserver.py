"""A real HTTP(S) media server on loopback for tests and benchmarks.

Every test that downloads media (fetch, pipeline, outbound pre-flight,
benchmarks) talks to this server over real sockets instead of mocking the
HTTP client. Routes are registered with the bytes to serve and how to serve
them: with latency, dripping slowly, resetting the connection mid-body, lying
about or omitting Content-Length, redirecting, or failing with a status and a
body. Every request is logged with its headers so tests can assert what the
client sent (for example that `Authorization` was or was not present).

Quick use::

    from tests.support.mediaserver import MediaServer, Reply

    with MediaServer() as server:
        url = server.add("/a.jpg", jpeg_bytes, content_type="image/jpeg", latency=0.2)
        server.add("/slow", b"x" * 100, drip=1)            # 1 byte per second
        server.add("/cut", b"x" * 1000, reset_after=100)   # RST after 100 body bytes
        server.add("/liar", b"x" * 1000, content_length=10)
        server.add("/nolen", b"x" * 1000, content_length=None)  # close-delimited
        server.add("/401", b"<html>no</html>", status=401, content_type="text/html")
        server.redirect("/r", "/a.jpg")                    # 302 to a path or full URL
        server.add_replies("/flaky", Reply(status=503), Reply(body=b"ok"))  # 503, then 200
        ...
        server.requests              # list of RecordedRequest
        server.count("/flaky")       # 2
        server.host_port             # "127.0.0.1:PORT", for RECEIVER_MEDIA_HOSTS

More options on `Reply`: `chunked=True` (Transfer-Encoding: chunked),
`header_drip=N` (status line and headers at N bytes per second), `headers=`
(extra response headers, e.g. Retry-After or Content-Encoding). HEAD gets
the same status and headers as GET, without the body. A route's replies are
consumed by GET and HEAD alike, in arrival order.

`MediaServer(host="::1")` serves on IPv6 loopback (check
`MediaServer.ipv6_available()` first). `MediaServer(tls=make_tls(tmp_path,
["media.test"]))` serves HTTPS with a certificate from a throwaway CA; give
the client `tls.ca_file` as its CA bundle, build URLs with
`server.url("/x", host="media.test")` and have the client's resolver map the
name to 127.0.0.1. `server.sni_names` records the TLS names clients sent.

As a pytest fixture::

    @pytest.fixture
    def media_server():
        with MediaServer() as server:
            yield server
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = ["MediaServer", "RecordedRequest", "Reply", "TlsFiles", "make_tls"]

AUTO: Literal["auto"] = "auto"


@dataclass(frozen=True)
class Reply:
    """How to answer one request.

    body            bytes of the response body (not sent for HEAD)
    status          HTTP status code
    content_type    Content-Type header; None sends none
    headers         extra headers, as (name, value) pairs
    latency         seconds to wait before the status line
    drip            body bytes per second (e.g. 1 for one byte a second); None: at once
    header_drip     status line and header bytes per second (a "slowloris" answer)
    reset_after     send this many body bytes, then reset the connection (TCP RST)
    content_length  "auto": the real length; an int: that (possibly lying) value;
                    None: no Content-Length, body ends when the connection closes
    chunked         send the body with Transfer-Encoding: chunked (any
                    Content-Length given explicitly is sent as well, as a lie)
    location        Location header (for redirects)
    """

    body: bytes = b""
    status: int = 200
    content_type: str | None = "application/octet-stream"
    headers: tuple[tuple[str, str], ...] = ()
    latency: float = 0.0
    drip: float | None = None
    header_drip: float | None = None
    reset_after: int | None = None
    content_length: int | None | Literal["auto"] = AUTO
    chunked: bool = False
    location: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received. `headers` has lower-case names."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    client: tuple[str, int]
    at: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        """A request header by case-insensitive name."""
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class TlsFiles:
    """Paths of a test CA certificate and a server certificate/key it signed."""

    ca_file: str
    cert_file: str
    key_file: str


class MediaServer:
    """A threaded HTTP(S) server on loopback serving registered routes.

    Use it as a context manager, or call `start()` and `stop()`. Unknown paths
    answer 404; methods other than GET and HEAD answer 405. Route matching
    ignores the query string (it is recorded in the request log).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: TlsFiles | None = None,
    ) -> None:
        self.host = host
        self.tls = tls
        self._requested_port = port
        self._routes: dict[str, list[Reply]] = {}
        self._served: dict[str, int] = {}
        self._log: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.sni_names: list[str | None] = []
        """TLS server names (SNI) clients sent, one per handshake."""

    # -- lifecycle ------------------------------------------------------

    @staticmethod
    def ipv6_available() -> bool:
        """Whether this machine can serve on [::1]."""
        if not socket.has_ipv6:
            return False
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
                sock.bind(("::1", 0))
            return True
        except OSError:
            return False

    def start(self) -> MediaServer:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        self._stopping.clear()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server = _Server((self.host, self._requested_port), _Handler, family=family, owner=self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; slow or stalled responses are abandoned."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MediaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._server is None:
            raise RuntimeError("MediaServer is not started")
        return int(self._server.server_address[1])

    @property
    def scheme(self) -> str:
        """ "https" with TLS, else "http"."""
        return "https" if self.tls else "http"

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT`` or ``[::1]:PORT``: the allowlist entry for this server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"{self.scheme}://{self.host_port}"

    def url(self, path: str = "/", *, host: str | None = None) -> str:
        """An absolute URL for `path`; `host` replaces the address with a name
        (resolved by the test's fake resolver), keeping scheme and port."""
        if not path.startswith("/"):
            path = "/" + path
        if host is None:
            return self.base_url + path
        return f"{self.scheme}://{host}:{self.port}{path}"

    # -- routes ---------------------------------------------------------

    def add(self, path: str, body: bytes = b"", **options: Any) -> str:
        """Serve `body` at `path` with `Reply` options; returns the route's URL."""
        return self.add_replies(path, Reply(body=body, **options))

    def add_replies(self, path: str, *replies: Reply) -> str:
        """Answer successive requests with `replies` in order; the last one repeats."""
        if not replies:
            raise ValueError("add_replies needs at least one Reply")
        route = urlsplit(path).path or "/"
        with self._lock:
            self._routes[route] = list(replies)
            self._served[route] = 0
        return self.url(route)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Redirect `path` to `location` (a path on this server or any URL)."""
        return self.add(path, b"", status=status, location=location, content_type=None)

    def reply_for(self, path: str) -> Reply | None:
        """The Reply the next request to `path` gets (and count it as served)."""
        with self._lock:
            replies = self._routes.get(path)
            if replies is None:
                return None
            index = self._served[path]
            self._served[path] = index + 1
            return replies[min(index, len(replies) - 1)]

    # -- request log ----------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._log)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        """Requests whose path (without query) is `path`."""
        return [r for r in self.requests if r.path == path]

    def count(self, path: str | None = None) -> int:
        """How many requests arrived, for one path or in total."""
        return len(self.requests if path is None else self.requests_for(path))

    def clear_log(self) -> None:
        """Forget recorded requests (routes and their reply positions stay)."""
        with self._lock:
            self._log.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._log.append(request)


def make_tls(directory: str | Path, hostnames: Iterable[str]) -> TlsFiles:
    """Create a throwaway CA and a server certificate for `hostnames` (names or IPs).

    Pass `TlsFiles.ca_file` to the client as its CA bundle. Needs `cryptography`.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mediaserver test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mediaserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        ca_file=str(out / "ca.pem"),
        cert_file=str(out / "server.pem"),
        key_file=str(out / "server.key"),
    )
    Path(files.ca_file).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    Path(files.cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(files.key_file).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


# ---------------------------------------------------------------------------
# Internals


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections arriving in a
    # burst, and the client's SYN retry adds a second to each: a media CDN
    # does not do that, so the tests and benchmarks must not either.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        family: socket.AddressFamily,
        owner: MediaServer,
    ) -> None:
        self.address_family = family
        self.owner = owner
        self.ssl_context: ssl.SSLContext | None = None
        if owner.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(owner.tls.cert_file, owner.tls.key_file)

            def remember_sni(sock: Any, name: str | None, ctx: Any) -> None:
                owner.sni_names.append(name)

            context.sni_callback = remember_sni
            self.ssl_context = context
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:
            # The handshake runs in the handler thread (first read), so a slow
            # client cannot stall the accept loop.
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (tests that cut downloads) are expected.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _refuse(self) -> None:
        self._record()
        self._send_simple(405, b"method not allowed")

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def _record(self) -> str:
        parts = urlsplit(self.path)
        self.server.owner._record(
            RecordedRequest(
                method=self.command,
                path=parts.path,
                query=parts.query,
                headers={k.lower(): v for k, v in self.headers.items()},
                client=(str(self.client_address[0]), int(self.client_address[1])),
            )
        )
        return parts.path

    def _send_simple(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _answer(self, *, send_body: bool) -> None:
        owner = self.server.owner
        path = self._record()
        reply = owner.reply_for(path)
        if reply is None:
            self._send_simple(404, b"no such route")
            return
        if reply.latency and owner._stopping.wait(reply.latency):
            self.close_connection = True
            return
        self.send_response(reply.status)
        if reply.content_type is not None:
            self.send_header("Content-Type", reply.content_type)
        if reply.location is not None:
            self.send_header("Location", reply.location)
        for name, value in reply.headers:
            self.send_header(name, value)
        length = len(reply.body) if reply.content_length == AUTO else reply.content_length
        if reply.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            if reply.content_length != AUTO and length is not None:
                self.send_header("Content-Length", str(length))
        elif length is not None:
            self.send_header("Content-Length", str(length))
        self._header_drip = reply.header_drip
        lying = reply.content_length != AUTO
        if lying or reply.reset_after is not None:
            # The client cannot frame what follows on this connection.
            self.send_header("Connection", "close")
            self.close_connection = True
        try:
            self.end_headers()
        except OSError:
            self.close_connection = True
            return
        if not send_body:
            return
        body = reply.body
        if reply.reset_after is not None:
            body = body[: reply.reset_after]
        try:
            self._write_body(body, reply)
            if reply.reset_after is not None:
                self._reset()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    _header_drip: float | None = None

    def flush_headers(self) -> None:
        rate, self._header_drip = self._header_drip, None
        if not rate:
            super().flush_headers()
            return
        # BaseHTTPRequestHandler collects the header lines in _headers_buffer.
        data = b"".join(getattr(self, "_headers_buffer", []))
        self._headers_buffer: list[bytes] = []
        stopping = self.server.owner._stopping
        step = max(1, int(rate / 10))
        for start in range(0, len(data), step):
            if start and stopping.wait(step / rate):
                raise ConnectionAbortedError("server stopping")
            self.wfile.write(data[start : start + step])
            self.wfile.flush()

    def _write_body(self, body: bytes, reply: Reply) -> None:
        stopping = self.server.owner._stopping
        if reply.drip:
            step = max(1, int(reply.drip / 10))
            pieces: Sequence[bytes] = [body[i : i + step] for i in range(0, len(body), step)]
            pause = step / reply.drip
        else:
            pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
            pause = 0.0
        for index, piece in enumerate(pieces):
            if index and pause and stopping.wait(pause):
                self.close_connection = True
                return
            if reply.chunked:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                self.wfile.write(piece)
            self.wfile.flush()
        if reply.chunked and reply.reset_after is None:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The reader holds a reference that would defer the close; drop it first.
        self.rfile.close()
        self.connection.close()
        self.close_connection = True

    def finish(self) -> None:
        # The client may already be gone (tests cut downloads on purpose).
        with contextlib.suppress(OSError, ValueError):
            super().finish()
