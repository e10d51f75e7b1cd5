"""A WSGI app on a real HTTP server on loopback, served from a background thread.

For tests whose client is not Flask's test client: a browser, schemathesis, the
fake Twilio posting status callbacks, or media fetched back from the service.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
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
