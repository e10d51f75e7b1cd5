"""The one typed, validated `Settings` object, built from environment variables.

Every variable is checked when the service starts, never on the first webhook:
a bad value raises `ConfigError` naming the variable and the fix. Secrets are
kept out of `repr()` so they never reach a log line by accident.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from receiver.errors import ConfigError
from receiver.events.policy import DEFAULT_DISABLE_AFTER, DEFAULT_SCHEDULE, parse_schedule
from receiver.events.signing import check_secret

DEFAULT_MEDIA_HOSTS = (
    "api.twilio.com",
    "mms.twiliocdn.com",
    "media.twiliocdn.com",
    "s3-external-1.amazonaws.com",
    # Conversations media: the Media Content Service and its temporary-URL host
    # (https://www.twilio.com/docs/conversations/api/media-resource).
    "mcs.us1.twilio.com",
    "media.us1.twilio.com",
)
DEFAULT_API_BASE = "https://api.twilio.com"
DEFAULT_MCS_BASE = "https://mcs.us1.twilio.com"
DEFAULT_CONVERSATIONS_BASE = "https://conversations.twilio.com"
DEFAULT_EVENTS_BASE = "https://events.twilio.com"
MIB = 1024 * 1024
SECRETS_FILE = "secrets.json"
# `mms-receiver simulate` serves local files from this loopback port; dev mode
# (no TWILIO_AUTH_TOKEN) adds it to the media host allowlist.
SIMULATE_MEDIA_PORT = 8765

# Shortest credentials `check` and `serve` accept outside dev mode: a login
# form is guessable online, an API token is meant to be generated.
MIN_ADMIN_PASSWORD = 12
MIN_API_TOKEN = 24

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _secret() -> str:
    return field(default="", repr=False)


@dataclass(frozen=True, repr=False)
class Settings:
    """Validated configuration. Build it with `Settings.from_env()`."""

    data_dir: Path = Path("data")
    auth_token: str = _secret()
    auth_token_secondary: str = _secret()
    account_sid: str = ""
    api_key: str = ""
    api_secret: str = _secret()
    api_base: str = DEFAULT_API_BASE
    mcs_base: str = DEFAULT_MCS_BASE
    conversations_base: str = DEFAULT_CONVERSATIONS_BASE
    events_base: str = DEFAULT_EVENTS_BASE
    public_url: str = ""
    proxy_hops: int = 0
    storage_url: str = ""
    database_url: str = ""
    media_hosts: tuple[str, ...] = DEFAULT_MEDIA_HOSTS
    max_media_bytes: int = 20 * MIB
    max_message_bytes: int = 50 * MIB
    admin_password: str = _secret()
    api_token: str = _secret()
    secret_key: str = _secret()
    inline_deadline: float = 8.0
    max_attempts: int = 8
    fetch_deadline: float = 30.0
    lease_seconds: float = 90.0
    delete_remote_media: bool = False
    retention_days: int = 0
    log_bodies: bool = False
    log_format: str = "text"
    dev_mode: bool = False
    max_request_bytes: int = 64 * 1024
    #: clamd's socket (unix:///run/clamav/clamd.ctl or tcp://127.0.0.1:3310); empty: no scanning.
    clamd_url: str = ""
    #: "required": files wait while clamd is unreachable; "optional": stored as unscanned.
    scan_mode: str = "required"
    #: clamd's StreamMaxLength (clamd cannot be asked): larger files are never sent.
    clamd_stream_max: int = 25 * MIB
    #: Tesseract languages to read text in stored images with (RECEIVER_OCR=eng+deu); empty: off.
    ocr_languages: tuple[str, ...] = ()
    #: Wall-clock seconds one image may take to read; tesseract is killed after that.
    ocr_timeout: float = 30.0
    event_url: str = ""
    event_secret: str = _secret()
    event_hosts: tuple[str, ...] = ()
    event_link_ttl: int = 604800
    event_disable_after: float = DEFAULT_DISABLE_AFTER
    event_retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    #: Open live-update streams (GET /api/stream) per server process; beyond: 503.
    stream_max: int = 500
    #: Who messages we send into a conversation are from when the request names no
    #: author (`send --author`); empty: Twilio's default, "system".
    conversation_author: str = ""

    def __post_init__(self) -> None:
        if self.public_url:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    "RECEIVER_PUBLIC_URL must be an absolute http(s) URL such as "
                    f"https://example.ngrok.app (got {self.public_url!r})"
                )
            if parts.fragment or parts.query:
                raise ConfigError(
                    "RECEIVER_PUBLIC_URL must be a base URL without query or fragment; "
                    "remove everything after the path"
                )
        if self.scan_mode not in ("required", "optional"):
            raise ConfigError(
                f"RECEIVER_SCAN must be required or optional (got {self.scan_mode!r})"
            )
        if self.clamd_url:
            from receiver.media.scan import parse_clamd_url

            try:
                parse_clamd_url(self.clamd_url)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.clamd_stream_max <= 0:
            raise ConfigError("RECEIVER_CLAMD_STREAM_MAX must be > 0 (clamd's StreamMaxLength)")
        if not 0 < self.ocr_timeout <= 600:
            raise ConfigError(
                f"RECEIVER_OCR_TIMEOUT must be seconds from 0 to 600 (got {self.ocr_timeout:g})"
            )
        if self.stream_max < 0:
            raise ConfigError("RECEIVER_STREAM_MAX must be 0 (no live updates) or more")
        if len(self.conversation_author) > 256 or not self.conversation_author.isprintable():
            raise ConfigError(
                "RECEIVER_CONVERSATION_AUTHOR must be at most 256 printable characters "
                "(the business's name or chat identity, e.g. 'Acme Support')"
            )
        if self.proxy_hops < 0 or self.proxy_hops > 10:
            raise ConfigError("RECEIVER_PROXY_HOPS must be a whole number from 0 to 10")
        if self.max_media_bytes <= 0 or self.max_message_bytes <= 0:
            raise ConfigError("RECEIVER_MAX_MEDIA_BYTES and RECEIVER_MAX_MESSAGE_BYTES must be > 0")
        if self.max_message_bytes < self.max_media_bytes:
            raise ConfigError(
                "RECEIVER_MAX_MESSAGE_BYTES must be at least RECEIVER_MAX_MEDIA_BYTES "
                f"({self.max_media_bytes}); raise it or lower the per-file cap"
            )
        api = urlsplit(self.api_base)
        if api.scheme not in ("http", "https") or not api.hostname:
            raise ConfigError(f"TWILIO_API_BASE must be an http(s) URL (got {self.api_base!r})")
        for name, value in (
            ("TWILIO_MCS_BASE", self.mcs_base),
            ("TWILIO_CONVERSATIONS_BASE", self.conversations_base),
            ("TWILIO_EVENTS_BASE", self.events_base),
        ):
            base = urlsplit(value)
            if base.scheme not in ("http", "https") or not base.hostname:
                raise ConfigError(f"{name} must be an http(s) URL (got {value!r})")
        if self.account_sid and not (
            self.account_sid.startswith("AC") and len(self.account_sid) == 34
        ):
            raise ConfigError("TWILIO_ACCOUNT_SID must start with AC and be 34 characters long")
        if self.api_key and not self.api_key.startswith("SK"):
            raise ConfigError("TWILIO_API_KEY must be an API key SID starting with SK")
        if self.api_key and not self.api_secret:
            raise ConfigError("TWILIO_API_KEY is set but TWILIO_API_SECRET is empty; set both")
        if self.fetch_deadline <= 0 or self.lease_seconds <= self.fetch_deadline:
            raise ConfigError(
                "RECEIVER_LEASE_SECONDS must be longer than RECEIVER_FETCH_DEADLINE "
                f"({self.fetch_deadline:g} s), or a slow download could be taken over twice"
            )
        if self.delete_remote_media and not (self.account_sid and self.rest_credentials):
            raise ConfigError(
                "RECEIVER_DELETE_REMOTE_MEDIA needs TWILIO_ACCOUNT_SID and REST credentials "
                "(TWILIO_API_KEY and TWILIO_API_SECRET, or TWILIO_AUTH_TOKEN); set them or "
                "turn the flag off"
            )
        if self.log_format not in ("text", "json"):
            raise ConfigError("RECEIVER_LOG_FORMAT must be 'text' or 'json'")
        if self.inline_deadline < 0 or self.inline_deadline > 14:
            raise ConfigError(
                "RECEIVER_INLINE_DEADLINE must be between 0 and 14 seconds "
                "(Twilio waits at most 15 s for an answer)"
            )
        if not self.storage_url.startswith(("file://", "s3://")):
            raise ConfigError(
                "RECEIVER_STORAGE_URL must be file:///absolute/path or s3://bucket[/prefix] "
                f"(got {self.storage_url!r})"
            )
        if not self.database_url.startswith(
            ("sqlite://", "postgresql://", "postgresql+psycopg://")
        ):
            raise ConfigError(
                "RECEIVER_DATABASE_URL must be sqlite:///path or postgresql://user@host/db "
                f"(got {_redact_url(self.database_url)!r})"
            )

        self._check_events()

    def _check_events(self) -> None:
        if self.event_url:
            if not self.event_url.startswith(("http://", "https://", "sqs://")):
                raise ConfigError(
                    "RECEIVER_EVENT_URL must be an http(s):// URL or sqs://<queue name> "
                    f"(got {self.event_url!r})"
                )
            if not self.event_secret:
                raise ConfigError(
                    "RECEIVER_EVENT_URL is set but RECEIVER_EVENT_SECRET is empty; set it to a "
                    "whsec_ secret (python3 -c 'import base64, secrets; "
                    'print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\')'
                )
        if self.event_secret:
            try:
                check_secret(self.event_secret)
            except ValueError as exc:
                raise ConfigError(f"RECEIVER_EVENT_SECRET: {exc}") from None
        for host in self.event_hosts:
            if "/" in host or "@" in host:
                raise ConfigError(
                    "RECEIVER_EVENT_HOSTS entries are host or host:port, comma separated "
                    f"(got {host!r})"
                )
        if self.event_link_ttl <= 0:
            raise ConfigError("RECEIVER_EVENT_LINK_TTL must be a number of seconds > 0")
        if self.event_disable_after <= 0:
            raise ConfigError("RECEIVER_EVENT_DISABLE_AFTER must be a number of seconds > 0")

    def weak_credentials(self) -> list[str]:
        """What is wrong with the browser and API credentials (`check` and `serve` refuse them).

        Empty ones are allowed: the browser or the API is then closed.
        """
        problems = []
        for name, value, least in (
            ("RECEIVER_ADMIN_PASSWORD", self.admin_password, MIN_ADMIN_PASSWORD),
            ("RECEIVER_API_TOKEN", self.api_token, MIN_API_TOKEN),
        ):
            if value and len(value) < least:
                problems.append(
                    f"{name} is {len(value)} characters long; use at least {least}. "
                    f"Generate one with: python3 -c 'import secrets; "
                    f"print(secrets.token_urlsafe({max(least, 24)}))'"
                )
        return problems

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"Settings({shown})"

    # -- derived values -------------------------------------------------

    @property
    def auth_tokens(self) -> tuple[str, ...]:
        """Tokens accepted for webhook signatures (primary first, then the rotation token)."""
        return tuple(t for t in (self.auth_token, self.auth_token_secondary) if t)

    @property
    def rest_credentials(self) -> tuple[str, str] | None:
        """HTTP Basic credentials for Twilio's REST API: API key preferred, else the auth token."""
        if self.api_key:
            return (self.api_key, self.api_secret)
        if self.account_sid and self.auth_token and not self.dev_mode:
            return (self.account_sid, self.auth_token)
        return None

    @property
    def https(self) -> bool:
        """Whether users reach the service over https (cookies are then Secure)."""
        return self.public_url.startswith("https://")

    def describe(self) -> dict[str, str]:
        """Every setting as text with secrets masked, for `check` and start-up logs."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                out[f.name] = "(set)" if value else "(not set)"
            elif f.name == "database_url":
                out[f.name] = _redact_url(value)
            else:
                out[f.name] = (
                    ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
                    if isinstance(value, tuple)
                    else str(value)
                )
        return out

    # -- construction ---------------------------------------------------

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, create_dirs: bool = True
    ) -> Settings:
        """Read and validate the environment; in dev mode, create or load generated secrets."""
        env = dict(os.environ if environ is None else environ)
        data_dir = Path(env.get("RECEIVER_DATA_DIR") or "data").expanduser().resolve()
        if create_dirs:
            ensure_private_dir(data_dir)
        auth_token = env.get("TWILIO_AUTH_TOKEN", "").strip()
        dev_mode = not auth_token
        stored: dict[str, str] = {}
        if create_dirs and (dev_mode or not env.get("RECEIVER_SECRET_KEY")):
            stored = load_or_create_secrets(data_dir, with_dev_credentials=dev_mode)
        if dev_mode:
            auth_token = stored.get("auth_token", "")

        def choose(name: str, key: str) -> str:
            value = env.get(name, "").strip()
            return value or stored.get(key, "")

        return cls(
            data_dir=data_dir,
            auth_token=auth_token,
            auth_token_secondary=env.get("TWILIO_AUTH_TOKEN_SECONDARY", "").strip(),
            account_sid=env.get("TWILIO_ACCOUNT_SID", "").strip(),
            api_key=env.get("TWILIO_API_KEY", "").strip(),
            api_secret=env.get("TWILIO_API_SECRET", "").strip(),
            api_base=(env.get("TWILIO_API_BASE") or DEFAULT_API_BASE).rstrip("/"),
            mcs_base=(env.get("TWILIO_MCS_BASE") or DEFAULT_MCS_BASE).rstrip("/"),
            conversations_base=(
                env.get("TWILIO_CONVERSATIONS_BASE") or DEFAULT_CONVERSATIONS_BASE
            ).rstrip("/"),
            events_base=(env.get("TWILIO_EVENTS_BASE") or DEFAULT_EVENTS_BASE).rstrip("/"),
            public_url=(env.get("RECEIVER_PUBLIC_URL") or "").strip().rstrip("/"),
            proxy_hops=_int(env, "RECEIVER_PROXY_HOPS", 0),
            storage_url=env.get("RECEIVER_STORAGE_URL") or (data_dir / "media").as_uri(),
            database_url=env.get("RECEIVER_DATABASE_URL")
            or f"sqlite:///{data_dir / 'receiver.db'}",
            media_hosts=_hosts(env.get("RECEIVER_MEDIA_HOSTS"), dev_mode=dev_mode),
            max_media_bytes=_int(env, "RECEIVER_MAX_MEDIA_BYTES", 20 * MIB),
            max_message_bytes=_int(env, "RECEIVER_MAX_MESSAGE_BYTES", 50 * MIB),
            admin_password=choose("RECEIVER_ADMIN_PASSWORD", "admin_password"),
            api_token=choose("RECEIVER_API_TOKEN", "api_token"),
            secret_key=choose("RECEIVER_SECRET_KEY", "secret_key") or secrets.token_hex(32),
            inline_deadline=_float(env, "RECEIVER_INLINE_DEADLINE", 8.0),
            max_attempts=_int(env, "RECEIVER_MAX_ATTEMPTS", 8),
            fetch_deadline=_float(env, "RECEIVER_FETCH_DEADLINE", 30.0),
            lease_seconds=_float(env, "RECEIVER_LEASE_SECONDS", 90.0),
            delete_remote_media=_bool(env, "RECEIVER_DELETE_REMOTE_MEDIA", False),
            retention_days=_int(env, "RECEIVER_RETENTION_DAYS", 0),
            log_bodies=_bool(env, "RECEIVER_LOG_BODIES", False),
            log_format=(env.get("RECEIVER_LOG_FORMAT") or "text").strip().lower(),
            dev_mode=dev_mode,
            clamd_url=(env.get("RECEIVER_CLAMD_URL") or "").strip(),
            scan_mode=(env.get("RECEIVER_SCAN") or "required").strip().lower(),
            clamd_stream_max=_int(env, "RECEIVER_CLAMD_STREAM_MAX", 25 * MIB),
            ocr_languages=_languages(env.get("RECEIVER_OCR")),
            ocr_timeout=_float(env, "RECEIVER_OCR_TIMEOUT", 30.0),
            event_url=(env.get("RECEIVER_EVENT_URL") or "").strip(),
            event_secret=(env.get("RECEIVER_EVENT_SECRET") or "").strip(),
            event_hosts=tuple(
                h.strip().lower()
                for h in (env.get("RECEIVER_EVENT_HOSTS") or "").split(",")
                if h.strip()
            ),
            event_link_ttl=_int(env, "RECEIVER_EVENT_LINK_TTL", 604800),
            event_disable_after=_float(env, "RECEIVER_EVENT_DISABLE_AFTER", DEFAULT_DISABLE_AFTER),
            event_retry_schedule=_schedule(env.get("RECEIVER_EVENT_RETRY_SCHEDULE")),
            stream_max=_int(env, "RECEIVER_STREAM_MAX", 500),
            conversation_author=(env.get("RECEIVER_CONVERSATION_AUTHOR") or "").strip(),
        )


def ensure_private_dir(path: Path) -> None:
    """Create `path` (mode 0700): it holds phone numbers, messages and secrets."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)
    except OSError as exc:
        raise ConfigError(
            f"RECEIVER_DATA_DIR: cannot create {path} ({exc.strerror}); choose a writable directory"
        ) from None


def load_or_create_secrets(data_dir: Path, *, with_dev_credentials: bool) -> dict[str, str]:
    """Load the generated secrets file (0600), creating the missing entries."""
    path = data_dir / SECRETS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            raise ConfigError(
                f"{path} is not valid JSON; delete it to generate new dev credentials"
            ) from None
    wanted = ["secret_key"]
    if with_dev_credentials:
        wanted += ["auth_token", "admin_password", "api_token"]
    missing = [k for k in wanted if not stored.get(k)]
    if missing:
        for key in missing:
            stored[key] = (
                secrets.token_hex(16) if key == "auth_token" else secrets.token_urlsafe(24)
            )
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh, indent=2)
        os.replace(tmp, path)
    path.chmod(0o600)
    return stored


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number (got {raw!r})") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds (got {raw!r})") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false (got {raw!r})")


def _hosts(raw: str | None, *, dev_mode: bool) -> tuple[str, ...]:
    if raw is None or not raw.strip():
        if dev_mode:
            return (*DEFAULT_MEDIA_HOSTS, f"127.0.0.1:{SIMULATE_MEDIA_PORT}")
        return DEFAULT_MEDIA_HOSTS
    hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    for host in hosts:
        if "/" in host or "@" in host:
            raise ConfigError(
                "RECEIVER_MEDIA_HOSTS entries are host or host:port, comma separated "
                f"(got {host!r})"
            )
    return hosts


def _schedule(raw: str | None) -> tuple[float, ...]:
    if raw is None or not raw.strip():
        return DEFAULT_SCHEDULE
    try:
        return parse_schedule(raw)
    except ValueError as exc:
        raise ConfigError(
            "RECEIVER_EVENT_RETRY_SCHEDULE must be seconds, comma separated, such as "
            f"5,300,1800 ({exc})"
        ) from None


def _languages(raw: str | None) -> tuple[str, ...]:
    from receiver.media.ocr import parse_languages

    try:
        return parse_languages(raw or "")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
