"""The dispatcher: one thread per process that delivers due events.

It claims up to `batch` due deliveries at once (an atomic lease, like media
items), renders each event's body once, signs it for each endpoint, sends
over one keep-alive session per endpoint, and records the whole batch's
outcomes in one transaction. It sleeps on the index's `events_due` flag,
which a commit that wrote deliveries sets, so events written in this
process leave at once; it polls every `poll` seconds for events of other
processes and for retries. It never runs on a request thread.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from receiver.errors import IndexUnavailable
from receiver.events.delivery import Senders
from receiver.events.payloads import Payloads
from receiver.events.policy import RetryPolicy
from receiver.events.signing import headers
from receiver.index import MediaIndex
from receiver.index.event_queue import Claimed, Outcome
from receiver.index.schema import utcnow

log = logging.getLogger(__name__)

#: Seconds a woken dispatcher waits for more events before it claims: a
#: little latency buys batches, and far fewer write transactions under load.
LINGER = 0.1

#: Called with the outcome ("delivered", "retry", "failed", "deferred") and, for
#: a delivery, the seconds from the event's commit to the endpoint's 2xx.
DeliveryObserver = Callable[[str, float | None], None]


class Dispatcher:
    """Delivers due events from one index through `senders`."""

    def __init__(
        self,
        index: MediaIndex,
        payloads: Payloads,
        senders: Senders,
        policy: RetryPolicy,
        *,
        lease_seconds: float,
        batch: int = 50,
        poll: float = 2.0,
        linger: float = LINGER,
        observer: DeliveryObserver | None = None,
    ) -> None:
        self.index = index
        self.payloads = payloads
        self.senders = senders
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.poll = poll
        self.linger = linger
        self.observer = observer
        self._owner = (-1, "")
        self._thread: threading.Thread | None = None

    @property
    def owner(self) -> str:
        """This process's lease owner id (a forked child gets its own)."""
        if self._owner[0] != os.getpid():
            name = f"{socket.gethostname()[:24]}:{os.getpid()}:ev{secrets.token_hex(4)}"
            self._owner = (os.getpid(), name)
        return self._owner[1]

    def run_once(self) -> int:
        """Deliver one batch of due events; how many deliveries were claimed."""
        if not self.index.deliveries_due():
            return 0  # a read: no write transaction (and no writer lock) for nothing
        claimed = self.index.claim_deliveries(
            self.owner, lease_seconds=self.lease_seconds, limit=self.batch
        )
        if not claimed:
            return 0
        bodies: dict[str, bytes] = {}
        unreachable: set[str] = set()
        outcomes = [self._deliver(c, bodies, unreachable) for c in claimed]
        self.index.record_outcomes(self.owner, outcomes)
        return len(claimed)

    def _deliver(self, claim: Claimed, bodies: dict[str, bytes], unreachable: set[str]) -> Outcome:
        endpoint, event = claim.endpoint, claim.event
        now = utcnow()
        if endpoint.id in unreachable:
            # It just failed to connect: the rest of its batch waits instead.
            self._observe("deferred", None)
            return Outcome(
                claim.delivery_id,
                event.id,
                endpoint.id,
                claim.attempt,
                ok=False,
                attempted=False,
                next_attempt_at=self.policy.first_retry(now),
            )
        body = bodies.get(event.id)
        if body is None:
            body = bodies[event.id] = self.payloads.body(event)
        signed = headers(event.id, int(time.time()), body, endpoint.secrets_at(now))
        sent = self.senders.send(endpoint.id, endpoint.url, body, signed)
        tried = Outcome(
            claim.delivery_id,
            event.id,
            endpoint.id,
            claim.attempt,
            ok=sent.ok,
            status=sent.status,
            response=sent.response,
            error=sent.error,
            duration_ms=sent.duration_ms,
        )
        if sent.ok:
            self._observe("delivered", (utcnow() - event.created_at).total_seconds())
            return tried
        if sent.unreachable or sent.status == 410:
            unreachable.add(endpoint.id)
        disable = None
        if sent.status == 410:
            disable = "410 Gone: the endpoint asked not to be sent events any more"
        elif self.policy.gives_up(endpoint.last_success_at or endpoint.created_at, now):
            days = self.policy.disable_after / 86400
            disable = f"no successful delivery for {days:g} days"
        if disable:
            log.warning("events: endpoint %s disabled: %s", endpoint.id, disable)
        retry_at = None if disable else self.policy.next_attempt(claim.attempt, now)
        self._observe("retry" if retry_at else "failed", None)
        log.info(
            "events: %s to %s attempt %d failed: %s",
            event.id,
            endpoint.id,
            claim.attempt,
            sent.error,
        )
        return replace(tried, next_attempt_at=retry_at, disable=disable)

    def _observe(self, outcome: str, latency: float | None) -> None:
        if self.observer is not None:
            try:
                self.observer(outcome, latency)
            except Exception:
                log.exception("events observer failed")

    def run_forever(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set: soon after a commit wakes it, else every `poll` s.

        Woken, it waits `linger` seconds for the commits that follow to write
        theirs too, so one batch (two short write transactions) carries the
        events of many webhooks instead of each taking the writer twice.
        """
        due = self.index.events_due
        while not stop.is_set():
            due.clear()
            try:
                n = self.run_once()
            except IndexUnavailable as exc:
                log.warning("events: index unavailable (%s); retrying in %.0fs", exc, self.poll * 5)
                stop.wait(self.poll * 5)
                continue
            except Exception:
                log.exception("events: delivery batch failed")
                n = 0
            if n < self.batch and not stop.is_set() and due.wait(self.poll):
                stop.wait(self.linger)

    def start(self) -> threading.Event:
        """Run `run_forever` on a daemon thread of this process; returns its stop flag."""
        stop = threading.Event()
        self._thread = threading.Thread(
            target=self.run_forever, args=(stop,), name="events", daemon=True
        )
        self._thread.start()
        self._stop = stop
        return stop

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread started by `start` (leases of a batch in flight simply expire)."""
        if self._thread is None:
            return
        self._stop.set()
        self.index.events_due.set()
        self._thread.join(timeout)
        self._thread = None
