"""Logging set-up: human text or one JSON object per line, never secrets.

Every record passes through `RedactionFilter` before it is written:

- the configured secrets (Auth Tokens, API secret, passwords, session key)
  are masked wherever they appear, as are ``Authorization`` headers,
  ``X-Twilio-Signature`` values, passwords in URLs and token-like query
  parameters;
- message bodies are dropped unless ``RECEIVER_LOG_BODIES=true``: an extra
  field named ``body`` is replaced by its length, and ``Body=...`` in logged
  form data is masked;
- the MessageSid is the correlation id: ``extra={"message_sid": ...}`` sets
  it explicitly, `bind_message_sid()` sets it for a block of code, and
  otherwise the first MessageSid among the log call's arguments is used.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from gunicorn.glogging import Logger as _GunicornBaseLogger

from receiver.settings import Settings
from receiver.twilio import sids

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
MASK = "***"
# Secrets shorter than this are masked where they stand alone (`password=a`,
# `Bearer x`), not inside words: masking every letter "a" would hide the log.
MIN_SECRET_LENGTH = 6

_MESSAGE_SID = re.compile(rf"\b{sids.MESSAGE.pattern}\b")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Basic abc= / Bearer xyz (headers, reprs of header dicts)
    (
        re.compile(
            r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?\s*(?:basic|bearer|digest)\s+)[^\s'\",}]+"
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + MASK),
    # X-Twilio-Signature: ... (an HMAC of a request is as good as a captured request)
    (re.compile(r"(?i)(x-twilio-signature['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9+/=]+"), r"\1" + MASK),
    # scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1" + MASK + "@"),
    # ?token=... &password=... &secret=... &signature=...
    (
        re.compile(
            r"(?i)([?&;\s](?:[a-z_]*token|password|passwd|secret|signature|api_key|apikey)=)[^&\s'\"]+"
        ),
        r"\1" + MASK,
    ),
)
#: URL paths whose next segment is a credential (`/m/<token>` links): logs keep
#: its first 8 characters, enough to tell links apart, never the whole token.
CREDENTIAL_PATHS = ("/m/",)
_CREDENTIAL_PATH = re.compile(
    "(" + "|".join(re.escape(p) for p in CREDENTIAL_PATHS) + r")([^\s?#/\"']{1,8})[^\s?#/\"']*"
)
_BODY_PARAM = re.compile(r"(?i)(\bBody=)[^&\s'\"]*")
_SECRET_KEY = re.compile(
    r"(?i)(token|secret|password|passwd|authorization|signature|api_key|cookie)"
)
_BODY_KEYS = frozenset({"body", "message_body"})

_current_sid: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "receiver_message_sid", default=None
)


@contextlib.contextmanager
def bind_message_sid(sid: str | None) -> Iterator[None]:
    """Tag every record logged inside the block (in this thread or task) with `sid`."""
    token = _current_sid.set(sid)
    try:
        yield
    finally:
        _current_sid.reset(token)


class RedactionFilter(logging.Filter):
    """Masks secrets and message bodies and sets `message_sid`; never drops a record."""

    def __init__(self, secrets: Iterable[str] = (), *, log_bodies: bool = False) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is masked whole.
        known = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.secrets = tuple(s for s in known if len(s) >= MIN_SECRET_LENGTH)
        short = [re.escape(s) for s in known if len(s) < MIN_SECRET_LENGTH]
        self._short = (
            re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(short) + r")(?![A-Za-z0-9_])")
            if short
            else None
        )
        self.log_bodies = log_bodies

    @classmethod
    def from_settings(cls, settings: Settings) -> RedactionFilter:
        """A filter masking every secret `settings` holds."""
        return cls(
            (
                settings.auth_token,
                settings.auth_token_secondary,
                settings.api_secret,
                settings.admin_password,
                settings.api_token,
                settings.secret_key,
            ),
            log_bodies=settings.log_bodies,
        )

    def redact(self, text: str) -> str:
        """`text` with every known secret and secret-looking value masked."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if self._short is not None:
            text = self._short.sub(MASK, text)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        text = _CREDENTIAL_PATH.sub("\\1\\2\u2026", text)
        if not self.log_bodies:
            text = _BODY_PARAM.sub(r"\1" + MASK, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite `record` in place: message, extra fields and traceback."""
        sid = getattr(record, "message_sid", None) or _current_sid.get()
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the event
            message = f"{record.msg!s} {record.args!r}"
        if sid is None:
            found = _MESSAGE_SID.search(message)
            sid = found.group(0) if found else None
        record.msg = self.redact(message)
        record.args = None
        if sid is not None:
            record.message_sid = sid
        for key, value in list(vars(record).items()):
            if key in _RESERVED or key.startswith("_") or key == "message_sid":
                continue
            setattr(record, key, self._clean(key, value))
        if record.exc_info and not record.exc_text:
            # Formatters print exc_text when it is set, so the traceback goes out redacted.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True

    def _clean(self, key: str, value: Any) -> Any:
        if key.lower() in _BODY_KEYS and not self.log_bodies:
            return f"[{len(value)} chars not logged]" if isinstance(value, str) else MASK
        if _SECRET_KEY.search(key):
            return MASK if value else value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict | list | tuple):
            return json.loads(self.redact(json.dumps(value, default=str)))
        return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the event's extra fields (e.g. message_sid)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (newlines inside values are escaped)."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines, with the MessageSid in brackets when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The standard line, tagged with `[MessageSid]` when the record has one."""
        line = super().format(record)
        sid = getattr(record, "message_sid", None)
        return f"{line} [{sid}]" if sid and sid not in record.getMessage() else line


# What `configure_logging` installed, so gunicorn's own logs can follow it.
_active: dict[str, Any] = {"format": "text", "filter": RedactionFilter()}


def configure_logging(settings: Settings, level: int = logging.INFO) -> None:
    """Install one redacting handler on the root logger, in the configured format."""
    redaction = RedactionFilter.from_settings(settings)
    _active.update(format=settings.log_format, filter=redaction)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(redaction)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class GunicornLogger(_GunicornBaseLogger):
    """Gunicorn's error and access logs in the service's format, through the same redaction.

    Set as gunicorn's ``logger_class`` after `configure_logging` ran; with
    ``RECEIVER_LOG_FORMAT=json`` each access is one JSON event with method,
    path, status, duration and peer as fields.
    """

    def setup(self, cfg: Any) -> None:
        """Gunicorn's handlers, then the service's formatter and redaction filter on each."""
        super().setup(cfg)
        json_format = _active["format"] == "json"
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if json_format:
                    handler.setFormatter(JsonFormatter())
                handler.addFilter(_active["filter"])

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        """One access event (structured in JSON mode, gunicorn's line otherwise)."""
        if _active["format"] != "json":
            super().access(resp, req, environ, request_time)
            return
        if not getattr(self, "access_log_enabled", True):
            return
        status = (
            getattr(resp, "status_code", None) or str(getattr(resp, "status", "")).split(" ")[0]
        )
        seconds = request_time.total_seconds() if hasattr(request_time, "total_seconds") else 0.0
        self.access_log.info(
            "%s %s %s",
            environ.get("REQUEST_METHOD", "-"),
            environ.get("PATH_INFO", "-"),
            status,
            extra={
                "http_method": environ.get("REQUEST_METHOD"),
                "http_path": environ.get("PATH_INFO"),
                "http_status": int(status) if str(status).isdigit() else status,
                "duration_ms": round(seconds * 1000, 1),
                "remote_addr": environ.get("REMOTE_ADDR"),
                "user_agent": environ.get("HTTP_USER_AGENT"),
            },
        )
