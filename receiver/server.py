"""`serve`: gunicorn (gthread) over create_app, with background work started after fork."""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication

from receiver.settings import Settings

if TYPE_CHECKING:
    from receiver.services import Services

log = logging.getLogger(__name__)


class ReceiverServer(BaseApplication):
    """Gunicorn application: each worker builds its own services after the fork."""

    def __init__(self, settings: Settings, options: dict[str, Any], *, background: bool = True):
        self.settings = settings
        self.options = options
        self.background = background
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)
        self.cfg.set("post_worker_init", self._post_worker_init)
        # Set in the master, inherited by every forked worker.
        limit_malloc_arenas()
        # Metrics from every worker process are merged at scrape time.
        from receiver.metrics import child_exit, setup_multiprocess

        setup_multiprocess()
        self.cfg.set("child_exit", child_exit)

    def _post_worker_init(self, worker: Any) -> None:
        if not self.background:
            return
        # Threads do not survive fork: start this worker's sweeper now.
        services = worker.wsgi.extensions["receiver"]
        start_sweeper(services)
        services.events.dispatcher.start()

    def load(self) -> Any:
        from receiver import create_app

        return create_app(self.settings)


#: glibc's mallopt parameter number for the arena limit (M_ARENA_MAX in malloc.h).
M_ARENA_MAX = -8
#: Arenas per process: glibc's default is 8 per core, one more for each new thread.
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process and the workers it forks.

    Each media or webhook thread would otherwise get an arena of its own, and
    freed memory stays resident in it: about 10 MB per worker under the
    inbound benchmark (docs/performance.md). The threads spend their time in
    C code that releases the GIL or waiting on sockets, so two arenas are
    enough. Not glibc (no mallopt): nothing changes, and False says so.
    """
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def start_sweeper(services: Services, *, interval: float = 2.0) -> threading.Event:
    """Resume pending and due failed media in the background of this process.

    Returns the event that stops the sweeper.
    """
    stop = threading.Event()
    thread = threading.Thread(
        target=services.pipeline.run_forever,
        args=(stop,),
        kwargs={"interval": interval, "extra": services.remote_deletion},
        name="sweeper",
        daemon=True,
    )
    thread.start()
    return stop


def default_workers() -> int:
    """Two gunicorn workers per CPU core, at most 16.

    Webhooks spend most of their time waiting on media hosts, and each
    process has one GIL: two processes a core keep both cores busy.
    """
    return min(2 * (os.cpu_count() or 1), 16)


def gunicorn_options(host: str, port: int, workers: int, threads: int) -> dict[str, Any]:
    """Gunicorn settings for a webhook service answering within Twilio's 15 s."""
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        # gthread, with each request read whole in the event loop before a thread takes it.
        "worker_class": "receiver.httpfront.BufferingWorker",
        "threads": threads,
        "timeout": 60,
        "graceful_timeout": 20,
        # No keep-alive: a kept connection ties one sender to one worker (and
        # its GIL); a new connection per webhook goes to whichever worker is
        # free. Behind nginx, upstream connections are per request anyway.
        "keepalive": 0,
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
        "preload_app": False,
        "logger_class": "receiver.logs.GunicornLogger",
        # Several `serve` processes may share a host; none needs the control socket.
        "control_socket_disable": True,
    }
