"""Gunicorn configuration for running mms-receiver under plain gunicorn.

`mms-receiver serve` already applies the same settings; use this file when a
process manager wants to start gunicorn itself:

    gunicorn -c deploy/gunicorn.conf.py 'receiver:create_app()'

Every value can be overridden from the environment (GUNICORN_BIND,
GUNICORN_WORKERS, GUNICORN_THREADS). Prometheus metrics of all worker
processes are aggregated through PROMETHEUS_MULTIPROC_DIR, which is set up
(and emptied of a previous run's files) before the first worker forks.
"""

from __future__ import annotations

import os
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# gthread, with each request read whole in the event loop before a thread takes it:
# a client that dribbles costs a socket, not a thread (receiver/httpfront.py).
worker_class = "receiver.httpfront.BufferingWorker"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# Twilio waits at most 15 s for an answer; a request still running after 60 s is stuck.
timeout = 60
graceful_timeout = 20
keepalive = 5
limit_request_line = 8190
limit_request_fields = 100
accesslog = "-"
errorlog = "-"
loglevel = "info"
# Gunicorn's own lines in RECEIVER_LOG_FORMAT, through the same secret redaction.
logger_class = "receiver.logs.GunicornLogger"
# Threads do not survive fork: each worker builds its services after forking.
preload_app = False
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")


def _configure_logging() -> None:
    """The service's log format before gunicorn's first line (a bad setting fails here)."""
    from receiver.logs import configure_logging
    from receiver.settings import Settings

    configure_logging(Settings.from_env())


_configure_logging()


def on_starting(server: Any) -> None:
    """The shared metrics directory and the index schema, once, in the master."""
    from receiver.index import MediaIndex
    from receiver.metrics import setup_multiprocess
    from receiver.settings import Settings

    setup_multiprocess()
    MediaIndex.open(Settings.from_env().database_url).close()


def post_worker_init(worker: Any) -> None:
    """Start this worker's background sweeper (pending media, due retries)."""
    from receiver.server import start_sweeper

    start_sweeper(worker.wsgi.extensions["receiver"])


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the aggregated metrics."""
    from receiver.metrics import child_exit as metrics_child_exit

    metrics_child_exit(server, worker)
