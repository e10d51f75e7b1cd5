"""`simulate`: a correctly signed Twilio-style inbound webhook, with local files served
from a temporary loopback media host, posted to a running service."""

from __future__ import annotations

import hashlib
import mimetypes
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from receiver.twilio.signature import compute_signature

mimetypes.add_type("text/vcard", ".vcf")
mimetypes.add_type("image/heic", ".heic")
mimetypes.add_type("image/heif", ".heif")
mimetypes.add_type("image/webp", ".webp")


def fake_sid(prefix: str) -> str:
    """A random SID of Twilio's form: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


SAMPLE_CARD = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Sample Contact\r\nN:Contact;Sample;;;\r\n"
    "TEL;TYPE=CELL:+15005550006\r\nEMAIL:sample@example.com\r\nEND:VCARD\r\n"
)


def write_samples(directory: Path) -> list[Path]:
    """Write a sample photo (a 640x480 JPEG) and contact card into `directory`; their paths.

    For trying a fresh install without files of one's own (`simulate --sample`).
    """
    from PIL import Image

    photo = directory / "sample-photo.jpg"
    # A gradient, so the thumbnail shows something and the JPEG has some body.
    Image.linear_gradient("L").resize((640, 480)).convert("RGB").save(photo, "JPEG", quality=85)
    card = directory / "sample-card.vcf"
    card.write_text(SAMPLE_CARD, encoding="utf-8")
    return [photo, card]


@dataclass(frozen=True)
class SimulatedMedia:
    """One attachment of a simulated message."""

    url: str
    content_type: str


class _FileHandler(BaseHTTPRequestHandler):
    files: dict[str, tuple[Path, str]] = {}

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, *, body: bool) -> None:
        entry = self.files.get(self.path)
        if entry is None:
            self.send_error(404)
            return
        path, ctype = entry
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def media_host(
    files: Sequence[Path], *, account_sid: str, message_sid: str, port: int
) -> Iterator[list[SimulatedMedia]]:
    """Serve `files` on 127.0.0.1:port under Twilio-like media paths while the block runs."""
    table: dict[str, tuple[Path, str]] = {}
    media: list[SimulatedMedia] = []
    for path in files:
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        media_sid = "ME" + hashlib.sha256(f"{message_sid}{path}".encode()).hexdigest()[:32]
        url_path = f"/2010-04-01/Accounts/{account_sid}/Messages/{message_sid}/Media/{media_sid}"
        table[url_path] = (path, ctype)
        media.append(SimulatedMedia(f"http://127.0.0.1:{port}{url_path}", ctype))
    handler = type("Handler", (_FileHandler,), {"files": table})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield media
    finally:
        server.shutdown()
        server.server_close()


def inbound_params(
    *,
    message_sid: str,
    account_sid: str,
    from_: str,
    to: str,
    body: str,
    media: Sequence[SimulatedMedia],
) -> list[tuple[str, str]]:
    """The parameters Twilio sends for an inbound MMS.

    Twilio lists them at https://www.twilio.com/docs/messaging/guides/webhook-request.
    """
    params = [
        ("ToCountry", "US"),
        ("SmsMessageSid", message_sid),
        ("NumMedia", str(len(media))),
        ("SmsSid", message_sid),
        ("SmsStatus", "received"),
        ("Body", body),
        ("To", to),
        ("NumSegments", "1"),
        ("MessageSid", message_sid),
        ("AccountSid", account_sid),
        ("From", from_),
        ("ApiVersion", "2010-04-01"),
    ]
    for i, item in enumerate(media):
        params.append((f"MediaContentType{i}", item.content_type))
        params.append((f"MediaUrl{i}", item.url))
    return params


def post_signed(
    url: str,
    params: Sequence[tuple[str, str]],
    token: str,
    *,
    signed_url: str | None = None,
    timeout: float = 20.0,
) -> requests.Response:
    """POST form `params` to `url` with the X-Twilio-Signature Twilio would send."""
    signature = compute_signature(token, signed_url or url, params)
    return requests.post(
        url,
        data=list(params),
        headers={"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"},
        timeout=timeout,
    )


def signed_url_for(url: str, public_url: str) -> str:
    """The URL the service will check: its public base URL plus the path, when configured."""
    if not public_url:
        return url
    parts = urlsplit(url)
    return public_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def conversation_exchange(
    *,
    account_sid: str,
    members: Sequence[str],
    business: str,
    bodies: Sequence[str],
) -> list[list[tuple[str, str]]]:
    """A group MMS as Conversations reports it, one post-event webhook each.

    The conversation is created, each phone joins with its messaging binding
    (`MessagingBinding.Address`, the group's `ProxyAddress`), the business
    joins as a chat identity projected as its number, each phone then
    writes one message, and each message is reported delivered to the other
    phones (`onDeliveryUpdated`, one receipt per member). Field names:
    https://www.twilio.com/docs/conversations/conversations-webhooks ,
    https://www.twilio.com/docs/conversations/group-texting and
    https://www.twilio.com/docs/conversations/delivery-receipts
    """
    conversation = fake_sid("CH")
    service = fake_sid("IS")
    base = [("AccountSid", account_sid), ("ConversationSid", conversation)]
    base.append(("ChatServiceSid", service))
    events = [
        [
            ("EventType", "onConversationAdded"),
            *base,
            ("FriendlyName", "Group MMS"),
            ("State", "active"),
            ("Attributes", "{}"),
            ("Source", "SMS"),
            ("RetryCount", "0"),
        ]
    ]
    member_sids = {address: fake_sid("MB") for address in members}
    for address in members:
        events.append(
            [
                ("EventType", "onParticipantAdded"),
                *base,
                ("ParticipantSid", member_sids[address]),
                ("MessagingBinding.Address", address),
                ("MessagingBinding.ProxyAddress", business),
                ("RetryCount", "0"),
            ]
        )
    events.append(
        [
            ("EventType", "onParticipantAdded"),
            *base,
            ("ParticipantSid", fake_sid("MB")),
            ("Identity", "business"),
            ("MessagingBinding.ProjectedAddress", business),
            ("RetryCount", "0"),
        ]
    )
    receipts = []
    for index, body in enumerate(bodies):
        author = members[index % len(members)]
        message_sid = fake_sid("IM")
        receipts += [
            [
                ("EventType", "onDeliveryUpdated"),
                *base,
                ("MessageSid", message_sid),
                ("DeliveryReceiptSid", fake_sid("DY")),
                ("ChannelMessageSid", fake_sid("SM")),
                ("ParticipantSid", member_sids[other]),
                ("Status", "delivered"),
                ("RetryCount", "0"),
            ]
            for other in members
            if other != author
        ]
        events.append(
            [
                ("EventType", "onMessageAdded"),
                *base,
                ("MessageSid", message_sid),
                ("Index", str(index)),
                ("Author", author),
                ("ParticipantSid", member_sids[author]),
                ("Body", body),
                ("Attributes", "{}"),
                ("Source", "SMS"),
                ("RetryCount", "0"),
            ]
        )
    return events + receipts
