"""Hosting prepared media: storage, signed /m/<token> links, and the pre-flight check.

Twilio fetches each MediaUrl without credentials, with HEAD and then GET, and
refuses a file whose Content-Type does not match its bytes
(https://www.twilio.com/docs/messaging/guides/accepted-mime-types). So every
prepared file is stored, given a URL Twilio can fetch (our signed /m/<token>
route, or an S3 presigned URL), and fetched once here the same way before
anything is sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import BinaryIO
from urllib.parse import urlsplit

from receiver.errors import ConfigError, FetchError, OutboundError, StorageError
from receiver.media import types
from receiver.media.fetch import FetchConfig, Fetcher
from receiver.media.policy import mms_policy
from receiver.outbound.prepare import PreparedMedia, PreparedMessage
from receiver.outbound.request import redact
from receiver.settings import Settings
from receiver.storage.base import ObjectStore
from receiver.storage.keys import outbound_key

log = logging.getLogger(__name__)


class MediaLinks:
    """Signs and checks /m/<token> links: which stored file, until when (HMAC-SHA256).

    A token is ``<yyyymm>.<random>.<ext>.<expiry base 36>.<signature>``: it names
    the object ``outbound/<yyyy>/<mm>/<random>.<ext>`` without a lookup, and is
    short enough to put in an SMS.
    """

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ConfigError("RECEIVER_SECRET_KEY is empty; signed media links need it")
        self._key = hashlib.sha256(b"mms-receiver media links\x00" + secret_key.encode()).digest()

    def new_key(self, extension: str, *, now: datetime | None = None) -> tuple[str, str]:
        """A fresh storage key and the stem the token will carry: (key, "yyyymm.random.ext")."""
        moment = now or datetime.now(UTC)
        rand = secrets.token_hex(8)
        key = outbound_key(rand, extension, when=moment)
        return key, f"{moment:%Y%m}.{rand}.{extension}"

    def sign_key(self, key: str, expires_at: int) -> str | None:
        """A token for a prepared file already stored under `key` (the inverse of
        `new_key`), or None when `key` is not such a file's."""
        parts = key.split("/")
        if len(parts) != 4 or parts[0] != "outbound" or parts[3].count(".") != 1:
            return None
        rand, extension = parts[3].split(".")
        stem = f"{parts[1]}{parts[2]}.{rand}.{extension}"
        token = self.sign(stem, expires_at)
        try:
            return token if self.verify(token) == key else None
        except ValueError:
            return None

    def sign(self, stem: str, expires_at: int) -> str:
        """The token for `stem` valid until the Unix time `expires_at`."""
        payload = f"{stem}.{_base36(expires_at)}"
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: str, *, now: float | None = None) -> str:
        """The storage key a token names; ValueError("invalid"|"expired") otherwise."""
        parts = token.split(".")
        if len(parts) != 5:
            raise ValueError("invalid")
        payload, signature = ".".join(parts[:4]), parts[4]
        if not hmac.compare_digest(self._mac(payload), signature):
            raise ValueError("invalid")
        month, rand, extension, expiry = parts[:4]
        try:
            expires_at = int(expiry, 36)
            when = datetime(int(month[:4]), int(month[4:]), 1, tzinfo=UTC)
            key = outbound_key(rand, extension, when=when)
        except ValueError:
            raise ValueError("invalid") from None
        if expires_at < (now if now is not None else time.time()):
            raise ValueError("expired")
        return key

    def sign_media(self, media_id: int, expires_at: int) -> str:
        """The token of stored inbound item `media_id` (event links), valid until `expires_at`.

        ``i<id base 36>.<expiry base 36>.<signature>``: the leading ``i`` keeps
        it apart from prepared-file tokens, which start with a month.
        """
        payload = f"i{_base36(media_id)}.{_base36(expires_at)}"
        return f"{payload}.{self._mac(payload)}"

    def verify_media(self, token: str, *, now: float | None = None) -> int:
        """The media id a `sign_media` token names; ValueError("invalid"|"expired") otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].startswith("i"):
            raise ValueError("invalid")
        payload = ".".join(parts[:2])
        if not hmac.compare_digest(self._mac(payload), parts[2]):
            raise ValueError("invalid")
        try:
            media_id, expires_at = int(parts[0][1:], 36), int(parts[1], 36)
        except ValueError:
            raise ValueError("invalid") from None
        if expires_at < (now if now is not None else time.time()):
            raise ValueError("expired")
        return media_id

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


class Hosting:
    """Stores prepared files, signs their links, and pre-flights them as Twilio will."""

    def __init__(self, settings: Settings, store: ObjectStore, links: MediaLinks) -> None:
        self.settings = settings
        self.store = store
        self.links = links
        self._preflight_fetchers: dict[str, Fetcher] = {}

    def close(self) -> None:
        """Release the pre-flight HTTP sessions."""
        for fetcher in self._preflight_fetchers.values():
            fetcher.close()

    def host(self, item: PreparedMedia, fp: BinaryIO, ttl: int) -> PreparedMedia:
        """Store a prepared file and give it a URL Twilio can fetch without credentials."""
        public = self.settings.public_url
        if not public and not self.settings.storage_url.startswith("s3://"):
            raise OutboundError(
                "Twilio must be able to fetch the media from this service, but "
                "RECEIVER_PUBLIC_URL is not set: set it to the public https URL of this "
                "service (e.g. your ngrok URL), keep `mms-receiver serve` running, or use S3 "
                "storage (RECEIVER_STORAGE_URL=s3://bucket)",
                "no_public_url",
            )
        extension = types.extension_of(item.content_type)
        key, stem = self.links.new_key(extension)
        expires_at = int(time.time()) + ttl
        fp.seek(0)
        try:
            self.store.put(
                key,
                fp,
                content_type=item.content_type,
                size=item.size,
                metadata={"sha256": item.sha256, "filename": item.filename},
            )
        except (StorageError, ValueError) as exc:
            raise OutboundError(f"cannot store the prepared media: {exc}", "storage") from None
        if public:
            url = f"{public}/m/{self.links.sign(stem, expires_at)}"
        else:
            presigned = self.store.presigned_url(
                key,
                expires=min(ttl, 7 * 24 * 3600),
                filename=item.filename,
                content_type=item.content_type,
                disposition="inline",
            )
            assert presigned is not None
            url = presigned
        return replace(item, key=key, url=url, expires_at=expires_at)

    def preflight(self, prepared: PreparedMessage) -> None:
        """HEAD and GET each hosted URL without credentials, as Twilio will, and compare.

        Raises OutboundError (reason ``preflight_failed``) naming the URL, what
        was wrong and the fix; the message is then not sent.
        """
        total = 0
        for item in prepared.media:
            assert item.url is not None
            problems = self._preflight_one(item)
            if problems:
                self.discard(prepared.media)
                raise OutboundError(
                    f"pre-flight of {redact(item.url)} failed: {'; '.join(problems)}. Twilio "
                    "fetches this URL with HEAD and GET and would refuse it (11200/12300): "
                    "check that RECEIVER_PUBLIC_URL reaches this service and that `serve` is "
                    "running",
                    "preflight_failed",
                )
            total += item.size
        limit = mms_policy(prepared.request.carrier_budget).max_message_bytes
        if prepared.mode == "mms" and total > limit:
            self.discard(prepared.media)
            raise OutboundError(
                f"hosted media total {total:,} bytes, over {limit:,}", "message_too_large"
            )

    def _preflight_one(self, item: PreparedMedia) -> list[str]:
        assert item.url is not None
        fetcher = self._preflight_fetcher(item.url)
        try:
            flight = fetcher.head_and_get(item.url, max_bytes=item.size + 1)
        except FetchError as exc:
            return [str(exc)]
        problems: list[str] = []
        with flight.result.file:
            presigned = not item.url.startswith(self.settings.public_url or "\x00")
            for problem in flight.problems:
                # A SigV4 presigned GET URL refuses HEAD on AWS itself; Twilio copes.
                if presigned and problem.startswith("HEAD ") and "answered HTTP 403" in problem:
                    continue
                problems.append(problem)
            served = (flight.result.content_type or "").split(";", 1)[0].strip().lower()
            if served != item.content_type:
                problems.append(f"served as {served or 'no type'}, prepared as {item.content_type}")
            if flight.result.sha256 != item.sha256:
                problems.append("the bytes served are not the prepared file")
            if flight.result.size != item.size:
                problems.append(f"{flight.result.size:,} bytes served, {item.size:,} prepared")
        return problems

    def _preflight_fetcher(self, url: str) -> Fetcher:
        """A credential-less fetcher that may reach this URL's own host (we issued it)."""
        parts = urlsplit(url)
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = f"{host}:{port}"
        if origin not in self._preflight_fetchers:
            self._preflight_fetchers[origin] = Fetcher(
                FetchConfig.outbound(self.settings).allowing(origin)
            )
        return self._preflight_fetchers[origin]

    def discard(self, items: Iterable[PreparedMedia]) -> None:
        for item in items:
            if item.key:
                try:
                    self.store.delete(item.key)
                except (StorageError, ValueError) as exc:
                    log.warning("could not remove unsent prepared media %s: %s", item.key, exc)
