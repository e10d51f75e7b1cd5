"""Preparing attachments: fetch or open each one, inspect it, apply the MMS policy, fit it.

For each attachment: a local file or a URL (shared fetcher, public hosts
only) -> inspect -> MMS policy -> `transform.fit` (convert, resize, strip
EXIF/GPS) where the verdict is fixable; otherwise refuse with the reason, or
with fallback "link" send an SMS carrying links instead. With `host`, the
prepared files are then handed to `Hosting` (store, sign, pre-flight).
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from receiver.errors import FetchError, MediaError, OutboundError
from receiver.media.fetch import Fetcher
from receiver.media.inspect import MediaInfo, inspect
from receiver.media.policy import Policy, check
from receiver.media.scan import ScanUnavailable, scanner_for
from receiver.media.transform import animation_to_mp4, fit
from receiver.outbound.request import (
    MAX_BODY,
    OutboundRequest,
    carries_mms,
    policy_for,
    redact,
    sms_segments,
    validate_request,
)

if TYPE_CHECKING:
    from receiver.outbound.hosting import Hosting
    from receiver.settings import Settings

#: Twilio waits up to ValidityPeriod (default 10 h) in its queue before fetching media.
DEFAULT_VALIDITY = 36000
#: How long a prepared MMS file stays fetchable: the longest queue time plus a margin.
MMS_LINK_TTL = DEFAULT_VALIDITY + 2 * 3600
#: How long a link sent by SMS (fallback "link") stays valid: the longest an S3 URL may.
FALLBACK_LINK_TTL = 7 * 24 * 3600
#: Twilio shows the Content-Disposition filename to recipients: at most 20 characters,
#: no spaces or special characters. https://www.twilio.com/docs/messaging/guides/accepted-mime-types
MAX_FILENAME = 20
#: Problems no fallback can help with: the file itself is bad, or it was not fetched.
BAD_FILE_REASONS = frozenset(
    {"empty", "corrupt", "decompression_bomb", "type_mismatch", "blocked_host", "fetch_failed"}
)
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class PreparedMedia:
    """One attachment as it will be sent: hosted, with what was done to it."""

    source: str
    content_type: str
    kind: str
    size: int
    sha256: str
    filename: str
    width: int | None = None
    height: int | None = None
    changes: tuple[str, ...] = ()
    key: str | None = None
    url: str | None = None
    expires_at: int | None = None
    #: The MCS Media SID (ME…) of a file sent into a conversation.
    media_sid: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (stored in outbound_messages.media and returned by the API).

        The source is named without a query string (presigned URLs carry secrets) and a
        local file by its name only (the inbox's uploads live in a temporary directory).
        """
        out = asdict(self)
        out["source"] = redact(self.source)
        out["changes"] = list(self.changes)
        return out


@dataclass(frozen=True)
class PreparedMessage:
    """A message ready to send: final body, hosted media, how it goes (MMS or SMS)."""

    request: OutboundRequest
    #: "mms" (media attached), "sms" (text only) or "link" (SMS with links to the media).
    mode: str
    body: str
    media: tuple[PreparedMedia, ...]
    notes: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        """Bytes of attached media (0 for SMS)."""
        return sum(m.size for m in self.media) if self.mode == "mms" else 0

    @property
    def media_urls(self) -> list[str]:
        """The MediaUrl parameters (empty unless MMS)."""
        return [m.url for m in self.media if m.url] if self.mode == "mms" else []

    @property
    def segments(self) -> int:
        """Message segments it costs against the sender's throughput."""
        return 1 if self.mode == "mms" else sms_segments(self.body)


def short_filename(source: str, extension: str, index: int) -> str:
    """A Content-Disposition filename of at most 20 characters, no spaces or specials."""
    stem = Path(urlsplit(source).path if "://" in source else source).stem
    stem = _NAME_CHARS.sub("", stem) or f"media{index + 1}"
    room = MAX_FILENAME - len(extension) - 1
    return f"{stem[:room]}.{extension}"


@dataclass
class _Source:
    """One attachment while it is prepared: its bytes (open file) and facts."""

    index: int
    source: str
    file: BinaryIO
    info: MediaInfo
    #: The converted or fitted bytes, when they differ from `file`.
    output: BinaryIO | None = None
    #: What was done to the original before the policy saw it.
    changes: tuple[str, ...] = ()

    @property
    def payload(self) -> BinaryIO:
        """What will be stored and sent."""
        return self.output if self.output is not None else self.file


class Preparer:
    """Turns an `OutboundRequest` into a `PreparedMessage`: checked, fitted, and (with
    `host`) stored and pre-flighted through `hosting`."""

    def __init__(self, settings: Settings, fetcher: Fetcher, hosting: Hosting) -> None:
        self.settings = settings
        #: User media URLs: any public host, never Twilio credentials.
        self.fetcher = fetcher
        self.hosting = hosting
        #: clamd for every file before it is used (None: scanning off).
        self.scanner = scanner_for(settings)

    def prepare(
        self,
        request: OutboundRequest,
        *,
        host: bool = True,
        link_ttl: int | None = None,
        mms_ok: bool | None = None,
        upload: Callable[[PreparedMedia, BinaryIO], PreparedMedia] | None = None,
    ) -> PreparedMessage:
        """Check and fix every attachment, then (with `host`) store and pre-flight it.

        `mms_ok` overrides whether the recipients get MMS (a conversation's
        members); `upload` replaces hosting for attached files (MCS for a
        conversation). Raises OutboundError naming every attachment that cannot
        be sent and why.
        """
        validate_request(request)
        policy = policy_for(request)
        notes: list[str] = []
        if mms_ok is None:
            mms_ok = carries_mms(request.to)
        if request.media and not mms_ok and request.fallback != "link":
            raise OutboundError(
                f"Twilio carries MMS only to US and Canadian (+1) numbers, not "
                f"{request.to or 'every member of the conversation'}; "
                "add --fallback link to send an SMS with links to the media",
                "mms_not_carried",
            )
        with ExitStack() as stack:
            sources = [self._open(i, item, request, stack) for i, item in enumerate(request.media)]
            self._scan_all(sources)
            if not policy.animations:
                for src in sources:
                    self._animation_as_video(src)
            bad = [(s, check(s.info, policy)) for s in sources]
            broken = [(s, v) for s, v in bad if not v.accepted and v.reason in BAD_FILE_REASONS]
            if broken:
                raise _refusal(broken)
            mode = "mms" if sources else "sms"
            items: list[PreparedMedia] = []
            if sources and mms_ok:
                try:
                    items = self._fit_all(sources, policy)
                except OutboundError as exc:
                    if request.fallback != "link":
                        raise
                    notes.append(f"sent as links: {exc}")
                    mode = "link"
            elif sources:
                notes.append(f"sent as links: MMS is not carried to {request.to}")
                mode = "link"
            if mode == "link":
                items = [self._for_link(s, policy) for s in sources]
            body = request.body
            if host and items and upload is not None and mode == "mms":
                items = [upload(item, s.payload) for item, s in zip(items, sources, strict=True)]
            elif host and items:
                ttl = link_ttl or (FALLBACK_LINK_TTL if mode == "link" else MMS_LINK_TTL)
                items = [
                    self.hosting.host(item, s.payload, ttl)
                    for item, s in zip(items, sources, strict=True)
                ]
                if mode == "link":
                    body = "\n".join(filter(None, [body, *(m.url or "" for m in items)]))
        if len(body) > MAX_BODY:
            raise OutboundError(
                f"with the links the body is {len(body)} characters, over Twilio's {MAX_BODY}; "
                "shorten the body or send fewer files (set RECEIVER_PUBLIC_URL for short links)",
                "body_too_long",
            )
        prepared = PreparedMessage(request, mode, body, tuple(items), tuple(notes))
        if host and items and not (upload is not None and mode == "mms"):
            self.hosting.preflight(prepared)
        return prepared

    def prepare_reusing(
        self, request: OutboundRequest, cache: dict[Any, PreparedMessage] | None
    ) -> PreparedMessage:
        """Prepare, reusing hosted media across rows of a bulk send with the same attachments."""
        if cache is None or not request.media:
            return self.prepare(request)
        key = (request.media, request.carrier_budget, request.fallback, carries_mms(request.to))
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = self.prepare(replace(request, body=""))
        body = request.body
        if hit.mode == "link":
            body = "\n".join(filter(None, [body, *(m.url or "" for m in hit.media)]))
            if len(body) > MAX_BODY:
                raise OutboundError(
                    f"with the links the body is {len(body)} characters, over {MAX_BODY}",
                    "body_too_long",
                )
        return replace(hit, request=request, body=body)

    def _open(self, index: int, item: str, request: OutboundRequest, stack: ExitStack) -> _Source:
        """Open an attachment (download a URL through the fetcher) and inspect its bytes."""
        if item.startswith(("http://", "https://")):
            try:
                result = self.fetcher.fetch(item, max_bytes=self.settings.max_media_bytes)
            except FetchError as exc:
                fix = {
                    "blocked_host": "use a public http(s) URL",
                    "too_large": "an MMS carries at most 5 MB; send a smaller file (downloads "
                    "are capped by RECEIVER_MAX_MEDIA_BYTES)",
                }.get(exc.reason, "check that the URL works without a login")
                raise OutboundError(
                    f"media {index + 1} ({redact(item)}): {exc}; {fix}", exc.reason
                ) from None
            fp: BinaryIO = stack.enter_context(result.file)
            return _Source(index, item, fp, inspect(fp, result.content_type, size=result.size))
        if "://" in item or not request.allow_files:
            raise OutboundError(
                f"media {index + 1} ({redact(item)}) must be an http(s) URL", "invalid_media"
            )
        path = Path(item).expanduser()
        if not path.is_file():
            raise OutboundError(f"media {index + 1}: no such file {item}", "invalid_media")
        size = path.stat().st_size
        fh: BinaryIO = stack.enter_context(path.open("rb"))
        declared = mimetypes.guess_type(path.name)[0]
        return _Source(index, str(path), fh, inspect(fh, declared, size=size))

    @staticmethod
    def _animation_as_video(src: _Source) -> None:
        """An animation for a channel that plays none (WhatsApp) becomes an MP4 when
        ffmpeg can make one; otherwise the policy refuses it, naming the fix."""
        if not src.info.animated:
            return
        data = animation_to_mp4(src.file)
        if data is None:
            return
        info = inspect(io.BytesIO(data), "video/mp4", size=len(data))
        if info.problem is not None or info.detected_type != "video/mp4":
            return
        src.changes = (f"converted animated {src.info.detected_type} to video/mp4",)
        src.file, src.info = io.BytesIO(data), info

    def _scan_all(self, sources: Sequence[_Source]) -> None:
        """Refuse the message when clamd matches a file (malware wins over every other
        reason) or, with scanning required, cannot scan it. Derivatives are made by
        Pillow from checked originals, so scanning the originals covers what is sent."""
        if self.scanner is None:
            return
        refused: list[tuple[_Source, str, str]] = []
        for src in sources:
            try:
                result = self.scanner.client.scan(src.file, src.info.size_bytes)
            except ScanUnavailable as exc:
                if not self.scanner.required:
                    continue
                raise OutboundError(
                    f"{exc}; nothing was sent: start clamd, or set RECEIVER_SCAN=optional "
                    "to send files unscanned",
                    "scan_unavailable",
                ) from None
            if result.verdict == "malware":
                refused.append((src, "malware", f"clamd found {result.signature}"))
            elif result.verdict == "too_large" and self.scanner.required:
                limit = self.scanner.stream_max
                detail = f"over clamd's StreamMaxLength of {limit:,} bytes, so it cannot be "
                refused.append((src, "too_large", detail + "scanned; send a smaller file"))
        if refused:
            raise _refusal_lines(refused)

    def _fit_all(self, sources: Sequence[_Source], policy: Policy) -> list[PreparedMedia]:
        """Share the message budget between images, fit each into its share; others as-is."""
        problems: list[tuple[_Source, str, str]] = []
        fixed_total = 0
        images: list[_Source] = []
        for src in sources:
            verdict = check(src.info, policy)
            if src.info.detected_type in policy.shrinkable_types and (
                verdict.accepted or verdict.fixable
            ):
                images.append(src)
            elif verdict.accepted:
                fixed_total += src.info.size_bytes
            else:
                problems.append(
                    (src, verdict.reason or "unsupported_type", _advice(verdict.detail, src.info))
                )
        if problems:
            raise _refusal_lines(problems)
        if fixed_total > policy.max_message_bytes:
            raise OutboundError(
                f"the attachments total {fixed_total:,} bytes, over the "
                f"{policy.max_message_bytes:,}-byte {policy.name} limit (Twilio error 11751); "
                "send fewer or smaller files, or use --fallback link",
                "message_too_large",
            )
        room = policy.max_message_bytes - fixed_total
        if images and room < 10_000:
            raise OutboundError(
                f"the other attachments take {fixed_total:,} bytes of the "
                f"{policy.max_message_bytes:,}-byte {policy.name} limit; no room is left for "
                "images",
                "message_too_large",
            )
        shares = _water_fill(
            [s.info.size_bytes for s in images],
            [s.info.detected_type not in policy.full_size_types for s in images],
            room,
        )
        out: dict[int, PreparedMedia] = {}
        for src, share in zip(images, shares, strict=True):
            out[src.index] = self._fit_image(src, min(share, policy.file_limit("image/jpeg")))
        for src in sources:
            if src.index not in out:
                out[src.index] = self._as_is(src)
        items = [out[s.index] for s in sources]
        total = sum(m.size for m in items)
        if total > policy.max_message_bytes:  # a guard: shares add up to the room
            raise OutboundError(
                f"prepared media total {total:,} bytes, over {policy.max_message_bytes:,}",
                "message_too_large",
            )
        return items

    def _fit_image(self, src: _Source, budget: int) -> PreparedMedia:
        info = src.info
        try:
            result = fit(src.file, info, budget_bytes=budget)
        except MediaError as exc:
            raise OutboundError(
                f"media {src.index + 1} ({redact(src.source)}): {exc}", exc.reason
            ) from None
        derived = result.derived
        changes: list[str] = []
        converted = derived.content_type != info.detected_type
        if converted:
            changes.append(f"converted {info.detected_type} to {derived.content_type}")
        if (derived.width, derived.height) != (info.width, info.height) and result.scale < 0.999:
            changes.append(
                f"resized {info.width}x{info.height} to {derived.width}x{derived.height}"
                + (f" at quality {result.quality}" if result.quality else "")
            )
        elif result.encode_passes and not converted:
            changes.append(
                "re-encoded" + (f" at quality {result.quality}" if result.quality else "")
            )
        if len(derived.data) != info.size_bytes:
            changes.append(f"{info.size_bytes:,} -> {len(derived.data):,} bytes")
        if info.detected_type != "image/gif":  # GIF carries no EXIF
            changes.append("metadata (EXIF/GPS) removed")
        # The result is inspected like any upload: what is sent is what its bytes say.
        check_info = inspect(io.BytesIO(derived.data), derived.content_type, size=len(derived.data))
        if check_info.problem or check_info.detected_type != derived.content_type:
            raise OutboundError(
                f"media {src.index + 1}: the converted file did not verify "
                f"({check_info.problem or check_info.detected_type})",
                "corrupt",
            )
        src.output = io.BytesIO(derived.data)
        return PreparedMedia(
            source=src.source,
            content_type=derived.content_type,
            kind="image",
            size=len(derived.data),
            sha256=hashlib.sha256(derived.data).hexdigest(),
            filename=short_filename(src.source, derived.extension, src.index),
            width=derived.width,
            height=derived.height,
            changes=tuple(changes),
        )

    def _for_link(self, src: _Source, policy: Policy) -> PreparedMedia:
        """An attachment sent as a link: images still lose EXIF/GPS and become JPEG/PNG."""
        src.output = None
        if src.info.size_bytes > self.settings.max_media_bytes:
            raise OutboundError(
                f"media {src.index + 1} ({redact(src.source)}) is {src.info.size_bytes:,} bytes, "
                f"too big to host as a link (RECEIVER_MAX_MEDIA_BYTES is "
                f"{self.settings.max_media_bytes:,})",
                "too_large",
            )
        if src.info.detected_type in policy.shrinkable_types:
            budget = max(self.settings.max_media_bytes, src.info.size_bytes)
            return self._fit_image(src, budget)
        return self._as_is(src)

    def _as_is(self, src: _Source) -> PreparedMedia:
        """An attachment sent unchanged (its detected type, its bytes)."""
        info = src.info
        src.file.seek(0)
        digest = hashlib.sha256()
        for chunk in iter(lambda: src.file.read(1 << 20), b""):
            digest.update(chunk)
        src.file.seek(0)
        return PreparedMedia(
            source=src.source,
            content_type=info.detected_type,
            kind=info.kind,
            size=info.size_bytes,
            sha256=digest.hexdigest(),
            filename=short_filename(src.source, info.extension, src.index),
            width=info.width,
            height=info.height,
            changes=src.changes,
        )


def _water_fill(sizes: Sequence[int], converts: Sequence[bool], room: int) -> list[int]:
    """Split `room` bytes between images: files that fit keep their size, files to be
    converted (whose new size is unknown) and files too big share the rest equally."""
    shares = [0] * len(sizes)
    left = room
    order = sorted(range(len(sizes)), key=lambda i: (converts[i], sizes[i]))
    for n, i in enumerate(order):
        fair = left // (len(sizes) - n)
        shares[i] = fair if converts[i] else min(sizes[i], fair)
        left -= shares[i]
    return shares


def _advice(detail: str, info: MediaInfo) -> str:
    if info.kind in ("video", "audio"):
        return (
            f"{detail}; Twilio does not resize {info.kind}: compress it under the limit, "
            "or use --fallback link"
        )
    return f"{detail}; use --fallback link to send it as a link"


def _refusal(items: Sequence[tuple[_Source, Any]]) -> OutboundError:
    return _refusal_lines([(s, v.reason or "invalid", v.detail) for s, v in items])


def _refusal_lines(items: Sequence[tuple[_Source, str, str]]) -> OutboundError:
    fixes = {
        "empty": "the file is empty; check it was saved completely",
        "corrupt": "the file is damaged or truncated; export it again",
        "decompression_bomb": "the image expands to too many pixels or frames; send a smaller one",
        "malware": "clamd matched a signature; this file must not be sent",
        "type_mismatch": "its declared type does not match its bytes; fix the server's "
        "Content-Type or the file extension",
    }
    lines = []
    for src, reason, detail in items:
        fix = fixes.get(reason)
        text = f"{detail} ({fix})" if fix and detail else (detail or fix or reason)
        lines.append(f"media {src.index + 1} ({redact(src.source)}): {reason}: {text}")
    return OutboundError("cannot send: " + "; ".join(lines), items[0][1])
