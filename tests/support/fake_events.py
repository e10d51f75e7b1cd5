"""A fake of Twilio's Events API (Event Streams sinks and subscriptions) on loopback.

It enforces what the Events API's OpenAPI document (twilio/twilio-oai
`spec/json/twilio_events_v1.json`) and
https://www.twilio.com/docs/events/event-streams/sink-resource ,
https://www.twilio.com/docs/events/event-streams/subscription document:

- HTTP Basic auth (Account SID + Auth Token, or an API key + secret) on every call;
- `POST /v1/Sinks` needs `Description`, `SinkType` (kinesis, webhook, segment) and
  `SinkConfiguration` (JSON; a webhook's has `destination`, `method` and
  `batch_events`, else error 91000), answers
  201 with a `DG…` sink in status `initialized`; `GET /v1/Sinks` pages through
  `meta.next_page_url` (`page_size` sinks a page);
- `POST /v1/Sinks/{DG}/Test` answers 201 `{"result": "submitted"}` and then really
  delivers a signed `com.twilio.eventstreams.test-event` whose `data.test_id` is
  the value `POST /v1/Sinks/{DG}/Validate` (`TestId`, required) wants; a right one
  makes the sink `active`;
- `POST /v1/Subscriptions` needs `Description`, `SinkSid` (an active sink) and
  `Types`, repeated, each a JSON object with a `type`;
  `GET /v1/Subscriptions?SinkSid=` and `…/SubscribedEvents` list them;
  `POST …/SubscribedEvents` (`Type`, required) adds one.

Deliveries are signed like a webhook sink's: the destination URL gets a
`bodySHA256` parameter and `X-Twilio-Signature` signs that URL with the auth
token (https://www.twilio.com/docs/usage/webhooks/webhooks-security).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from receiver.twilio.signature import body_sha256, compute_signature
from tests.support.loopback import handler_server

TEST_EVENT = "com.twilio.eventstreams.test-event"


class FakeEvents:
    """The Events API with Basic auth, required parameters and real test deliveries."""

    def __init__(self, username: str, password: str, *, token: str, page_size: int = 50) -> None:
        self._credentials = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        #: Signs the test deliveries (the account's auth token).
        self.token = token
        self.page_size = page_size
        self.sinks: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        #: (method, path, form) of every authorized call, in order.
        self.calls: list[tuple[str, str, list[tuple[str, str]]]] = []
        #: Test deliveries: (sink, HTTP status or the exception's name).
        self.deliveries: list[tuple[str, str]] = []
        #: The test_id of the last test event sent to each sink.
        self.test_ids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server, self._thread = handler_server(self._handle)

    @property
    def url(self) -> str:
        """The base URL (TWILIO_EVENTS_BASE)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_sink(self, destination: str, *, status: str = "active", kind: str = "webhook") -> str:
        """A sink made earlier (e.g. in the Console); returns its DG… SID."""
        sid = "DG" + secrets.token_hex(16)
        config = {"destination": destination, "method": "POST", "batch_events": True}
        with self._lock:
            self.sinks[sid] = self._sink(sid, "made earlier", kind, config, status)
        return sid

    def posted(self, path: str) -> list[list[tuple[str, str]]]:
        """The forms of the POSTs to `path`."""
        return [form for method, p, form in self.calls if method == "POST" and p == path]

    def __enter__(self) -> FakeEvents:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- serving -----------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        split = urlsplit(req.path)
        length = int(req.headers.get("Content-Length") or 0)
        form = parse_qsl(req.rfile.read(length).decode(), keep_blank_values=True)
        if req.headers.get("Authorization") != self._credentials:
            self._json(req, 401, {"code": 20003, "message": "Authenticate", "status": 401})
            return
        with self._lock:
            self.calls.append((req.command, split.path, form))
        query = dict(parse_qsl(split.query))
        parts = split.path.strip("/").split("/")
        fields: dict[str, list[str]] = {}
        for key, value in form:
            fields.setdefault(key, []).append(value)
        route = (req.command, *parts)
        if route == ("GET", "v1", "Sinks"):
            self._list(req, "sinks", list(self.sinks.values()), query)
        elif route == ("POST", "v1", "Sinks"):
            self._create_sink(req, fields)
        elif len(parts) == 3 and route[:3] == ("GET", "v1", "Sinks") and parts[2] in self.sinks:
            self._json(req, 200, self.sinks[parts[2]])
        elif len(parts) == 4 and parts[:2] == ["v1", "Sinks"] and req.command == "POST":
            self._sink_action(req, parts[2], parts[3], fields)
        elif route == ("GET", "v1", "Subscriptions"):
            subs = [s for s in self.subscriptions.values() if s["sink_sid"] == query.get("SinkSid")]
            self._list(req, "subscriptions", subs, query)
        elif route == ("POST", "v1", "Subscriptions"):
            self._create_subscription(req, fields)
        elif (
            len(parts) == 4
            and parts[:2] == ["v1", "Subscriptions"]
            and parts[3] == ("SubscribedEvents")
        ):
            self._subscribed(req, parts[2], fields, query)
        else:
            self._json(req, 404, {"code": 20404, "message": "not found", "status": 404})

    def _list(
        self, req: BaseHTTPRequestHandler, key: str, items: list[Any], query: dict[str, str]
    ) -> None:
        page = int(query.get("Page") or 0)
        size = min(int(query.get("PageSize") or self.page_size), self.page_size)
        chunk = items[page * size : (page + 1) * size]
        more = (page + 1) * size < len(items)
        rest = "&".join(f"{k}={v}" for k, v in query.items() if k not in ("Page", "PageSize"))
        path = urlsplit(req.path).path
        next_url = (
            f"{self.url}{path}?{rest + '&' if rest else ''}PageSize={size}&Page={page + 1}"
            if more
            else None
        )
        self._json(req, 200, {key: chunk, "meta": {"key": key, "next_page_url": next_url}})

    def _create_sink(self, req: BaseHTTPRequestHandler, fields: dict[str, list[str]]) -> None:
        missing = [k for k in ("Description", "SinkConfiguration", "SinkType") if k not in fields]
        if missing:
            self._error(req, f"Missing required parameter {missing[0]} in the post body")
            return
        kind = fields["SinkType"][0]
        try:
            config = json.loads(fields["SinkConfiguration"][0])
        except ValueError:
            config = None
        if kind not in ("kinesis", "webhook", "segment"):
            self._error(req, "SinkType must be kinesis, webhook or segment")
        elif not isinstance(config, dict):
            self._error(req, "SinkConfiguration must be a JSON object")
        elif kind == "webhook" and (
            not str(config.get("destination", "")).startswith(("http://", "https://"))
            or config.get("method") not in ("POST", "GET")
            or not isinstance(config.get("batch_events"), bool)
        ):
            # https://www.twilio.com/docs/api/errors/91000: destination, method and
            # batch_events must not be empty.
            self._json(
                req,
                400,
                {"code": 91000, "message": "Sink could not be created", "status": 400},
            )
        else:
            sid = "DG" + secrets.token_hex(16)
            sink = self._sink(sid, fields["Description"][0], kind, config, "initialized")
            with self._lock:
                self.sinks[sid] = sink
            self._json(req, 201, sink)

    def _sink_action(
        self, req: BaseHTTPRequestHandler, sid: str, action: str, fields: dict[str, list[str]]
    ) -> None:
        sink = self.sinks.get(sid)
        if sink is None:
            self._json(req, 404, {"code": 20404, "message": "not found", "status": 404})
        elif action == "Test":
            test_id = "TI" + secrets.token_hex(16)
            with self._lock:
                self.test_ids[sid] = test_id
                sink["status"] = "validating"
            self._json(req, 201, {"result": "submitted"})
            threading.Thread(target=self._deliver_test, args=(sid, test_id), daemon=True).start()
        elif action == "Validate":
            if "TestId" not in fields:
                self._error(req, "Missing required parameter TestId in the post body")
            elif self.test_ids.get(sid) != fields["TestId"][0]:
                self._error(req, "TestId does not match the sink's test event")
            else:
                with self._lock:
                    sink["status"] = "active"
                self._json(req, 201, {"result": "valid"})
        else:
            self._json(req, 404, {"code": 20404, "message": "not found", "status": 404})

    def _deliver_test(self, sid: str, test_id: str) -> None:
        config = self.sinks[sid]["sink_configuration"]
        event = {
            "specversion": "1.0",
            "type": TEST_EVENT,
            "source": f"/v1/Sinks/{sid}/Test",
            "id": "EZ" + secrets.token_hex(16),
            "datacontenttype": "application/json",
            "time": "2026-12-03T12:00:00.000Z",
            "data": {"test_id": test_id},
        }
        body = json.dumps([event] if config.get("batch_events") else event).encode()
        url = f"{config['destination']}?bodySHA256={body_sha256(body)}"
        headers = {
            "Content-Type": "application/json",
            "X-Twilio-Signature": compute_signature(self.token, url),
        }
        try:
            answer = requests.post(url, data=body, headers=headers, timeout=5)
            outcome = str(answer.status_code)
        except requests.RequestException as exc:
            outcome = type(exc).__name__
        with self._lock:
            self.deliveries.append((sid, outcome))

    def _create_subscription(
        self, req: BaseHTTPRequestHandler, fields: dict[str, list[str]]
    ) -> None:
        missing = [k for k in ("Description", "SinkSid", "Types") if k not in fields]
        if missing:
            self._error(req, f"Missing required parameter {missing[0]} in the post body")
            return
        sink = self.sinks.get(fields["SinkSid"][0])
        types: list[dict[str, Any]] = []
        for raw in fields["Types"]:
            try:
                item = json.loads(raw)
            except ValueError:
                item = None
            if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                self._error(req, f"each Types value must be a JSON object with a type: {raw!r}")
                return
            types.append({"type": item["type"], "schema_version": item.get("schema_version", 1)})
        if sink is None or sink["status"] != "active":
            self._error(req, "Sink must be active for the subscription to be created")
            return
        sid = "DF" + secrets.token_hex(16)
        with self._lock:
            self.subscriptions[sid] = {
                "sid": sid,
                "sink_sid": sink["sid"],
                "description": fields["Description"][0],
                "types": types,
            }
        self._json(req, 201, {k: v for k, v in self.subscriptions[sid].items() if k != "types"})

    def _subscribed(
        self,
        req: BaseHTTPRequestHandler,
        sid: str,
        fields: dict[str, list[str]],
        query: dict[str, str],
    ) -> None:
        sub = self.subscriptions.get(sid)
        if sub is None:
            self._json(req, 404, {"code": 20404, "message": "not found", "status": 404})
        elif req.command == "GET":
            self._list(req, "types", sub["types"], query)
        elif "Type" not in fields:
            self._error(req, "Missing required parameter Type in the post body")
        else:
            item = {"type": fields["Type"][0], "schema_version": 1, "subscription_sid": sid}
            with self._lock:
                sub["types"].append(item)
            self._json(req, 201, item)

    def _sink(
        self, sid: str, description: str, kind: str, config: dict[str, Any], status: str
    ) -> dict[str, Any]:
        return {
            "sid": sid,
            "description": description,
            "sink_type": kind,
            "sink_configuration": config,
            "status": status,
            "url": f"{self.url}/v1/Sinks/{sid}",
        }

    def _error(self, req: BaseHTTPRequestHandler, message: str) -> None:
        self._json(req, 400, {"code": 20001, "message": message, "status": 400})

    @staticmethod
    def _json(req: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)
