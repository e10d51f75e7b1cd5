"""Object storage for originals, derivatives and prepared outbound files.

`open_store(url)` turns ``RECEIVER_STORAGE_URL`` into a store:

- ``file:///absolute/path`` -> `LocalStore` (the default, under the data dir);
- ``s3://bucket[/prefix]`` -> `S3Store` (boto3; ``AWS_ENDPOINT_URL`` for MinIO, R2 and others).

Every store implements `ObjectStore`; see `receiver.storage.base` for the
contract and `receiver.storage.keys` for how keys are built and checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from receiver.errors import ConfigError
from receiver.storage.base import ObjectInfo, ObjectStore, content_disposition
from receiver.storage.keys import (
    derived_key,
    media_key,
    outbound_key,
    validate_key,
    validate_prefix,
)
from receiver.storage.local import LocalStore

if TYPE_CHECKING:
    from receiver.storage.s3 import S3Store

__all__ = [
    "LocalStore",
    "ObjectInfo",
    "ObjectStore",
    "S3Store",
    "content_disposition",
    "derived_key",
    "media_key",
    "open_store",
    "outbound_key",
    "validate_key",
    "validate_prefix",
]


def open_store(url: str, **kwargs: Any) -> ObjectStore:
    """Build the store named by a storage URL; ConfigError (naming RECEIVER_STORAGE_URL) if bad.

    Keyword arguments go to the store's constructor: for S3, `client`,
    `endpoint_url`, `region`, `public_endpoint_url`, multipart sizes and
    timeouts; for local storage, `chunk_size`. No network call is made:
    call `check()` to verify the store at start-up.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(
            "RECEIVER_STORAGE_URL is empty; use file:///absolute/path or s3://bucket[/prefix]"
        )
    parts = urlsplit(url.strip())
    if parts.query or parts.fragment:
        raise ConfigError(
            f"RECEIVER_STORAGE_URL must not have a query or fragment (got {url!r}); "
            "configure S3 through AWS_* variables"
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"RECEIVER_STORAGE_URL: {url!r} names host {parts.netloc!r}; a local path needs "
                "three slashes: file:///absolute/path"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ConfigError(f"RECEIVER_STORAGE_URL must be file:///absolute/path (got {url!r})")
        return LocalStore(path, **kwargs)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(
                f"RECEIVER_STORAGE_URL: no bucket in {url!r}; use s3://bucket[/prefix]"
            )
        if "@" in parts.netloc or ":" in parts.netloc:
            raise ConfigError(
                "RECEIVER_STORAGE_URL: put no credentials or port in the s3:// URL; use "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL"
            )
        # Imported here so that local-only deployments and the CLI do not pay
        # for importing boto3 on start-up.
        from receiver.storage.s3 import S3Store

        return S3Store(parts.netloc, unquote(parts.path), **kwargs)
    raise ConfigError(f"RECEIVER_STORAGE_URL must start with file:// or s3:// (got {url!r})")


def __getattr__(name: str) -> Any:
    """Import S3Store (and with it boto3) only when it is asked for."""
    if name == "S3Store":
        from receiver.storage.s3 import S3Store

        return S3Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
