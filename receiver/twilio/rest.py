"""The small Twilio REST client: messages, media, phone numbers, Messaging Services.

One `requests.Session` per client, HTTP Basic auth (an API key is preferred over
the Account SID + Auth Token), a timeout on every call, and the base URL taken
from `TWILIO_API_BASE` so tests can point it at a local fake.

Every error becomes a `TwilioRestError` (a `TwilioApiError`) carrying Twilio's
`code`, `message`, `more_info` and the HTTP `status`, plus a `hint` that names
the fix. HTTP 429 / error 20429 ("too many concurrent requests") and 5xx
answers are retried with jittered exponential backoff, honouring
`Retry-After`. A request that may have reached Twilio without an answer (a
read timeout on a POST) is never retried blindly: the caller decides.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.auth import HTTPBasicAuth

from receiver.errors import ConfigError, TwilioApiError
from receiver.httpheaders import retry_after
from receiver.settings import DEFAULT_API_BASE, Settings

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEFAULT_MESSAGING_BASE = "https://messaging.twilio.com"
DEFAULT_TIMEOUT = (5.0, 30.0)
USER_AGENT = "mms-receiver/0.1"

#: Fixes for the errors users meet most, by Twilio error code; Twilio explains each code at
#: https://www.twilio.com/docs/api/errors/<code>.
HINTS: dict[int, str] = {
    20003: (
        "check TWILIO_API_KEY/TWILIO_API_SECRET (or TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN) and "
        "that the key belongs to TWILIO_ACCOUNT_SID"
    ),
    20404: "no such resource in this account; check the SID or phone number",
    20429: "Twilio limits concurrent API requests; send with less concurrency or retry later",
    21211: "the To number is not a valid phone number; write it in E.164 form, e.g. +15558675310",
    21602: "give a --body or at least one --media",
    21603: "give --from (one of your Twilio numbers) or --messaging-service MG...",
    21604: "give --to, the recipient's number in E.164 form",
    21606: "From must be a Twilio number of this account able to message this destination",
    21608: "a trial account can only message verified numbers; verify it or upgrade",
    21610: "the recipient replied STOP; they must text START before you can message them again",
    21611: "the sender's queue is full; send more slowly or set a ValidityPeriod",
    21612: "Twilio cannot route between this To and From; check the sender's capabilities",
    21617: "shorten the body to at most 1600 characters",
    21620: "media URLs must be absolute, publicly reachable http(s) URLs",
    21623: "send at most 10 media files per message",
    21658: "shorten the body to at most 1600 characters",
    21659: "From must be a Twilio number (or short code) of this account",
    11200: "Twilio could not fetch a URL; make sure it is public and answers 200",
    11751: "keep the message's media under 5 MB in total (or use --fallback link)",
    12300: "serve each media URL with the Content-Type of its bytes (an accepted MMS type)",
}

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class TwilioRestError(TwilioApiError):
    """Twilio's REST API (or the way to it) failed; `hint` names the fix."""

    def __init__(
        self,
        code: int | None,
        message: str,
        more_info: str | None,
        status: int,
        *,
        hint: str = "",
        details: Any = None,
        attempts: int = 1,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(code, message, more_info, status)
        self.hint = hint
        self.details = details
        self.attempts = attempts
        #: The request may have taken effect although no usable answer came back.
        self.maybe_sent = maybe_sent
        if hint:
            self.args = (f"{self.args[0]}; {hint}",)

    @property
    def retryable(self) -> bool:
        """Whether trying the same request later may succeed (throttling, server errors)."""
        return self.status in _RETRY_STATUSES or self.code == 20429 or self.status == 0


@dataclass(frozen=True)
class RetryPolicy:
    """How throttled (429/20429) and failed (5xx) requests are retried."""

    attempts: int = 4
    base: float = 0.5
    cap: float = 8.0
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("RetryPolicy.attempts must be at least 1")
        if self.base < 0 or self.cap < 0 or self.max_retry_after < 0:
            raise ConfigError("RetryPolicy delays must be >= 0 seconds")

    def delay(self, attempt: int, retry_after: float | None, rng: Callable[[], float]) -> float:
        """Seconds to wait before try `attempt + 1`: full jitter, never less than Retry-After."""
        jitter = rng() * min(self.cap, self.base * (2**attempt))
        if retry_after is not None:
            return min(max(retry_after, jitter), self.max_retry_after)
        return jitter


def messaging_base_for(api_base: str) -> str:
    """The Messaging API (v1 Services) base that goes with a REST base URL.

    Twilio's own hosts map ``api.`` to ``messaging.`` (regional hosts too); any
    other base (a local fake, a proxy) serves both APIs itself.
    """
    parts = urlsplit(api_base)
    host = parts.hostname or ""
    if host == "api.twilio.com" or (host.startswith("api.") and host.endswith(".twilio.com")):
        netloc = parts.netloc.replace("api.", "messaging.", 1)
        return f"{parts.scheme}://{netloc}"
    return api_base.rstrip("/")


class TwilioRest:
    """Calls Twilio's REST API for one account with one set of credentials."""

    def __init__(
        self,
        account_sid: str,
        credentials: tuple[str, str],
        *,
        api_base: str = DEFAULT_API_BASE,
        messaging_base: str | None = None,
        conversations_base: str = "https://conversations.twilio.com",
        events_base: str = "https://events.twilio.com",
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not account_sid:
            raise ConfigError(
                "TWILIO_ACCOUNT_SID is not set; the REST API needs the account SID (AC...)"
            )
        if len(credentials) != 2 or not all(credentials):
            raise ConfigError(
                "Twilio REST credentials are missing; set TWILIO_API_KEY and TWILIO_API_SECRET "
                "(recommended) or TWILIO_AUTH_TOKEN"
            )
        self.account_sid = account_sid
        self.api_base = api_base.rstrip("/")
        self.messaging_base = (messaging_base or messaging_base_for(self.api_base)).rstrip("/")
        self.conversations_base = conversations_base.rstrip("/")
        self.events_base = events_base.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng
        self.session = session or requests.Session()
        self.session.auth = HTTPBasicAuth(*credentials)
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})

    def __repr__(self) -> str:
        return f"TwilioRest({self.account_sid!r}, api_base={self.api_base!r})"

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> TwilioRest:
        """A client from Settings; ConfigError naming the variables when credentials are missing."""
        credentials = settings.rest_credentials
        if not settings.account_sid or credentials is None:
            missing = [] if settings.account_sid else ["TWILIO_ACCOUNT_SID"]
            if credentials is None:
                missing.append("TWILIO_API_KEY and TWILIO_API_SECRET (or TWILIO_AUTH_TOKEN)")
            raise ConfigError(
                f"sending and configuring numbers need Twilio REST credentials: set "
                f"{' and '.join(missing)}"
            )
        return cls(
            settings.account_sid,
            credentials,
            api_base=settings.api_base,
            conversations_base=settings.conversations_base,
            events_base=settings.events_base,
            **kwargs,
        )

    def close(self) -> None:
        """Release pooled connections."""
        self.session.close()

    # -- URLs ---------------------------------------------------------------

    def account_url(self, path: str) -> str:
        """``<api_base>/2010-04-01/Accounts/<AccountSid><path>``."""
        return f"{self.api_base}/{API_VERSION}/Accounts/{self.account_sid}{path}"

    def media_url(self, message_sid: str, media_sid: str) -> str:
        """The URL of a media file's bytes (what an inbound webhook's MediaUrlN holds)."""
        return self.account_url(f"/Messages/{message_sid}/Media/{media_sid}")

    # -- messages -----------------------------------------------------------

    def create_message(
        self,
        *,
        to: str,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        body: str | None = None,
        media_urls: Sequence[str] = (),
        status_callback: str | None = None,
        validity_period: int | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST Messages.json; returns the created Message resource (status queued/accepted).

        Several media URLs are sent as repeated ``MediaUrl`` parameters, as
        Twilio's SDKs do.
        """
        if not to:
            raise ValueError("create_message needs `to`")
        if not from_ and not messaging_service_sid:
            raise ValueError("create_message needs `from_` or `messaging_service_sid`")
        data: list[tuple[str, str]] = [("To", to)]
        if from_:
            data.append(("From", from_))
        if messaging_service_sid:
            data.append(("MessagingServiceSid", messaging_service_sid))
        if body:
            data.append(("Body", body))
        data.extend(("MediaUrl", url) for url in media_urls)
        if status_callback:
            data.append(("StatusCallback", status_callback))
        if validity_period is not None:
            data.append(("ValidityPeriod", str(validity_period)))
        data.extend((extra or {}).items())
        result: dict[str, Any] = self._call("POST", self.account_url("/Messages.json"), data=data)
        return result

    def fetch_message(self, sid: str) -> dict[str, Any]:
        """GET one Message resource."""
        result: dict[str, Any] = self._call("GET", self.account_url(f"/Messages/{sid}.json"))
        return result

    def list_messages(
        self,
        *,
        to: str | None = None,
        from_: str | None = None,
        date_sent_after: datetime | None = None,
        date_sent_before: datetime | None = None,
        page_size: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Every Message matching the filters, newest first, following `next_page_uri`."""
        params: list[tuple[str, str]] = [("PageSize", str(page_size))]
        if to:
            params.append(("To", to))
        if from_:
            params.append(("From", from_))
        if date_sent_after is not None:
            params.append(("DateSent>", _iso(date_sent_after)))
        if date_sent_before is not None:
            params.append(("DateSent<", _iso(date_sent_before)))
        yield from self._pages(self.account_url("/Messages.json"), params, "messages")

    def list_media(self, message_sid: str) -> list[dict[str, Any]]:
        """Every Media resource of one message."""
        url = self.account_url(f"/Messages/{message_sid}/Media.json")
        return list(self._pages(url, [("PageSize", "100")], "media_list"))

    def fetch_media(self, message_sid: str, media_sid: str) -> dict[str, Any]:
        """GET one Media resource's metadata."""
        url = self.account_url(f"/Messages/{message_sid}/Media/{media_sid}.json")
        result: dict[str, Any] = self._call("GET", url)
        return result

    def delete_media(self, message_sid: str, media_sid: str) -> bool:
        """DELETE one Media resource; False when it was already gone (404)."""
        url = self.account_url(f"/Messages/{message_sid}/Media/{media_sid}.json")
        try:
            self._call("DELETE", url)
        except TwilioRestError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- numbers and services ----------------------------------------------

    def find_incoming_number(self, phone_number: str) -> dict[str, Any] | None:
        """The IncomingPhoneNumber resource for an E.164 number of this account, or None."""
        url = self.account_url("/IncomingPhoneNumbers.json")
        for item in self._pages(url, [("PhoneNumber", phone_number)], "incoming_phone_numbers"):
            if item.get("phone_number") == phone_number:
                return item
        return None

    def update_incoming_number(self, sid: str, params: Mapping[str, str]) -> dict[str, Any]:
        """POST changes (e.g. SmsUrl, SmsMethod) to an IncomingPhoneNumber; returns it."""
        url = self.account_url(f"/IncomingPhoneNumbers/{sid}.json")
        result: dict[str, Any] = self._call("POST", url, data=list(params.items()))
        return result

    def fetch_messaging_service(self, sid: str) -> dict[str, Any]:
        """GET a Messaging Service (v1)."""
        result: dict[str, Any] = self._call("GET", f"{self.messaging_base}/v1/Services/{sid}")
        return result

    def update_messaging_service(self, sid: str, params: Mapping[str, str]) -> dict[str, Any]:
        """POST changes (e.g. InboundRequestUrl, StatusCallback) to a Messaging Service."""
        url = f"{self.messaging_base}/v1/Services/{sid}"
        result: dict[str, Any] = self._call("POST", url, data=list(params.items()))
        return result

    def conversations_webhooks_url(self, service_sid: str | None) -> str:
        """The global (or one Chat Service's) Conversations webhook configuration:
        https://www.twilio.com/docs/conversations/api/webhook-configuration-resource and
        https://www.twilio.com/docs/conversations/api/per-service-webhook-resource"""
        scope = f"/v1/Services/{service_sid}" if service_sid else "/v1"
        return f"{self.conversations_base}{scope}/Configuration/Webhooks"

    def fetch_conversations_webhooks(self, service_sid: str | None) -> dict[str, Any]:
        """GET the webhook configuration (`post_webhook_url`, `method`, `filters`, …)."""
        result: dict[str, Any] = self._call("GET", self.conversations_webhooks_url(service_sid))
        return result

    def update_conversations_webhooks(
        self, service_sid: str | None, params: list[tuple[str, str]]
    ) -> dict[str, Any]:
        """POST changes (`PostWebhookUrl`, `Method`, repeated `Filters`)."""
        url = self.conversations_webhooks_url(service_sid)
        result: dict[str, Any] = self._call("POST", url, data=params)
        return result

    # -- conversations --------------------------------------------------------
    # https://www.twilio.com/docs/conversations/api/conversation-resource ,
    # .../conversation-participant-resource and .../conversation-message-resource

    def fetch_conversation(self, sid: str) -> dict[str, Any]:
        """GET a Conversation (its `chat_service_sid`, `messaging_service_sid`, …)."""
        url = f"{self.conversations_base}/v1/Conversations/{sid}"
        result: dict[str, Any] = self._call("GET", url)
        return result

    def list_conversation_participants(self, sid: str) -> list[dict[str, Any]]:
        """The participants of a Conversation (one page of 100: group MMS allows 10)."""
        url = f"{self.conversations_base}/v1/Conversations/{sid}/Participants"
        page = self._call("GET", url, params=[("PageSize", "100")])
        items = page.get("participants") if isinstance(page, dict) else None
        return [p for p in items if isinstance(p, dict)] if isinstance(items, list) else []

    def create_conversation_message(
        self,
        sid: str,
        *,
        author: str | None,
        body: str | None,
        media_sid: str | None,
        attributes: str | None = None,
    ) -> dict[str, Any]:
        """POST a Message into a Conversation; `MediaSid` is a single field (one file each),
        `Attributes` a JSON string kept with the message."""
        data: list[tuple[str, str]] = []
        if author:
            data.append(("Author", author))
        if body:
            data.append(("Body", body))
        if media_sid:
            data.append(("MediaSid", media_sid))
        if attributes:
            data.append(("Attributes", attributes))
        url = f"{self.conversations_base}/v1/Conversations/{sid}/Messages"
        # A 5xx may still have created the message: the caller looks before trying again.
        result: dict[str, Any] = self._call("POST", url, data=data, repeat_server_errors=False)
        return result

    def list_conversation_messages(self, sid: str) -> Iterator[dict[str, Any]]:
        """A Conversation's Messages, newest first (`Order=desc`), page by page."""
        url = f"{self.conversations_base}/v1/Conversations/{sid}/Messages"
        return self._v1_pages(url, "messages", [("Order", "desc")])

    def list_message_receipts(self, sid: str, message_sid: str) -> list[dict[str, Any]]:
        """A Conversation Message's per-participant delivery receipts
        (https://www.twilio.com/docs/conversations/api/receipt-resource)."""
        url = f"{self.conversations_base}/v1/Conversations/{sid}/Messages/{message_sid}/Receipts"
        return list(self._v1_pages(url, "delivery_receipts"))

    # -- Event Streams ---------------------------------------------------------
    # https://www.twilio.com/docs/events/event-streams/sink-resource and
    # https://www.twilio.com/docs/events/event-streams/subscription : v1 lists page
    # through `meta.next_page_url` (absolute), under the key the list names.

    def list_sinks(self) -> list[dict[str, Any]]:
        """Every Sink of the account (`sid`, `sink_type`, `sink_configuration`, `status`)."""
        return list(self._v1_pages(f"{self.events_base}/v1/Sinks", "sinks"))

    def create_sink(self, description: str, destination: str, *, batch: bool) -> dict[str, Any]:
        """POST /v1/Sinks: a webhook sink (Description, SinkType and SinkConfiguration are
        required; the configuration is JSON `{destination, method, batch_events}`)."""
        configuration = {"destination": destination, "method": "POST", "batch_events": batch}
        data = [
            ("Description", description),
            ("SinkType", "webhook"),
            ("SinkConfiguration", json.dumps(configuration)),
        ]
        result: dict[str, Any] = self._call("POST", f"{self.events_base}/v1/Sinks", data=data)
        return result

    def fetch_sink(self, sid: str) -> dict[str, Any]:
        """GET one Sink (its `status`: initialized, validating, active or failed)."""
        result: dict[str, Any] = self._call("GET", f"{self.events_base}/v1/Sinks/{sid}")
        return result

    def test_sink(self, sid: str) -> dict[str, Any]:
        """POST /v1/Sinks/{DG}/Test: Twilio sends the sink a test event carrying `test_id`."""
        result: dict[str, Any] = self._call("POST", f"{self.events_base}/v1/Sinks/{sid}/Test")
        return result

    def validate_sink(self, sid: str, test_id: str) -> dict[str, Any]:
        """POST /v1/Sinks/{DG}/Validate with the test event's `TestId`; `{"result": "valid"}`."""
        url = f"{self.events_base}/v1/Sinks/{sid}/Validate"
        result: dict[str, Any] = self._call("POST", url, data=[("TestId", test_id)])
        return result

    def list_subscriptions(self, sink_sid: str) -> list[dict[str, Any]]:
        """The Subscriptions that deliver to one sink."""
        url = f"{self.events_base}/v1/Subscriptions"
        return list(self._v1_pages(url, "subscriptions", [("SinkSid", sink_sid)]))

    def list_subscribed_events(self, subscription_sid: str) -> list[dict[str, Any]]:
        """The event types (`type`, `schema_version`) one Subscription delivers."""
        url = f"{self.events_base}/v1/Subscriptions/{subscription_sid}/SubscribedEvents"
        return list(self._v1_pages(url, "types"))

    def create_subscription(
        self, description: str, sink_sid: str, types: Sequence[str]
    ) -> dict[str, Any]:
        """POST /v1/Subscriptions: `Types` is repeated, each a JSON object naming one `type`
        (no `schema_version`: the latest). Twilio needs the sink to be active."""
        data = [("Description", description), ("SinkSid", sink_sid)]
        data += [("Types", json.dumps({"type": t})) for t in types]
        result: dict[str, Any] = self._call(
            "POST", f"{self.events_base}/v1/Subscriptions", data=data
        )
        return result

    def add_subscribed_event(self, subscription_sid: str, event_type: str) -> dict[str, Any]:
        """POST …/Subscriptions/{DF}/SubscribedEvents (`Type`): one more type."""
        url = f"{self.events_base}/v1/Subscriptions/{subscription_sid}/SubscribedEvents"
        result: dict[str, Any] = self._call("POST", url, data=[("Type", event_type)])
        return result

    def _v1_pages(
        self, url: str, key: str, params: list[tuple[str, str]] | None = None
    ) -> Iterator[dict[str, Any]]:
        next_url: str | None = url
        query: list[tuple[str, str]] | None = [*(params or []), ("PageSize", "100")]
        while next_url:
            page = self._call("GET", next_url, params=query)
            items = page.get(key) if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise TwilioRestError(
                    None,
                    f"Twilio's list answer has no {key!r} list",
                    None,
                    200,
                    hint="check TWILIO_EVENTS_BASE points at Twilio's Events API",
                )
            yield from (i for i in items if isinstance(i, dict))
            meta = page.get("meta") or {}
            next_url = meta.get("next_page_url") if isinstance(meta, dict) else None
            query = None  # next_page_url carries the whole query

    # -- transport ------------------------------------------------------------

    def _pages(self, url: str, params: list[tuple[str, str]], key: str) -> Iterator[dict[str, Any]]:
        next_url: str | None = url
        query: list[tuple[str, str]] | None = params
        while next_url:
            page = self._call("GET", next_url, params=query)
            if not isinstance(page, dict) or not isinstance(page.get(key), list):
                raise TwilioRestError(
                    None,
                    f"Twilio's list answer has no {key!r} list",
                    None,
                    200,
                    hint="check TWILIO_API_BASE points at Twilio's REST API",
                )
            yield from page[key]
            uri = page.get("next_page_uri")
            next_url = self._absolute(uri) if uri else None
            query = None  # next_page_uri carries the whole query

    def _absolute(self, uri: str) -> str:
        if uri.startswith(("http://", "https://")):
            return uri
        origin = urlsplit(self.api_base)
        return f"{origin.scheme}://{origin.netloc}{uri}"

    def _check_target(self, url: str) -> None:
        # Credentials go only to the configured Twilio origins.
        origins = {
            _origin(self.api_base),
            _origin(self.messaging_base),
            _origin(self.conversations_base),
            _origin(self.events_base),
        }
        if _origin(url) not in origins:
            raise TwilioRestError(
                None,
                f"refusing to send Twilio credentials to {_origin(url)}",
                None,
                0,
                hint="a next_page_uri pointed outside TWILIO_API_BASE",
            )

    def _call(
        self,
        method: str,
        url: str,
        *,
        data: list[tuple[str, str]] | None = None,
        params: list[tuple[str, str]] | None = None,
        repeat_server_errors: bool = True,
    ) -> Any:
        """One API call with retries; the decoded JSON answer (None for 204).

        With `repeat_server_errors` False a 5xx is not repeated and is reported as
        `maybe_sent`: the caller checks Twilio's record before trying again.
        """
        self._check_target(url)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.session.request(
                    method, url, data=data, params=params, timeout=self.timeout
                )
            except requests.RequestException as exc:
                error = _transport_error(method, url, exc, attempt)
                if _safe_to_repeat(method, exc) and attempt < self.retry.attempts:
                    self._wait(attempt, None, error)
                    continue
                raise error from None
            if response.status_code < 400:
                return _decode(response, method, url)
            error = _api_error(response, attempt)
            if error.status >= 500 and not repeat_server_errors:
                error.maybe_sent = True
                raise error
            if error.retryable and attempt < self.retry.attempts:
                self._wait(attempt, retry_after(response.headers.get("Retry-After")), error)
                continue
            raise error

    def _wait(self, attempt: int, retry_after: float | None, error: TwilioRestError) -> None:
        delay = self.retry.delay(attempt - 1, retry_after, self._rng)
        log.warning(
            "Twilio %s (HTTP %s); retrying in %.2fs (attempt %d of %d)",
            error.code or "error",
            error.status,
            delay,
            attempt + 1,
            self.retry.attempts,
        )
        self._sleep(delay)


# -- internals ---------------------------------------------------------------


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat[:120] + ("…" if len(flat) > 120 else "")


def _decode(response: requests.Response, method: str, url: str) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        side_effect = method != "GET"
        raise TwilioRestError(
            None,
            f"Twilio answered HTTP {response.status_code} to {method} {urlsplit(url).path} "
            f"with a body that is not JSON: {_snippet(response.text)!r}",
            None,
            response.status_code,
            hint=(
                "the request may have taken effect; check the Twilio console before repeating it"
                if side_effect
                else "check TWILIO_API_BASE points at Twilio's REST API"
            ),
            maybe_sent=side_effect,
        ) from None


def _api_error(response: requests.Response, attempts: int) -> TwilioRestError:
    """Twilio's JSON error body (2010 API or RFC 9457 style) as a TwilioRestError."""
    status = response.status_code
    tries = f"after {attempts} attempts, " if attempts > 1 else ""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        message = (
            f"HTTP {status} with a body that is not a Twilio JSON error: "
            f"{_snippet(response.text)!r}"
        )
        code = 20429 if status == 429 else None
        return TwilioRestError(
            code, message, None, status, hint=tries + _hint(code, status), attempts=attempts
        )
    code = _int(data.get("code"))
    message = str(data.get("message") or data.get("detail") or data.get("title") or "error")
    more_info = data.get("more_info") or data.get("type")
    return TwilioRestError(
        code,
        message,
        str(more_info) if more_info else None,
        status,
        hint=tries + _hint(code, status),
        details=data.get("details") or data.get("errors"),
        attempts=attempts,
    )


def _hint(code: int | None, status: int) -> str:
    if code is not None and code in HINTS:
        return HINTS[code]
    if status == 401:
        return HINTS[20003]
    if status == 404:
        return HINTS[20404]
    if status == 429:
        return HINTS[20429]
    if status >= 500:
        return "Twilio had a server error; try again in a few minutes"
    return "see more_info for what Twilio expects"


def _transport_error(
    method: str, url: str, exc: requests.RequestException, attempts: int
) -> TwilioRestError:
    parts = urlsplit(url)
    kind = "timed out" if isinstance(exc, requests.Timeout) else "failed"
    hint = "check TWILIO_API_BASE and the network"
    maybe_sent = not _safe_to_repeat(method, exc)
    if maybe_sent:
        hint = (
            "the request may have reached Twilio; check the Twilio console (or run "
            "`mms-receiver send` again: it resolves unknown sends before repeating them)"
        )
    return TwilioRestError(
        None,
        f"{method} {parts.scheme}://{parts.netloc}{parts.path} {kind} ({type(exc).__name__})",
        None,
        0,
        hint=hint,
        attempts=attempts,
        maybe_sent=maybe_sent,
    )


def _safe_to_repeat(method: str, exc: requests.RequestException) -> bool:
    """Reads repeat freely; a write only when the connection was never made."""
    if method in ("GET", "HEAD", "DELETE"):
        return True
    if isinstance(exc, requests.ConnectTimeout):
        return True
    return (
        isinstance(exc, requests.ConnectionError)
        and not isinstance(exc, requests.ReadTimeout)
        and "NewConnectionError" in repr(exc)
    )


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
