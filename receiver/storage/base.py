"""The `ObjectStore` interface that every storage backend implements.

Backends are small classes that translate their vendor's errors into this
interface's errors, so callers only ever see:

- ``FileNotFoundError(key)`` for a key that holds no object;
- ``ValueError`` for a bad key, prefix, content type, metadata or range;
- ``StorageError`` (from ``receiver.errors``) when the store itself failed or
  is misconfigured, with a message that names the fix;
- whatever the caller's own file object raised while it was being read.

No object is ever visible until it is complete: a reader sees the old object,
no object, or the whole new one.
"""

from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from receiver.storage.keys import validate_key, validate_prefix

CHUNK_SIZE = 1024 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# S3 limits user metadata to 2 KB in total (keys and values); the local store
# keeps to the same limit so that objects can move between the two.
MAX_METADATA_BYTES = 2048
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live

_CONTENT_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    r"(?:\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(?:[A-Za-z0-9!#$&^_.+-]+|\"[^\"\\\r\n]*\"))*"
)
_METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one stored object."""

    key: str
    size: int
    content_type: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    # An opaque version tag for HTTP ETag/If-None-Match; S3's ETag, or the
    # SHA-256 on local disk.
    etag: str | None = None
    # Hex SHA-256 of the bytes when the store knows it: always on local disk,
    # on S3 when the writer put it in metadata["sha256"].
    sha256: str | None = None
    last_modified: datetime | None = None


class ObjectStore(ABC):
    """A flat namespace of immutable-until-replaced objects addressed by safe keys."""

    @property
    @abstractmethod
    def url(self) -> str:
        """The storage URL this store was opened with (no secrets), for logs and `check`."""

    def put(
        self,
        key: str,
        fp: BinaryIO,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        size: int | None = None,
    ) -> None:
        """Store everything `fp` yields (from its current position) under `key`, atomically.

        The object becomes visible only once it is complete, replacing any
        object at `key`. `size`, when given, is the number of bytes the caller
        expects; a stream that yields more or fewer raises ValueError and
        nothing is stored. `metadata` keys are lower-case ``[a-z0-9_-]``,
        values printable ASCII, 2 KB in total.
        """
        meta = check_put_arguments(key, content_type, metadata, size)
        self._store(key, fp, content_type, meta, size)

    @abstractmethod
    def _store(
        self, key: str, fp: BinaryIO, content_type: str, meta: dict[str, str], size: int | None
    ) -> None:
        """Do the backend's part of `put`, its arguments already checked."""

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Store `data` under `key` atomically; see `put`."""
        self.put(
            key, io.BytesIO(data), content_type=content_type, metadata=metadata, size=len(data)
        )

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Open the object for streaming reads; FileNotFoundError(key) if there is none.

        The caller closes the returned file object (use ``with``).
        """

    @abstractmethod
    def open_range(self, key: str, start: int, end: int | None) -> BinaryIO:
        """Open bytes `start`..`end` (inclusive, like HTTP Range) of the object.

        `end` None, or past the last byte, means "to the end". ValueError if
        `start` is at or past the object's size (HTTP 416), FileNotFoundError(key)
        if there is no object.
        """

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size, content type, metadata and version tag of the object; FileNotFoundError(key)."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a complete object is stored under `key`."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing object is not an error."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix`; return how many were deleted.

        The prefix is a plain string prefix, as on S3 ("media/AC1" also
        matches "media/AC12/..."). An empty prefix is refused (ValueError) so
        that a bug cannot erase the whole store.
        """

    @abstractmethod
    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys of complete objects starting with `prefix`, in lexicographic order."""

    def presigned_url(
        self,
        key: str,
        *,
        expires: int = 300,
        filename: str | None = None,
        content_type: str | None = None,
        disposition: str = "attachment",
    ) -> str | None:
        """A URL that lets anyone GET the object for `expires` seconds, or None if unsupported.

        `filename` sets the response's Content-Disposition (`disposition` is
        ``attachment`` or ``inline``), `content_type` its Content-Type. Local
        storage returns None: serve the bytes through the application instead.
        """
        validate_key(key)
        return self._presign(key, expires, filename, content_type, disposition)

    @abstractmethod
    def _presign(
        self, key: str, expires: int, filename: str | None, mime: str | None, disposition: str
    ) -> str | None:
        """Do the backend's part of `presigned_url`, the key already checked."""

    @abstractmethod
    def check(self, *, write: bool = True) -> None:
        """Verify that the store is usable; raise StorageError naming the cause and the fix.

        With `write` (the default) a small probe object is written and
        removed, proving write permission; readiness probes can pass False.
        """

    @abstractmethod
    def cleanup_partials(self, older_than_seconds: float = 3600.0) -> int:
        """Remove debris of interrupted writes older than the given age; return how many.

        Debris is never visible as an object; this only reclaims its space.
        """

    def path_for(self, key: str) -> Path | None:
        """The local file holding the object, for zero-copy serving; None if not on local disk."""
        validate_key(key)
        return None

    def __repr__(self) -> str:
        """Show the storage URL, never credentials."""
        return f"{type(self).__name__}({self.url!r})"


def check_content_type(content_type: str) -> str:
    """Return `content_type` if it is a well-formed ``type/subtype[; k=v]``; else ValueError."""
    if not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type):
        raise ValueError(f"content type must look like 'image/jpeg' (got {content_type!r})")
    return content_type


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Return a validated copy of `metadata` (the caller's mapping is never changed).

    Keys are lower-case ``[a-z0-9_-]`` (S3 lower-cases them anyway, so the
    rule keeps both stores round-tripping the same keys); values printable
    ASCII because S3 sends them as HTTP headers; 2 KB in total.
    """
    clean: dict[str, str] = {}
    total = 0
    for name, value in (metadata or {}).items():
        if not isinstance(name, str) or not _METADATA_KEY.fullmatch(name):
            raise ValueError(
                f"metadata key must be 1-64 lower-case letters, digits, '_' or '-' (got {name!r})"
            )
        if not isinstance(value, str) or not (value.isascii() and value.isprintable()):
            raise ValueError(
                f"metadata value for {name!r} must be printable ASCII text; "
                "percent-encode other characters"
            )
        total += len(name) + len(value)
        clean[name] = value
    if total > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {total} bytes; the limit is {MAX_METADATA_BYTES}")
    return clean


def check_range(start: int, end: int | None) -> None:
    """ValueError unless `start` >= 0 and `end` is None or >= `start`."""
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"range start must be a whole number >= 0 (got {start!r})")
    if end is not None and (isinstance(end, bool) or not isinstance(end, int) or end < start):
        raise ValueError(f"range end must be None or >= start (got {start!r}-{end!r})")


def check_expires(expires: int) -> int:
    """Return `expires` if a presigned URL may live that many seconds; else ValueError."""
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise ValueError(f"expires must be a whole number of seconds (got {expires!r})")
    if not 1 <= expires <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"expires must be between 1 and {MAX_PRESIGN_SECONDS} seconds")
    return expires


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """A Content-Disposition header value for `filename`, safe for any input (RFC 6266).

    Sends an ASCII fallback ``filename="..."`` plus the exact name as
    ``filename*=UTF-8''...``, so quotes, newlines or non-ASCII characters in a
    sender-supplied name can neither break the header nor be lost.
    """
    if disposition not in ("attachment", "inline"):
        raise ValueError(f"disposition must be 'attachment' or 'inline' (got {disposition!r})")
    name = "".join(ch for ch in filename if ch.isprintable()).strip()
    name = name.replace("/", "_").replace("\\", "_") or "download"
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"%;' else "_" for ch in name)
    value = f'{disposition}; filename="{fallback}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value


class CountingReader(io.RawIOBase):
    """A non-seekable reader over `fp` that counts bytes and, given `expected`, enforces it.

    With `expected`, reading raises ValueError as soon as `fp` yields more
    bytes, or ends with fewer. Raising from ``read`` before the end of the
    stream is what keeps a short or long stream from ever becoming a visible
    object: the upload is abandoned before it completes. Wrap it in
    ``io.BufferedReader`` so that ``read(n)`` returns `n` bytes until the end.
    """

    def __init__(self, fp: BinaryIO, key: str, expected: int | None = None) -> None:
        """Read from `fp` on behalf of the object at `key`."""
        super().__init__()
        self._fp = fp
        self._key = key
        self._expected = expected
        self.count = 0

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        """Fill `buffer` from the wrapped stream, checking the running total."""
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        want = len(view)
        if self._expected is not None:
            # Ask for one byte past the expected end so an over-long stream shows itself.
            want = min(want, self._expected - self.count + 1)
        data = self._fp.read(want) or b""
        got = len(data)
        view[:got] = data
        self.count += got
        if self._expected is None:
            return got
        if self.count > self._expected:
            raise ValueError(
                f"{self._key}: stream is longer than the declared {self._expected} bytes"
            )
        if got == 0 and self.count < self._expected:
            raise ValueError(
                f"{self._key}: stream ended after {self.count} of the declared "
                f"{self._expected} bytes"
            )
        return got


class RawReader(io.RawIOBase):
    """A read-only raw stream over some source; subclasses say how to read and release it."""

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        """Read the next bytes into `buffer`; 0 at the end."""
        view = memoryview(buffer).cast("B")
        data = self._read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Release the source too."""
        if not self.closed:
            self._release()
        super().close()

    def _read(self, n: int) -> bytes:
        """Up to `n` bytes of the source; b"" at the end."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free the source (a file, a connection)."""
        raise NotImplementedError


def not_found(key: str) -> FileNotFoundError:
    """The error every store raises for a key that holds no object: FileNotFoundError(key)."""
    exc = FileNotFoundError(key)
    exc.filename = key
    return exc


def check_put_arguments(
    key: str, content_type: str, metadata: Mapping[str, str] | None, size: int | None
) -> dict[str, str]:
    """Validate the arguments every `put` takes; return the metadata copy to store."""
    validate_key(key)
    check_content_type(content_type)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ValueError(f"size must be None or a whole number >= 0 (got {size!r})")
    return check_metadata(metadata)


def check_delete_prefix(prefix: str) -> str:
    """Validate a prefix for `delete_prefix`, refusing the empty prefix."""
    validate_prefix(prefix)
    if not prefix:
        raise ValueError("refusing to delete every object: delete_prefix needs a non-empty prefix")
    return prefix
