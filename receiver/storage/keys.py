"""Object keys: how stored files are named, and the one rule every key must pass.

A key is the same on local disk and on S3, so it has to be safe as a relative
file path and as an S3 key at once. `validate_key` is that rule; every store
method calls it before touching storage, so a key built from webhook input can
never climb out of the storage root or name a hidden file.

Layout:

- originals: ``media/<AccountSid>/<MessageSid>/<index>-<MediaSid>.<ext>``
- derivatives: ``derived/<AccountSid>/<MessageSid>/<index>-<MediaSid>.<name>.<ext>``
- prepared outbound files: ``outbound/<yyyy>/<mm>/<token>.<ext>``
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# 1024 bytes is S3's limit; half of it leaves room for a bucket prefix.
MAX_KEY_LENGTH = 512
# NAME_MAX is 255 on common filesystems, and the local store adds a leading
# dot, a random part and a ".part" / ".meta.json" suffix to a segment.
MAX_SEGMENT_LENGTH = 200

_KEY_CHARS = re.compile(r"[A-Za-z0-9._/-]+")
_SID = re.compile(r"[A-Za-z0-9]{1,64}")
_EXTENSION = re.compile(r"[a-z0-9]{1,10}")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,128}")
_MEDIA_KEY = re.compile(
    r"media/(?P<account>[A-Za-z0-9]{1,64})/(?P<message>[A-Za-z0-9]{1,64})/"
    r"(?P<stem>[0-9]+-[A-Za-z0-9]{1,64})\.[a-z0-9]{1,10}"
)


def validate_key(key: str) -> str:
    """Return `key` unchanged if it is a safe object key; raise ValueError otherwise.

    Safe means: ASCII letters, digits and ``._/-`` only; no leading or trailing
    ``/``; no empty segment (``a//b``); no segment starting with ``.`` (which
    refuses ``.`` and ``..`` and keeps the local store's temp files and
    sidecars out of the key space); at most MAX_KEY_LENGTH characters.
    """
    if not isinstance(key, str):
        raise ValueError(f"object key must be a string, not {type(key).__name__}")
    if not key:
        raise ValueError("object key must not be empty")
    _check_path(key, what="object key")
    if key.endswith("/"):
        raise ValueError(f"object key must not end with '/': {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Return `prefix` unchanged if it can start a valid key ("" is allowed); else ValueError.

    A prefix follows the key rules, except that it may end with ``/``.
    """
    if not isinstance(prefix, str):
        raise ValueError(f"key prefix must be a string, not {type(prefix).__name__}")
    if prefix:
        _check_path(prefix[:-1] if prefix.endswith("/") else prefix, what="key prefix")
    return prefix


def media_key(
    account_sid: str, message_sid: str, index: int, media_sid: str | None, extension: str
) -> str:
    """The key of an original: ``media/<AccountSid>/<MessageSid>/<index>-<MediaSid>.<ext>``.

    `media_sid` may be None (a media URL without a recognisable Media SID);
    the name then uses ``media``. Each part is checked, so webhook input cannot
    change the shape of the key.
    """
    account = _sid(account_sid, "account_sid")
    message = _sid(message_sid, "message_sid")
    media = "media" if media_sid is None else _sid(media_sid, "media_sid")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"media index must be a whole number >= 0 (got {index!r})")
    return validate_key(f"media/{account}/{message}/{index}-{media}.{_extension(extension)}")


def derived_key(original_key: str, name: str, extension: str) -> str:
    """The key of a derivative (``name``, e.g. ``thumb``) of the original at `original_key`.

    ``media/AC../MM../0-ME...jpg`` with name ``thumb`` and extension ``webp``
    becomes ``derived/AC../MM../0-ME...thumb.webp``. Raises ValueError if
    `original_key` is not a media key.
    """
    match = _MEDIA_KEY.fullmatch(original_key) if isinstance(original_key, str) else None
    if match is None:
        raise ValueError(f"not a media key (media/<AccountSid>/<MessageSid>/...): {original_key!r}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"derivative name must be 1-32 lowercase letters, digits, '_' or '-' (got {name!r})"
        )
    return validate_key(
        f"derived/{match['account']}/{match['message']}/{match['stem']}.{name}."
        f"{_extension(extension)}"
    )


def message_prefixes(account_sid: str, message_sid: str) -> tuple[str, str]:
    """The prefixes under which every object of one message lies: originals, derivatives.

    Raises ValueError if either SID could not be part of a key.
    """
    account = _sid(account_sid, "account_sid")
    message = _sid(message_sid, "message_sid")
    return f"media/{account}/{message}/", f"derived/{account}/{message}/"


def outbound_key(token: str, extension: str, *, when: datetime | None = None) -> str:
    """The key of a prepared outbound file: ``outbound/<yyyy>/<mm>/<token>.<ext>``.

    `token` is an unguessable URL-safe string (``secrets.token_urlsafe()``);
    `when` (default: now) picks the month folder, in UTC, so old files can be
    purged a month at a time. A naive `when` is taken as UTC.
    """
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise ValueError("outbound token must be 8-128 characters of A-Z a-z 0-9 _ -")
    moment = datetime.now(UTC) if when is None else when
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return validate_key(f"outbound/{moment:%Y}/{moment:%m}/{token}.{_extension(extension)}")


def _check_path(path: str, *, what: str) -> None:
    if len(path) > MAX_KEY_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_KEY_LENGTH} characters")
    # An explicit ASCII class: str.isalnum() and \w would let other scripts'
    # letters and digits through, which normalise differently on some filesystems.
    if not _KEY_CHARS.fullmatch(path):
        raise ValueError(f"{what} may only contain A-Z a-z 0-9 . _ / - (got {path!r})")
    if path.startswith("/"):
        raise ValueError(f"{what} must be relative, without a leading '/': {path!r}")
    for segment in path.split("/"):
        if not segment:
            raise ValueError(f"{what} must not contain an empty segment ('//'): {path!r}")
        if segment.startswith("."):
            raise ValueError(f"{what} segments must not start with '.': {path!r}")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise ValueError(f"{what} has a segment longer than {MAX_SEGMENT_LENGTH} characters")


def _sid(value: str, field: str) -> str:
    if not isinstance(value, str) or not _SID.fullmatch(value):
        raise ValueError(f"{field} must be 1-64 ASCII letters and digits (got {value!r})")
    return value


def _extension(extension: str) -> str:
    ext = extension.lower().removeprefix(".") if isinstance(extension, str) else ""
    if not _EXTENSION.fullmatch(ext):
        raise ValueError(
            f"file extension must be 1-10 ASCII letters or digits, like 'jpg' (got {extension!r})"
        )
    return ext
