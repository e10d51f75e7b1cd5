"""A fake of Twilio's REST API on loopback: a real threaded HTTP server that checks requests
the way Twilio documents them: status callbacks
(https://www.twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks),
the Media resource (https://www.twilio.com/docs/messaging/api/media-resource), accepted media
(https://www.twilio.com/docs/messaging/guides/accepted-mime-types), authentication
(https://www.twilio.com/docs/usage/requests-to-twilio) and opt-outs
(https://www.twilio.com/docs/api/errors/21610).

What it does:

* HTTP Basic auth with the Account SID + Auth Token or an API key + secret (20003);
* ``POST Messages.json``: To, From|MessagingServiceSid and Body|MediaUrl required
  (21604/21603/21602), E.164 To (21211), a From owned by the account (21606), Body at
  most 1600 characters (21658), at most 10 MediaUrl (21623), http(s) URLs (21620),
  opted-out recipients (21610). Each MediaUrl is fetched without credentials with
  HEAD and GET, like Twilio: unreachable or non-2xx (11200), a missing, unaccepted or
  lying Content-Type, or HEAD and GET disagreeing (12300), more than 5 MB in total
  (11751);
* stores messages and their media; list (filters To, From, DateSent>/<, pages),
  fetch, media list/fetch/bytes/delete; IncomingPhoneNumbers lookup and update;
  Messaging Services (v1) fetch and update;
* fires signed status callbacks (X-Twilio-Signature with the auth token) out of order;
* faults on demand: the next N requests answer 429/20429 (with Retry-After), 500, or a
  body that is not JSON; a create can be processed and its answer lost.

Tests point ``TWILIO_API_BASE`` (and so the Messaging API base) at ``FakeTwilio.url``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import magic
import requests

from receiver.twilio.signature import compute_signature

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
MMS_LIMIT = 5 * 1024 * 1024
ACCEPTED_TYPES = frozenset(
    {
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/bmp",
        "image/tiff",
        "audio/basic",
        "audio/l24",
        "audio/mp4",
        "audio/mpeg",
        "audio/ogg",
        "audio/vnd.rn-realaudio",
        "audio/vnd.wave",
        "audio/wav",
        "audio/3gpp",
        "audio/3gpp2",
        "audio/ac3",
        "audio/webm",
        "audio/amr-nb",
        "audio/amr",
        "audio/aac",
        "video/mpeg",
        "video/mp4",
        "video/quicktime",
        "video/webm",
        "video/3gpp",
        "video/3gpp2",
        "video/3gpp-tt",
        "video/h261",
        "video/h263",
        "video/h263-1998",
        "video/h263-2000",
        "video/h264",
        "text/vcard",
        "text/x-vcard",
        "text/csv",
        "text/rtf",
        "text/richtext",
        "text/calendar",
        "text/directory",
        "application/pdf",
        "application/vcard",
        "application/vnd.apple.pkpass",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    }
)
# Spellings that name the same bytes.
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "text/x-vcard": "text/vcard",
    "text/directory": "text/vcard",
    "application/vcard": "text/vcard",
    "audio/vnd.wave": "audio/wav",
    "audio/x-wav": "audio/wav",
    "audio/amr-nb": "audio/amr",
}
DEFAULT_SEQUENCE = ("sending", "delivered", "queued", "sent")
_RANK = {
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "read": 5,
}


def _norm(ctype: str | None) -> str:
    base = (ctype or "").split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def _rfc2822(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class ApiError(Exception):
    """An error answer of the fake (Twilio's JSON error body)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Fault:
    """The next `count` requests (matching `path`, a substring) get this answer."""

    count: int
    status: int
    code: int | None = None
    retry_after: str | None = None
    malformed: bool = False
    path: str = ""
    #: Process the request normally, then drop the connection instead of answering.
    drop_after_processing: bool = False


@dataclass
class Callback:
    """One status callback the fake sent."""

    url: str
    params: list[tuple[str, str]]
    status_code: int | None
    sent_at: float = field(default_factory=time.monotonic)


class FakeTwilio:
    """Twilio's REST API for one account, on 127.0.0.1. Use as a context manager."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_key: str | None = None,
        api_secret: str | None = None,
        numbers: Sequence[str] = ("+15017122661",),
        callback_delay: float = 0.02,
        sequence: Sequence[str] = DEFAULT_SEQUENCE,
        create_delay: float = 0.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.api_key = api_key
        self.api_secret = api_secret
        self.callback_delay = callback_delay
        self.sequence = tuple(sequence)
        self.create_delay = create_delay
        self.lock = threading.RLock()
        self.messages: dict[str, dict[str, Any]] = {}
        self.media: dict[str, dict[str, dict[str, Any]]] = {}
        self.media_bytes: dict[str, bytes] = {}
        self.numbers: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.opted_out: set[str] = set()
        #: To number -> (final status, ErrorCode) for status callbacks.
        self.outcomes: dict[str, tuple[str, int | None]] = {}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.media_fetches: list[tuple[str, str]] = []
        self.callbacks: list[Callback] = []
        self.rejections: list[tuple[int, str]] = []
        #: The Basic-auth user name of every request (API key SID or Account SID).
        self.auth_users: list[str] = []
        #: Once this many outbound messages exist, creating another fails with this status
        #: (503 by default; 401 acts like credentials revoked in the middle of a run).
        self.fail_creates_after: int | None = None
        self.fail_creates_status = 503
        self._threads: list[threading.Thread] = []
        for number in numbers:
            self.add_number(number)
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> FakeTwilio:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        return self

    def stop(self) -> None:
        for thread in list(self._threads):
            thread.join(5)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def host_port(self) -> str:
        return urlsplit(self.url).netloc

    # -- set-up ----------------------------------------------------------------------

    def add_number(self, number: str, **fields: Any) -> dict[str, Any]:
        with self.lock:
            sid = _sid("PN")
            self.numbers[sid] = {
                "sid": sid,
                "account_sid": self.account_sid,
                "phone_number": number,
                "friendly_name": number,
                "sms_url": "",
                "sms_method": "POST",
                "sms_fallback_url": "",
                "status_callback": "",
                "capabilities": {"sms": True, "mms": True, "voice": True},
                **fields,
            }
            return self.numbers[sid]

    def add_service(self, **fields: Any) -> dict[str, Any]:
        with self.lock:
            sid = _sid("MG")
            self.services[sid] = {
                "sid": sid,
                "account_sid": self.account_sid,
                "friendly_name": "Test service",
                "inbound_request_url": None,
                "inbound_method": "POST",
                "fallback_url": None,
                "status_callback": None,
                "use_inbound_webhook_on_number": True,
                **fields,
            }
            return self.services[sid]

    def add_inbound(
        self,
        *,
        from_: str,
        to: str,
        body: str = "",
        media: Sequence[tuple[bytes, str]] = (),
        date_sent: datetime | None = None,
    ) -> str:
        """A received message (as if Twilio had it but the webhook never reached us)."""
        with self.lock:
            sid = _sid("MM" if media else "SM")
            sent = date_sent or datetime.now(UTC)
            message = self._message_json(
                sid,
                to=to,
                from_=from_,
                body=body,
                status="received",
                direction="inbound",
                num_media=len(media),
                when=sent,
            )
            self.messages[sid] = message
            for data, ctype in media:
                self._store_media(sid, data, ctype)
            return sid

    def fail_next(
        self,
        count: int,
        status: int,
        code: int | None = None,
        *,
        retry_after: str | None = None,
        path: str = "",
    ) -> None:
        """The next `count` requests (to paths containing `path`) get an error answer."""
        with self.lock:
            self.faults.append(Fault(count, status, code, retry_after, path=path))

    def malformed_next(self, count: int, status: int = 200, *, path: str = "") -> None:
        """The next `count` requests get a body that is not JSON (nothing is processed)."""
        with self.lock:
            self.faults.append(Fault(count, status, malformed=True, path=path))

    def lose_answer_next(self, count: int = 1, *, path: str = "Messages.json") -> None:
        """Process the next `count` requests, then close the connection without answering."""
        with self.lock:
            self.faults.append(Fault(count, 0, path=path, drop_after_processing=True))

    # -- inspection -------------------------------------------------------------------

    def outbound(self) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages.values() if m["direction"] == "outbound-api"]

    def wait_callbacks(self, count: int, timeout: float = 10.0) -> list[Callback]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                done = [c for c in self.callbacks if c.status_code is not None]
                if len(done) >= count:
                    return list(self.callbacks)
            time.sleep(0.02)
        raise AssertionError(f"only {len(self.callbacks)} of {count} status callbacks were sent")

    # -- request handling ---------------------------------------------------------------

    def _take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and fault.path in path:
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        with self.lock:
            self.auth_users.append(user)
        if user == self.account_sid and password == self.auth_token:
            return True
        return bool(self.api_key) and user == self.api_key and password == self.api_secret

    def route(
        self, method: str, path: str, query: list[tuple[str, str]], form: list[tuple[str, str]]
    ) -> tuple[int, Any]:
        """Dispatch one authorised request; (status, JSON body or bytes with a type)."""
        prefix = f"/2010-04-01/Accounts/{self.account_sid}"
        if path.startswith("/2010-04-01/Accounts/") and not path.startswith(prefix + "/"):
            raise ApiError(403, 20003, "Authenticate: the account does not match the credentials")
        rest = path[len(prefix) :]
        if path.startswith("/v1/Services/"):
            return self._service(method, path.rsplit("/", 1)[-1], form)
        if rest == "/Messages.json":
            if method == "POST":
                return self.create_message(form)
            return 200, self._list_messages(query)
        match = re.fullmatch(r"/Messages/(\w+)\.json", rest)
        if match and method == "GET":
            return 200, self._get_message(match[1])
        match = re.fullmatch(r"/Messages/(\w+)/Media\.json", rest)
        if match and method == "GET":
            self._get_message(match[1])
            items = list(self.media.get(match[1], {}).values())
            return 200, self._page(path, items, "media_list", {}, 0, 1000)
        match = re.fullmatch(r"/Messages/(\w+)/Media/(\w+)(\.json)?", rest)
        if match:
            return self._media(method, match[1], match[2], bool(match[3]))
        if rest == "/IncomingPhoneNumbers.json" and method == "GET":
            wanted = dict(query).get("PhoneNumber")
            with self.lock:
                items = [
                    n
                    for n in self.numbers.values()
                    if wanted is None or n["phone_number"] == wanted
                ]
            return 200, self._page(path, items, "incoming_phone_numbers", {}, 0, 50)
        match = re.fullmatch(r"/IncomingPhoneNumbers/(\w+)\.json", rest)
        if match:
            return self._number(method, match[1], form)
        raise ApiError(404, 20404, f"The requested resource {path} was not found")

    # -- messages ----------------------------------------------------------------------

    def create_message(self, form: list[tuple[str, str]]) -> tuple[int, Any]:
        values: dict[str, list[str]] = {}
        for name, value in form:
            values.setdefault(name, []).append(value)

        def one(name: str) -> str:
            return values.get(name, [""])[0]

        to, from_, service = one("To"), one("From"), one("MessagingServiceSid")
        body, media_urls = one("Body"), values.get("MediaUrl", [])
        if self.fail_creates_after is not None and len(self.outbound()) >= self.fail_creates_after:
            if self.fail_creates_status == 401:
                raise ApiError(401, 20003, "Authenticate")
            raise ApiError(self.fail_creates_status, 20503, "Service Unavailable")
        if not to:
            raise ApiError(400, 21604, "A 'To' phone number is required.")
        if not from_ and not service:
            raise ApiError(400, 21603, "A 'From' phone number is required.")
        if not body and not media_urls:
            raise ApiError(400, 21602, "Message body is required.")
        if not E164.fullmatch(to):
            raise ApiError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        with self.lock:
            owned = {n["phone_number"] for n in self.numbers.values()}
        if from_ and from_ not in owned:
            raise ApiError(
                400,
                21606,
                f"The From phone number {from_} is not a valid, SMS-capable inbound phone "
                "number or short code for your account.",
            )
        if service and not re.fullmatch(r"MG[0-9a-f]{32}", service):
            raise ApiError(400, 21701, f"The Messaging Service Sid {service} is invalid.")
        if len(body) > 1600:
            raise ApiError(400, 21658, "Parameter exceeded character limit: Body > 1600")
        if len(media_urls) > 10:
            raise ApiError(400, 21623, "Number of media files exceeds allowed limit")
        for url in media_urls:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise ApiError(400, 21620, f"Invalid media URL(s): {url}")
        if to in self.opted_out:
            raise ApiError(400, 21610, "Attempt to send to unsubscribed recipient")
        fetched = [self._fetch_media(url) for url in media_urls]
        total = sum(len(data) for data, _ in fetched)
        if total > MMS_LIMIT:
            raise ApiError(400, 11751, "Media exceeds messaging provider size limit")
        if self.create_delay:
            time.sleep(self.create_delay)
        with self.lock:
            sid = _sid("MM" if media_urls else "SM")
            sender = from_ or self._pool_number()
            message = self._message_json(
                sid,
                to=to,
                from_=sender,
                body=body,
                status="accepted" if service and not from_ else "queued",
                direction="outbound-api",
                num_media=len(fetched),
                when=datetime.now(UTC),
                service=service or None,
            )
            self.messages[sid] = message
            for data, ctype in fetched:
                self._store_media(sid, data, ctype)
        callback = one("StatusCallback")
        if callback:
            self._schedule_callbacks(message, callback)
        return 201, message

    def _pool_number(self) -> str:
        return next(iter(self.numbers.values()))["phone_number"]

    def _fetch_media(self, url: str) -> tuple[bytes, str]:
        """HEAD and GET without credentials, and check the Content-Type against the bytes."""
        with self.lock:
            self.media_fetches.append(("HEAD", url))
        try:
            head = requests.head(url, timeout=5, allow_redirects=True)
            with self.lock:
                self.media_fetches.append(("GET", url))
            got = requests.get(url, timeout=10, allow_redirects=True)
        except requests.RequestException as exc:
            raise ApiError(400, 11200, f"HTTP retrieval failure: {url} ({type(exc).__name__})")
        if not head.ok or not got.ok:
            raise ApiError(
                400,
                11200,
                f"HTTP retrieval failure: HEAD {head.status_code}, GET {got.status_code} for {url}",
            )
        declared = _norm(got.headers.get("Content-Type"))
        if not declared:
            raise ApiError(400, 12300, f"Invalid Content-Type: none sent for {url}")
        if _norm(head.headers.get("Content-Type")) != declared:
            raise ApiError(400, 12300, f"Invalid Content-Type: HEAD and GET disagree for {url}")
        if declared not in {_norm(t) for t in ACCEPTED_TYPES}:
            raise ApiError(400, 12300, f"Invalid Content-Type: {declared} is not accepted")
        sniffed = _norm(magic.from_buffer(got.content[:8192], mime=True))
        if sniffed != declared and not (
            declared.startswith(("audio/", "video/"))
            and sniffed.split("/")[0] in ("audio", "video")
        ):
            raise ApiError(
                400, 12300, f"Invalid Content-Type: declared {declared} but the file is {sniffed}"
            )
        return got.content, declared

    def _store_media(self, message_sid: str, data: bytes, ctype: str) -> None:
        media_sid = _sid("ME")
        now = _rfc2822(datetime.now(UTC))
        self.media.setdefault(message_sid, {})[media_sid] = {
            "sid": media_sid,
            "account_sid": self.account_sid,
            "parent_sid": message_sid,
            "content_type": ctype,
            "date_created": now,
            "date_updated": now,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}/Media/"
            f"{media_sid}.json",
        }
        self.media_bytes[media_sid] = data

    def _message_json(
        self,
        sid: str,
        *,
        to: str,
        from_: str,
        body: str,
        status: str,
        direction: str,
        num_media: int,
        when: datetime,
        service: str | None = None,
    ) -> dict[str, Any]:
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": _rfc2822(when),
            "date_sent": _rfc2822(when),
            "date_updated": _rfc2822(when),
            "direction": direction,
            "error_code": None,
            "error_message": None,
            "from": from_,
            "messaging_service_sid": service,
            "num_media": str(num_media),
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "status": status,
            "subresource_uris": {"media": f"{base}/Media.json"},
            "to": to,
            "uri": f"{base}.json",
            "_when": when.timestamp(),
        }

    def _get_message(self, sid: str) -> dict[str, Any]:
        with self.lock:
            message = self.messages.get(sid)
        if message is None:
            raise ApiError(404, 20404, f"The requested resource Message {sid} was not found")
        return _public(message)

    def _list_messages(self, query: list[tuple[str, str]]) -> dict[str, Any]:
        q = dict(query)
        with self.lock:
            items = sorted(self.messages.values(), key=lambda m: m["_when"], reverse=True)
        if "To" in q:
            items = [m for m in items if m["to"] == q["To"]]
        if "From" in q:
            items = [m for m in items if m["from"] == q["From"]]
        for name, op in (("DateSent>", "ge"), ("DateSent<", "le"), ("DateSent", "eq")):
            if name in q:
                bound = _parse_when(q[name])
                if op == "ge":
                    items = [m for m in items if m["_when"] >= bound]
                elif op == "le":
                    items = [m for m in items if m["_when"] <= bound + 86400 * (len(q[name]) == 10)]
                else:
                    items = [m for m in items if bound <= m["_when"] < bound + 86400]
        size = int(q.get("PageSize", "50"))
        page = int(q.get("Page", "0"))
        keep = {k: v for k, v in q.items() if k not in ("Page", "PageSize", "PageToken")}
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        return self._page(path, items, "messages", keep, page, size)

    def _page(
        self,
        path: str,
        items: list[dict[str, Any]],
        key: str,
        query: dict[str, str],
        page: int,
        size: int,
    ) -> dict[str, Any]:
        chunk = items[page * size : (page + 1) * size]
        more = (page + 1) * size < len(items)

        def uri(p: int) -> str:
            return (
                path
                + "?"
                + urlencode({**query, "PageSize": size, "Page": p, "PageToken": f"PA{p}"})
            )

        return {
            key: [_public(i) for i in chunk],
            "page": page,
            "page_size": size,
            "start": page * size,
            "end": page * size + max(len(chunk) - 1, 0),
            "uri": uri(page),
            "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1) if more else None,
            "previous_page_uri": uri(page - 1) if page else None,
        }

    def _media(
        self, method: str, message_sid: str, media_sid: str, as_json: bool
    ) -> tuple[int, Any]:
        with self.lock:
            item = self.media.get(message_sid, {}).get(media_sid)
            if item is None:
                raise ApiError(
                    404, 20404, f"The requested resource Media {media_sid} was not found"
                )
            if method == "DELETE":
                del self.media[message_sid][media_sid]
                self.media_bytes.pop(media_sid, None)
                return 204, None
        if as_json:
            return 200, dict(item)
        return 200, (self.media_bytes[media_sid], item["content_type"])

    def _number(self, method: str, sid: str, form: list[tuple[str, str]]) -> tuple[int, Any]:
        with self.lock:
            number = self.numbers.get(sid)
            if number is None:
                raise ApiError(404, 20404, f"The requested resource {sid} was not found")
            if method == "POST":
                for name, value in form:
                    number[_snake(name)] = value
            return 200, dict(number)

    def _service(self, method: str, sid: str, form: list[tuple[str, str]]) -> tuple[int, Any]:
        with self.lock:
            service = self.services.get(sid)
            if service is None:
                raise ApiError(404, 20404, f"The requested resource /Services/{sid} was not found")
            if method == "POST":
                for name, value in form:
                    key = _snake(name)
                    service[key] = (
                        (value.lower() == "true") if value in ("true", "false") else value
                    )
            return 200, dict(service)

    # -- status callbacks ------------------------------------------------------------------

    def _schedule_callbacks(self, message: dict[str, Any], url: str) -> None:
        final, code = self.outcomes.get(message["to"], ("delivered", None))
        statuses = [final if s == "delivered" else s for s in self.sequence]
        thread = threading.Thread(
            target=self._fire, args=(message, url, statuses, code), daemon=True
        )
        with self.lock:
            self._threads.append(thread)
        thread.start()

    def _fire(
        self, message: dict[str, Any], url: str, statuses: list[str], code: int | None
    ) -> None:
        for status in statuses:
            time.sleep(self.callback_delay)
            params = [
                ("SmsSid", message["sid"]),
                ("SmsStatus", status),
                ("MessageStatus", status),
                ("To", message["to"]),
                ("MessageSid", message["sid"]),
                ("AccountSid", self.account_sid),
                ("From", message["from"]),
                ("ApiVersion", "2010-04-01"),
            ]
            if status in ("failed", "undelivered") and code is not None:
                params.append(("ErrorCode", str(code)))
            if status in ("delivered", "undelivered"):
                params.append(("RawDlrDoneDate", datetime.now(UTC).strftime("%y%m%d%H%M")))
            signature = compute_signature(self.auth_token, url, params)
            record = Callback(url, params, None)
            with self.lock:
                self.callbacks.append(record)
            try:
                answer = requests.post(
                    url,
                    data=params,
                    timeout=10,
                    headers={"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"},
                )
                record.status_code = answer.status_code
            except requests.RequestException:
                record.status_code = 0
        with self.lock:
            if statuses:
                message["status"] = max(statuses, key=lambda s: _RANK.get(s, 0))
            if message["status"] in ("failed", "undelivered"):
                message["error_code"] = code


class _Handler(BaseHTTPRequestHandler):
    fake: FakeTwilio
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _handle(self, method: str) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        form = parse_qsl(raw.decode(), keep_blank_values=True)
        query = parse_qsl(parts.query, keep_blank_values=True)
        with fake.lock:
            fake.requests.append((method, parts.path))
        fault = fake._take_fault(parts.path)
        if fault is not None and not fault.drop_after_processing:
            if fault.malformed:
                self._send(fault.status, b"<html><body>Bad Gateway</body>", "text/html")
                return
            code = fault.code or (20429 if fault.status == 429 else 20500)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._error(
                fault.status,
                code,
                "Too Many Requests" if fault.status == 429 else "Internal Server Error",
                headers,
            )
            return
        if not fake.authorized(self.headers.get("Authorization")):
            self._error(401, 20003, "Authenticate")
            return
        try:
            status, body = fake.route(method, parts.path, query, form)
        except ApiError as exc:
            with fake.lock:
                fake.rejections.append((exc.code, exc.message))
            self._error(exc.status, exc.code, exc.message)
            return
        if fault is not None and fault.drop_after_processing:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if status == 204:
            self._send(204, b"", None)
        elif isinstance(body, tuple):
            self._send(status, body[0], body[1])
        else:
            self._send(status, json.dumps(_public(body)).encode(), "application/json")

    def _error(
        self, status: int, code: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _send(
        self, status: int, data: bytes, ctype: str | None, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _parse_when(text: str) -> float:
    if len(text) == 10:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    """Run the fake on its own for trying `send`, `configure-number` and `reconcile` by hand."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--account-sid", default="AC" + "1" * 32)
    parser.add_argument("--auth-token", required=True, help="the service's TWILIO_AUTH_TOKEN")
    parser.add_argument("--number", action="append", default=[], help="a number you own")
    args = parser.parse_args()
    fake = FakeTwilio(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        numbers=args.number or ["+15017122661"],
    )
    handler = type("Handler", (_Handler,), {"fake": fake})
    fake._server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    print(f"export TWILIO_API_BASE={fake.url} TWILIO_ACCOUNT_SID={args.account_sid}")
    print("numbers: " + ", ".join(n["phone_number"] for n in fake.numbers.values()))
    with contextlib.suppress(KeyboardInterrupt):
        fake._server.serve_forever()


__all__ = ["ApiError", "Callback", "Fault", "FakeTwilio"]

if __name__ == "__main__":
    main()
