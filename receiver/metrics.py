"""Prometheus metrics: what the service did (counters, histograms) and what waits (gauges).

One `Metrics` object per process records events; `render()` produces the
Prometheus text for ``GET /metrics``. Under gunicorn several worker processes
serve the same port, so their values are shared through files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode):
`setup_multiprocess()` prepares that directory in the master before the first
fork, `child_exit()` tidies up after a worker dies, and every scrape adds up
the files of all workers, whichever worker answers it.

Gauges that describe shared state (the media backlog, outbound messages by
current status) are not kept in processes at all: they are read from the
index when Prometheus scrapes, so every web process reports the same truth.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

if TYPE_CHECKING:
    from receiver.index import MediaIndex
    from receiver.index.events import Figures
    from receiver.index.outbound import OutboundIndex

log = logging.getLogger(__name__)

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "mmsr"
# Seconds from claiming a media item to its result (download, inspect, store):
# Twilio's CDN answers in tens of milliseconds, large videos take seconds.
FETCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Seconds from an event's commit to its endpoint's 2xx: well under a second
# normally, hours when an endpoint was down and retries brought it through.
EVENT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0, 3600.0, 86400.0)

# Answers of the inbound webhook by HTTP status, when the view did not say more.
WEBHOOK_STATUS_OUTCOMES = {
    400: "malformed",
    403: "forbidden",
    405: "method_not_allowed",
    413: "too_large",
    503: "unavailable",
}


def multiprocess_dir() -> Path | None:
    """The shared metrics directory of this process tree, or None (single-process mode)."""
    raw = os.environ.get(ENV_DIR, "").strip()
    return Path(raw) if raw else None


def setup_multiprocess(directory: Path | None = None) -> Path:
    """Switch this process (and the workers it forks) to multiprocess metrics.

    Call it in the gunicorn master before any worker forks. The directory is
    ``PROMETHEUS_MULTIPROC_DIR`` when set, else `directory`, else a private
    temporary directory removed when the master exits. Files left by an
    earlier run are deleted: their counters belong to processes that are gone.
    """
    chosen = multiprocess_dir() or directory
    created = chosen is None
    path = Path(tempfile.mkdtemp(prefix="mms-receiver-metrics-")) if chosen is None else chosen
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[ENV_DIR] = str(path)
    # prometheus-client picks its value store when it is first imported; metrics
    # created from now on (in the forked workers) must write to the shared files.
    values.ValueClass = values.get_value_class()
    if created:
        owner = os.getpid()

        def _remove() -> None:
            # Forked workers inherit this hook; only the master removes the directory.
            if os.getpid() == owner:
                shutil.rmtree(path, ignore_errors=True)

        atexit.register(_remove)
    return path


def child_exit(server: Any, worker: Any) -> None:
    """Gunicorn `child_exit` hook: forget the dead worker's live gauges."""
    path = multiprocess_dir()
    if path is not None:
        mark_process_dead(worker.pid, str(path))


class Metrics:
    """The service's counters and histograms, for one process.

    In multiprocess mode the values live in the shared directory and this
    object only writes them; otherwise they live in a private registry, so
    several apps in one process (tests) never see each other's counts.
    """

    def __init__(self) -> None:
        self.multiprocess_path = multiprocess_dir()
        registry = (
            None if self.multiprocess_path is not None else CollectorRegistry(auto_describe=True)
        )
        self.registry = registry

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(f"{PREFIX}_{name}", documentation, labels, registry=registry)

        self.webhooks = counter(
            "webhooks", "Inbound message webhooks answered, by outcome.", "outcome"
        )
        self.media = counter(
            "media",
            "Media items processed, by final verdict (state), reason and kind.",
            "state",
            "reason",
            "kind",
        )
        self.stored_bytes = counter(
            "stored_bytes", "Bytes of original media written to object storage.", "kind"
        )
        self.fetch_seconds = Histogram(
            f"{PREFIX}_media_fetch_seconds",
            "Seconds from claiming a media item to its verdict (download, inspect, store).",
            ["state"],
            buckets=FETCH_BUCKETS,
            registry=registry,
        )
        self.outbound = counter(
            "outbound_status_callbacks",
            "Verified outbound status callbacks, by reported status.",
            "status",
        )
        self.event_deliveries = counter(
            "event_deliveries",
            "Event delivery attempts, by outcome (delivered, retry, failed, deferred).",
            "outcome",
        )
        self.event_latency = Histogram(
            f"{PREFIX}_event_delivery_latency_seconds",
            "Seconds from an event's commit to its endpoint's 2xx answer.",
            buckets=EVENT_BUCKETS,
            registry=registry,
        )

        self.live_streams = Gauge(
            f"{PREFIX}_live_streams",
            "Open live-update streams (GET /api/stream), all processes together.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.live_dropped = counter(
            "live_streams_dropped",
            "Live-update streams closed because their client stopped reading.",
        )

    # -- recording ---------------------------------------------------------

    def observe_streams(self, open_streams: int, dropped_slow: bool) -> None:
        """The stream hub's observer: this process's open streams, and slow clients dropped."""
        self.live_streams.set(open_streams)
        if dropped_slow:
            self.live_dropped.inc()

    def webhook(self, outcome: str) -> None:
        """Count one inbound webhook answer (recorded, duplicate, forbidden, ...)."""
        self.webhooks.labels(outcome=_label(outcome)).inc()

    def observe_item(self, outcome: Any, seconds: float) -> None:
        """The pipeline's observer: count one processed media item and time it.

        `outcome` is a `receiver.inbound.pipeline.ItemOutcome`; items that went back to
        the queue (index unavailable) or whose message was deleted meanwhile
        are timed but not counted as verdicts.
        """
        state = _label(outcome.state)
        self.fetch_seconds.labels(state=state).observe(max(seconds, 0.0))
        if state in ("pending", "deleted"):
            return
        kind = _label(outcome.kind or "unknown")
        self.media.labels(state=state, reason=_label(outcome.reason or "none"), kind=kind).inc()
        if state == "stored" and outcome.size_bytes:
            self.stored_bytes.labels(kind=kind).inc(outcome.size_bytes)

    def observe_delivery(self, outcome: str, latency: float | None) -> None:
        """The event dispatcher's observer: count one attempt, time a delivery."""
        self.event_deliveries.labels(outcome=_label(outcome)).inc()
        if latency is not None:
            self.event_latency.observe(max(latency, 0.0))

    def outbound_status(self, status: str) -> None:
        """Count one verified outbound status callback."""
        self.outbound.labels(status=_label(status)).inc()

    # -- exposition --------------------------------------------------------

    def render(
        self, index: MediaIndex | None = None, outbound: OutboundIndex | None = None
    ) -> tuple[bytes, str]:
        """The Prometheus text of every process's values plus gauges read from the index now."""
        scrape = CollectorRegistry(auto_describe=False)
        if self.multiprocess_path is not None:
            MultiProcessCollector(scrape, path=str(self.multiprocess_path))
        elif self.registry is not None:
            scrape.register(_Forward(self.registry.collect))
        if index is not None and outbound is not None:
            scrape.register(IndexCollector(index, outbound))
        return generate_latest(scrape), CONTENT_TYPE_LATEST


class _Forward:
    """Adds another registry's metrics to a scrape."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        """The other registry's metrics, unchanged."""
        yield from self._collect()


class IndexCollector:
    """Gauges read from the index at scrape time: backlog and outbound messages by status."""

    def __init__(self, index: MediaIndex, outbound: OutboundIndex) -> None:
        self.index = index
        self.outbound = outbound

    def collect(self) -> Iterator[Metric]:
        """Yield the gauges; `mmsr_index_up` is 0 (and the others absent) when the index is down."""
        from receiver.errors import IndexUnavailable

        up = GaugeMetricFamily(f"{PREFIX}_index_up", "Whether the index answered this scrape.")
        try:
            backlog = self.index.backlog()
            outbound = self.outbound.count_by_status()
            events = self.index.event_figures()
        except IndexUnavailable as exc:
            log.warning("metrics: index unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        pending = GaugeMetricFamily(
            f"{PREFIX}_media_backlog",
            "Media items waiting for work (pending, or failed and retryable), by state.",
            labels=["state"],
        )
        for state in ("pending", "failed"):
            pending.add_metric([state], backlog.get(state, 0))
        yield pending
        items = GaugeMetricFamily(
            f"{PREFIX}_media_items", "Media items in the index, by state.", labels=["state"]
        )
        for state, count in sorted(backlog.items()):
            items.add_metric([state], count)
        yield items
        out = GaugeMetricFamily(
            f"{PREFIX}_outbound_messages",
            "Outbound messages in the index, by current status.",
            labels=["status"],
        )
        for status, count in sorted(outbound.items()):
            out.add_metric([status], count)
        yield out
        yield from _event_gauges(events)


def _event_gauges(figures: Figures) -> Iterator[Metric]:
    for name, documentation, label, counts in (
        (
            "events",
            "Events in the log (created and kept), by type.",
            "type",
            figures.events_by_type,
        ),
        (
            "event_deliveries_by_state",
            "Event deliveries by state (pending, delivered, failed, abandoned).",
            "state",
            figures.deliveries_by_state,
        ),
        (
            "event_backlog",
            "Event deliveries still pending, by endpoint.",
            "endpoint",
            figures.backlog_by_endpoint,
        ),
    ):
        gauge = GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=[label])
        for value, count in sorted(counts.items()):
            gauge.add_metric([value], count)
        yield gauge
    disabled = GaugeMetricFamily(f"{PREFIX}_event_endpoints_disabled", "Disabled event endpoints.")
    disabled.add_metric([], len(figures.disabled))
    yield disabled


def _label(value: str) -> str:
    """A bounded label value: label sets stay small whatever a caller passes."""
    text = str(value).strip().lower()[:40]
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in text) or "none"
