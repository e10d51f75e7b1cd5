"""A fake of Twilio's Media Content Service (MCS) and Conversations webhook configuration
on loopback: a real threaded HTTP server.

It enforces what https://www.twilio.com/docs/conversations/api/media-resource
documents: `GET /v1/Services/{IS}/Media/{ME}` needs HTTP Basic auth (Account
SID + Auth Token, or an API key + secret) and answers the Media resource with
`links.content_direct_temporary`, an absolute URL that needs no credentials
and works only for a while (here: `ttl` seconds; `expire_first` makes the
first N links already expired, like one that lapsed between the two requests).
An expired or unknown temporary URL answers 403.

It also serves the Conversations webhook configuration, global and per
service (`GET`/`POST /v1[/Services/{IS}]/Configuration/Webhooks`, Basic auth,
form fields `PostWebhookUrl`, `Method`, repeated `Filters`:
https://www.twilio.com/docs/conversations/api/webhook-configuration-resource),
so it doubles as TWILIO_CONVERSATIONS_BASE.

It also plays the Conversations API for sending
(https://www.twilio.com/docs/conversations/api/conversation-message-resource):
`POST /v1/Services/{IS}/Media` takes the raw bytes with their Content-Type
and answers 201 with the new Media resource;
`GET /v1/Conversations/{CH}` and `.../Participants` describe conversations
made with `add_conversation`; `POST /v1/Conversations/{CH}/Messages` (form
`Author`, `Body` at most 1600 characters, one `MediaSid` of the same Chat
Service) creates a message, kept in `created`.

Faults on demand: `latency` slows every Media answer, `fail_next(status, n)` answers the next n Media requests
with `status`; `temporary_base` points the links at another server (for
example a private address that is not allowlisted). Every request is logged
with whether it carried an Authorization header.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl

from tests.support.loopback import handler_server


@dataclass(frozen=True)
class McsRequest:
    """One request the fake received."""

    path: str
    authorized: bool
    had_authorization: bool


class FakeMcs:
    """MCS with Basic auth and expiring temporary URLs, on 127.0.0.1."""

    def __init__(self, username: str, password: str, *, ttl: float = 300.0) -> None:
        self._credentials = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.ttl = ttl
        self.expire_first = 0
        self.temporary_base: str | None = None
        #: Seconds each Media request waits before answering (a slow MCS).
        self.latency = 0.0
        self.requests: list[McsRequest] = []
        self._media: dict[tuple[str, str], tuple[bytes, str]] = {}
        self._links: dict[str, tuple[float, bytes, str]] = {}
        self._faults: list[int] = []
        self._lock = threading.Lock()
        #: Webhook configuration by scope ("" global, else the IS… SID), as Twilio shows it.
        self.webhooks: dict[str, dict[str, Any]] = {}
        #: Conversations by CH… SID: their Chat Service and participant resources.
        self.conversations: dict[str, dict[str, Any]] = {}
        #: Conversation messages created through the API, in order: (CH…, form fields).
        self.created: list[tuple[str, dict[str, str]]] = []
        #: Delivery receipts by message SID (IM…), as the Receipts resource lists them.
        self.receipts: dict[str, list[dict[str, Any]]] = {}
        #: Faults for the next message creations: an HTTP status (e.g. 500 after the first
        #: succeeded), "drop" (the connection closes before anything is created) or
        #: "drop-after" (the message is created, then the connection closes: a lost answer).
        self.create_faults: list[int | str] = []
        self._server, self._thread = handler_server(self._handle)

    # -- set-up ------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL (TWILIO_MCS_BASE)."""
        return f"http://{self.host_port}"

    @property
    def host_port(self) -> str:
        """'127.0.0.1:PORT', for RECEIVER_MEDIA_HOSTS."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    def add(self, service_sid: str, data: bytes, content_type: str) -> str:
        """Store a file in a Chat Service; returns its new Media SID."""
        media_sid = "ME" + secrets.token_hex(16)
        with self._lock:
            self._media[(service_sid, media_sid)] = (data, content_type)
        return media_sid

    def add_conversation(self, service_sid: str, addresses: list[str], projected: str) -> str:
        """A conversation with one SMS participant per address and one chat participant
        projected on our number (group MMS); returns its CH… SID."""
        sid = "CH" + secrets.token_hex(16)
        participants = [
            {
                "sid": "MB" + secrets.token_hex(16),
                "identity": None,
                "messaging_binding": {"type": "sms", "address": a},
            }
            for a in addresses
        ]
        participants.append(
            {
                "sid": "MB" + secrets.token_hex(16),
                "identity": "business",
                "messaging_binding": {"projected_address": projected},
            }
        )
        with self._lock:
            self.conversations[sid] = {
                "chat_service_sid": service_sid,
                "participants": participants,
            }
        return sid

    def add_receipt(
        self, message_sid: str, participant_sid: str, status: str, error_code: int | None = None
    ) -> str:
        """A delivery receipt of one member for a message; returns its DY… SID."""
        sid = "DY" + secrets.token_hex(16)
        with self._lock:
            self.receipts.setdefault(message_sid, []).append(
                {
                    "sid": sid,
                    "message_sid": message_sid,
                    "participant_sid": participant_sid,
                    "channel_message_sid": "SM" + secrets.token_hex(16),
                    "status": status,
                    "error_code": error_code,
                }
            )
        return sid

    def media_bytes(self, service_sid: str, media_sid: str) -> tuple[bytes, str] | None:
        """A stored file and its Content-Type."""
        with self._lock:
            return self._media.get((service_sid, media_sid))

    def fail_next(self, status: int, n: int = 1) -> None:
        """Answer the next `n` Media requests with `status`."""
        with self._lock:
            self._faults.extend([status] * n)

    def count(self, prefix: str) -> int:
        """How many requests had a path starting with `prefix`."""
        return sum(1 for r in self.requests if r.path.startswith(prefix))

    def __enter__(self) -> FakeMcs:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- serving -----------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        header = req.headers.get("Authorization")
        authorized = header == self._credentials
        with self._lock:
            self.requests.append(McsRequest(req.path, authorized, header is not None))
        parts = req.path.split("?", 1)[0].split("/")
        if req.path.endswith("/Configuration/Webhooks"):
            scope = parts[3] if len(parts) == 6 and parts[2] == "Services" else ""
            self._webhooks(req, scope, authorized)
        elif req.path.startswith("/temporary/"):
            self._temporary(req, parts[-1])
        elif len(parts) == 6 and parts[1:3] == ["v1", "Services"] and parts[4] == "Media":
            self._media_resource(req, parts[3], parts[5], authorized)
        elif len(parts) == 5 and parts[1:3] == ["v1", "Services"] and parts[4] == "Media":
            self._upload(req, parts[3], authorized)
        elif parts[1:3] == ["v1", "Conversations"] and len(parts) == 7 and parts[6] == "Receipts":
            self._receipts(req, parts[5], authorized)
        elif parts[1:3] == ["v1", "Conversations"] and len(parts) in (4, 5):
            self._conversation(req, parts[3], parts[4] if len(parts) == 5 else "", authorized)
        else:
            self._json(req, 404, {"code": 20404, "message": "not found"})

    def _media_resource(
        self, req: BaseHTTPRequestHandler, service: str, sid: str, authorized: bool
    ) -> None:
        time.sleep(self.latency)
        if not authorized:
            self._json(req, 401, {"code": 20003, "message": "Authenticate"})
            return
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
            found = self._media.get((service, sid))
            if found is not None and fault is None:
                token = secrets.token_urlsafe(16)
                expired = self.expire_first > 0
                self.expire_first -= 1 if expired else 0
                expires = time.monotonic() + (-1 if expired else self.ttl)
                self._links[token] = (expires, *found)
        if fault is not None:
            self._json(req, fault, {"code": fault, "message": "fault"})
            return
        if found is None:
            self._json(req, 404, {"code": 20404, "message": "not found"})
            return
        base = self.temporary_base or self.url
        self._json(
            req,
            200,
            {
                "sid": sid,
                "service_sid": service,
                "size": len(found[0]),
                "content_type": found[1],
                "links": {
                    "content": f"/v1/Services/{service}/Media/{sid}/Content",
                    "content_direct_temporary": f"{base}/temporary/{token}",
                },
            },
        )

    def _upload(self, req: BaseHTTPRequestHandler, service: str, authorized: bool) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        data = req.rfile.read(length)
        content_type = req.headers.get("Content-Type") or ""
        if req.command != "POST":
            self._json(req, 405, {"code": 20004, "message": "Method not allowed"})
        elif not authorized:
            self._json(req, 401, {"code": 20003, "message": "Authenticate"})
        elif not data or "/" not in content_type or content_type.startswith("multipart/"):
            self._json(req, 400, {"code": 20001, "message": "raw bytes with a Content-Type"})
        else:
            sid = self.add(service, data, content_type)
            self._json(
                req,
                201,
                {
                    "sid": sid,
                    "service_sid": service,
                    "size": len(data),
                    "content_type": content_type,
                },
            )

    def _conversation(
        self, req: BaseHTTPRequestHandler, sid: str, sub: str, authorized: bool
    ) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(req.rfile.read(length).decode(), keep_blank_values=True))
        if not authorized:
            self._json(req, 401, {"code": 20003, "message": "Authenticate"})
            return
        with self._lock:
            found = self.conversations.get(sid)
        if found is None:
            self._json(req, 404, {"code": 20404, "message": "not found"})
        elif sub == "" and req.command == "GET":
            self._json(
                req,
                200,
                {"sid": sid, "chat_service_sid": found["chat_service_sid"], "state": "active"},
            )
        elif sub == "Participants" and req.command == "GET":
            self._json(req, 200, {"participants": found["participants"], "meta": {}})
        elif sub == "Messages" and req.command == "POST":
            self._create_message(req, sid, found["chat_service_sid"], form)
        elif sub == "Messages" and req.command == "GET":
            self._list_messages(req, sid)
        else:
            self._json(req, 405, {"code": 20004, "message": "Method not allowed"})

    def _create_message(
        self, req: BaseHTTPRequestHandler, sid: str, service: str, form: dict[str, str]
    ) -> None:
        media_sid = form.get("MediaSid")
        with self._lock:
            fault = self.create_faults.pop(0) if self.create_faults else None
            known = media_sid is None or (service, media_sid) in self._media
        if fault == "drop":
            req.close_connection = True
            return
        if isinstance(fault, int):
            self._json(req, fault, {"code": fault, "message": "fault"})
        elif len(form.get("Body", "")) > 1600 or not (form.get("Body") or media_sid) or not known:
            self._json(req, 400, {"code": 50511, "message": "invalid message"})
        elif "Attributes" in form and not _json_object(form["Attributes"]):
            self._json(req, 400, {"code": 50505, "message": "Attributes must be a JSON object"})
        else:
            with self._lock:
                self.created.append((sid, form))
                messages = self.conversations[sid].setdefault("messages", [])
                message = {
                    "sid": "IM" + secrets.token_hex(16),
                    "conversation_sid": sid,
                    "index": len(messages),
                    "author": form.get("Author", "system"),
                    "body": form.get("Body"),
                    "attributes": form.get("Attributes", "{}"),
                    "media": [{"sid": media_sid}] if media_sid else None,
                    "date_created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                messages.append(message)
            if fault == "drop-after":
                req.close_connection = True
                return
            self._json(req, 201, message)

    def _receipts(self, req: BaseHTTPRequestHandler, message_sid: str, authorized: bool) -> None:
        """GET …/Messages/{IM}/Receipts (https://www.twilio.com/docs/conversations/api/
        receipt-resource): `delivery_receipts`, one page."""
        if not authorized:
            self._json(req, 401, {"code": 20003, "message": "Authenticate"})
            return
        with self._lock:
            items = list(self.receipts.get(message_sid, []))
        self._json(req, 200, {"delivery_receipts": items, "meta": {"next_page_url": None}})

    def _list_messages(self, req: BaseHTTPRequestHandler, sid: str) -> None:
        """Newest first with Order=desc (https://www.twilio.com/docs/conversations/api/
        conversation-message-resource), one page: `meta.next_page_url` is null."""
        with self._lock:
            messages = list(self.conversations[sid].get("messages", []))
        if "Order=desc" in req.path:
            messages.reverse()
        self._json(req, 200, {"messages": messages, "meta": {"next_page_url": None}})

    def _webhooks(self, req: BaseHTTPRequestHandler, scope: str, authorized: bool) -> None:
        if not authorized:
            self._json(req, 401, {"code": 20003, "message": "Authenticate"})
            return
        with self._lock:
            config = self.webhooks.setdefault(
                scope,
                {"post_webhook_url": None, "pre_webhook_url": None, "method": None, "filters": []},
            )
            if req.command == "POST":
                length = int(req.headers.get("Content-Length") or 0)
                form = parse_qsl(req.rfile.read(length).decode(), keep_blank_values=True)
                if any(k == "Method" and v not in ("GET", "POST") for k, v in form):
                    self._json(req, 400, {"code": 20001, "message": "Method must be GET or POST"})
                    return
                for key, value in form:
                    if key == "PostWebhookUrl":
                        config["post_webhook_url"] = value
                    elif key == "Method":
                        config["method"] = value
                filters = [v for k, v in form if k == "Filters"]
                if filters:
                    config["filters"] = filters
            answer = dict(config)
        self._json(req, 200, answer)

    def _temporary(self, req: BaseHTTPRequestHandler, token: str) -> None:
        with self._lock:
            link = self._links.get(token)
        if link is None or link[0] < time.monotonic():
            req.send_response(403)
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        _, data, content_type = link
        req.send_response(200)
        req.send_header("Content-Type", content_type)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    @staticmethod
    def _json(req: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)


def _json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
