"""Real HTTP servers on loopback, served from a background thread.

A WSGI app, for tests whose client is not Flask's test client: a browser,
schemathesis, the fake Twilio posting status callbacks, or media fetched back
from the service. And the plain request handler that the fakes of Twilio's
APIs answer from (`handler_server`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


def serve_in_thread(app: Any, port: int = 0) -> BaseWSGIServer:
    """Serve `app` on 127.0.0.1:`port` (0: any free port); the caller shuts the server down."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    # A short poll interval keeps shutdown() quick.
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@contextlib.contextmanager
def serving(app: Any, port: int = 0) -> Iterator[str]:
    """Serve `app` for the `with` block; yields its base URL."""
    server = serve_in_thread(app, port)
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def handler_server(
    handle: Callable[[BaseHTTPRequestHandler], None], *, get: bool = True
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """A server on a free loopback port whose POSTs (and GETs, with `get`) go to `handle`,
    quietly; and the thread to start it on."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            handle(self)

        if get:

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                handle(self)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server, threading.Thread(target=server.serve_forever, daemon=True)
