"""`S3Store`: objects in an S3 bucket (AWS, MinIO, R2 or any S3-compatible store) via boto3.

The storage URL ``s3://bucket/prefix`` names the bucket and a key prefix that
is prepended to every key, so several deployments can share one bucket.

The endpoint comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (for
MinIO, R2 and others), the region from ``AWS_REGION`` or
``AWS_DEFAULT_REGION`` (default us-east-1), credentials from boto3's usual
chain (environment, profile, instance role).

Uploads go through boto3's managed transfer: one PutObject below the
multipart threshold, a multipart upload above it. S3 creates the object only
when the whole upload completes, and a failed multipart upload is aborted, so
no partial object is ever visible. Vendor errors become this package's
errors: a missing key is ``FileNotFoundError(key)``, everything else a
``StorageError`` that names the fix.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, NoReturn
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from receiver.errors import ConfigError, StorageError
from receiver.storage.base import (
    CountingReader,
    ObjectInfo,
    ObjectStore,
    RawReader,
    check_content_type,
    check_delete_prefix,
    check_expires,
    check_range,
    content_disposition,
    not_found,
)
from receiver.storage.keys import validate_key, validate_prefix

MIB = 1024 * 1024
DEFAULT_REGION = "us-east-1"
MIN_PART_SIZE = 5 * MIB  # S3 refuses smaller parts (except the last)
DELETE_BATCH = 1000  # the most keys one DeleteObjects call accepts

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_FORBIDDEN = frozenset({"AccessDenied", "403", "AllAccessDisabled", "Forbidden"})
_BAD_CREDENTIALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)
_WRONG_REGION = frozenset(
    {"PermanentRedirect", "301", "AuthorizationHeaderMalformed", "IncorrectEndpoint"}
)


class S3Store(ObjectStore):
    """Objects in `bucket` under `prefix`, through one thread-safe boto3 client."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        public_endpoint_url: str | None = None,
        multipart_threshold: int = 8 * MIB,
        multipart_chunksize: int = 8 * MIB,
        max_concurrency: int = 4,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
        addressing_style: str | None = None,
    ) -> None:
        """Use `bucket` (and `prefix`) through `client`, or a client built from the environment.

        `endpoint_url` and `region` override the environment. `public_endpoint_url`
        is the endpoint browsers and Twilio can reach when it differs from the
        one this service uses (MinIO on an internal host name): presigned URLs
        are signed for it. Multipart sizes, concurrency, timeouts and retry
        attempts are tunable; tests lower them.
        """
        _check_bucket(bucket)
        clean_prefix = prefix.strip("/")
        if clean_prefix:
            try:
                validate_prefix(clean_prefix)
            except ValueError as exc:
                raise ConfigError(f"RECEIVER_STORAGE_URL: bad key prefix: {exc}") from None
        if multipart_chunksize < MIN_PART_SIZE:
            raise ConfigError(
                f"multipart_chunksize must be at least {MIN_PART_SIZE} bytes "
                "(S3's minimum part size)"
            )
        if multipart_threshold < 1:
            raise ConfigError("multipart_threshold must be at least 1 byte")
        if max_concurrency < 1:
            raise ConfigError("max_concurrency must be at least 1")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ConfigError("connect_timeout and read_timeout must be > 0 seconds")
        if max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if addressing_style not in (None, "auto", "path", "virtual"):
            raise ConfigError("addressing_style must be 'auto', 'path' or 'virtual'")

        self.bucket = bucket
        self.region: str | None
        self.endpoint_url: str | None
        self.prefix = f"{clean_prefix}/" if clean_prefix else ""
        if client is None:
            self.endpoint_url = _endpoint_from_env(endpoint_url)
            self.region = region or _region_from_env()
            options: dict[str, Any] = {
                "connect_timeout": connect_timeout,
                "read_timeout": read_timeout,
                "max_attempts": max_attempts,
                # Parts upload in parallel, and the web and worker threads share
                # the client: the default pool of 10 would start dropping connections.
                "max_pool_connections": max(10, 4 * max_concurrency),
                "addressing_style": addressing_style,
            }
            client = _make_client(self.endpoint_url, self.region, **options)
            presigner = (
                _make_client(
                    _check_endpoint(public_endpoint_url, "public_endpoint_url"),
                    self.region,
                    **options,
                )
                if public_endpoint_url
                else client
            )
        else:
            if public_endpoint_url:
                raise ConfigError(
                    "public_endpoint_url needs S3Store to build its clients; pass no client"
                )
            self.endpoint_url = getattr(getattr(client, "meta", None), "endpoint_url", None)
            self.region = getattr(getattr(client, "meta", None), "region_name", None) or region
            presigner = client
        self._client = client
        self._presigner = presigner
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            use_threads=True,
            # The awscrt transfer client, when installed, behaves differently
            # with file objects; keep one well-understood code path.
            preferred_transfer_client="classic",
        )
        # s3transfer buffers parts of file objects in memory; bound that to
        # what the threads can upload at once so memory stays flat per upload.
        self._transfer.max_in_memory_upload_chunks = max_concurrency

    @property
    def url(self) -> str:
        """The ``s3://bucket/prefix`` URL of this store."""
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def client(self) -> Any:
        """The boto3 S3 client in use (tests and admin commands may need it)."""
        return self._client

    # -- writing ------------------------------------------------------------

    def _store(
        self, key: str, fp: BinaryIO, content_type: str, meta: dict[str, str], size: int | None
    ) -> None:
        """Upload `fp` with ContentType and Metadata; multipart above the threshold.

        See ObjectStore.put. S3 makes the object visible only when the upload
        completes; on any failure a started multipart upload is aborted.
        """
        source: Any = fp
        if _seekable(fp):
            if size is not None:
                # s3transfer sizes a seekable stream itself; check it against the
                # caller's figure before anything is sent.
                here = fp.tell()
                actual = fp.seek(0, io.SEEK_END) - here
                fp.seek(here)
                if actual != size:
                    raise ValueError(f"{key}: stream holds {actual} bytes, declared {size}")
        else:
            # Buffered so that read(n) returns n bytes until the end: s3transfer
            # would otherwise turn a short read into an undersized part.
            source = io.BufferedReader(CountingReader(fp, key, size))
        extra = {"ContentType": content_type, "Metadata": meta}
        try:
            self._client.upload_fileobj(
                source, self.bucket, self._full(key), ExtraArgs=extra, Config=self._transfer
            )
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            self._fail(exc, key, f"store {key} in")

    def delete(self, key: str) -> None:
        """Delete the object; S3 answers success for a missing key too."""
        validate_key(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, None, f"delete {key} from")

    def delete_prefix(self, prefix: str) -> int:
        """Delete every listed object under `prefix` in batches of 1000; return the count."""
        check_delete_prefix(prefix)
        batch: list[str] = []
        count = 0
        for key in self.iter_keys(prefix):
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                count += self._delete_batch(batch)
                batch = []
        if batch:
            count += self._delete_batch(batch)
        return count

    # -- reading ------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """Stream the object (GetObject); FileNotFoundError(key) if there is none."""
        validate_key(key)
        return self._get(key, None)

    def open_range(self, key: str, start: int, end: int | None) -> BinaryIO:
        """Stream bytes `start`..`end` (inclusive) with a ranged GetObject; see ObjectStore."""
        check_range(start, end)
        validate_key(key)
        return self._get(key, f"bytes={start}-{'' if end is None else end}")

    def stat(self, key: str) -> ObjectInfo:
        """HeadObject as an ObjectInfo; FileNotFoundError(key) if there is no object."""
        validate_key(key)
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, key, f"read {key} from")
        metadata = dict(head.get("Metadata") or {})
        etag = head.get("ETag")
        return ObjectInfo(
            key=key,
            size=int(head.get("ContentLength", 0)),
            content_type=head.get("ContentType") or "application/octet-stream",
            metadata=metadata,
            etag=etag.strip('"') if etag else None,
            sha256=metadata.get("sha256"),
            last_modified=head.get("LastModified"),
        )

    def exists(self, key: str) -> bool:
        """Whether the object exists (HeadObject)."""
        try:
            self.stat(key)
        except FileNotFoundError:
            return False
        return True

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Yield keys under `prefix` in S3's (lexicographic) order, without the store's prefix."""
        validate_prefix(prefix)
        return self._list(prefix)

    def _presign(
        self, key: str, expires: int, filename: str | None, mime: str | None, disposition: str
    ) -> str:
        """A presigned GET URL, overriding Content-Disposition/Content-Type when given.

        Signing happens locally: no request is made, so the URL is returned
        even for a missing object (fetching it then gives 404).
        """
        check_expires(expires)
        params: dict[str, str] = {"Bucket": self.bucket, "Key": self._full(key)}
        if filename is not None:
            params["ResponseContentDisposition"] = content_disposition(filename, disposition)
        elif disposition == "inline":
            params["ResponseContentDisposition"] = "inline"
        elif disposition != "attachment":
            raise ValueError(f"disposition must be 'attachment' or 'inline' (got {disposition!r})")
        if mime is not None:
            params["ResponseContentType"] = check_content_type(mime)
        try:
            url: str = self._presigner.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires
            )
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, key, "sign a URL for")
        return url

    # -- maintenance --------------------------------------------------------

    def check(self, *, write: bool = True) -> None:
        """HeadBucket, then (with `write`) put and delete a probe; StorageError names the fix."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise self._missing_bucket() from None
            if code in _WRONG_REGION:
                raise self._wrong_region(exc) from None
            self._fail(exc, None, "reach")
        except BotoCoreError as exc:
            self._fail(exc, None, "reach")
        if not write:
            return
        # A dot segment keeps the probe out of iter_keys even if the delete fails.
        probe = f"{self.prefix}.receiver-check/{secrets.token_hex(8)}"
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=probe, Body=b"ok", ContentType="text/plain"
            )
            self._client.delete_object(Bucket=self.bucket, Key=probe)
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, None, "write a probe object to")

    def cleanup_partials(self, older_than_seconds: float = 3600.0) -> int:
        """Abort multipart uploads under the prefix started longer ago than the given age.

        A process killed mid-upload leaves an invisible but billed multipart
        upload; this aborts it (a bucket lifecycle rule
        AbortIncompleteMultipartUpload does the same on AWS). Returns how many.
        """
        if older_than_seconds < 0:
            raise ValueError("older_than_seconds must be >= 0")
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        aborted = 0
        try:
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for upload in page.get("Uploads") or []:
                    initiated = upload.get("Initiated")
                    if initiated is not None and initiated > cutoff:
                        continue
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, None, "clean up uploads in")
        return aborted

    # -- internals ----------------------------------------------------------

    def _full(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def _get(self, key: str, byte_range: str | None) -> BinaryIO:
        args = {"Bucket": self.bucket, "Key": self._full(key)}
        if byte_range is not None:
            args["Range"] = byte_range
        try:
            response = self._client.get_object(**args)
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, key, f"read {key} from")
        return io.BufferedReader(_Body(response["Body"], key, self), buffer_size=256 * 1024)

    def _list(self, prefix: str) -> Iterator[str]:
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._full(prefix)
            )
            for page in pages:
                for item in page.get("Contents") or []:
                    key = item["Key"][len(self.prefix) :]
                    try:
                        validate_key(key)
                    except ValueError:
                        continue  # written by something else; no key of ours can name it
                    yield key
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, None, "list")

    def _delete_batch(self, keys: list[str]) -> int:
        try:
            response = self._client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self._full(k)} for k in keys], "Quiet": True},
            )
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, None, "delete objects from")
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise StorageError(
                f"RECEIVER_STORAGE_URL: could not delete {len(errors)} of {len(keys)} objects "
                f"in bucket {self.bucket!r} (first: {first.get('Key')}: {first.get('Code')} "
                f"{first.get('Message')}); check the credentials' s3:DeleteObject permission"
            )
        return len(keys)

    def _missing_bucket(self) -> StorageError:
        return StorageError(
            f"RECEIVER_STORAGE_URL: bucket {self.bucket!r} does not exist"
            f"{self._where()}; create it (aws s3 mb s3://{self.bucket}) or set "
            "RECEIVER_STORAGE_URL to an existing bucket"
        )

    def _wrong_region(self, exc: ClientError) -> StorageError:
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        actual = headers.get("x-amz-bucket-region")
        return StorageError(
            f"RECEIVER_STORAGE_URL: bucket {self.bucket!r} is in region "
            f"{actual or 'another region'}, not {self.region}; set AWS_REGION={actual or '...'}"
        )

    def _where(self) -> str:
        return f" at {self.endpoint_url}" if self.endpoint_url else ""

    def _fail(self, exc: Exception, key: str | None, action: str) -> NoReturn:
        """Raise the translation of a vendor error; a missing key hides the vendor chain."""
        error = self._translate(exc, key, action)
        if isinstance(error, FileNotFoundError | ValueError):
            raise error from None
        raise error from exc

    def _translate(self, exc: Exception, key: str | None, action: str) -> Exception:
        """Turn a boto3/botocore error into FileNotFoundError, ValueError or StorageError."""
        if isinstance(exc, S3UploadFailedError) and isinstance(exc.__cause__, Exception):
            exc = exc.__cause__
        where = f"bucket {self.bucket!r}{self._where()}"
        if isinstance(exc, ClientError):
            code = _code(exc)
            message = exc.response.get("Error", {}).get("Message") or ""
            if code in _NOT_FOUND and key is not None:
                return not_found(key)
            if code == "NoSuchBucket" or (code in _NOT_FOUND and key is None):
                return self._missing_bucket()
            if code == "InvalidRange":
                return ValueError(f"{key}: requested range is past the end of the object")
            if code in _FORBIDDEN:
                return StorageError(
                    f"RECEIVER_STORAGE_URL: access denied trying to {action} {where}; grant these "
                    "credentials s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject and "
                    "s3:AbortMultipartUpload on it"
                )
            if code in _BAD_CREDENTIALS:
                return StorageError(
                    f"RECEIVER_STORAGE_URL: {where} rejected the credentials ({code}); check "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile/role in use)"
                )
            if code == "RequestTimeTooSkewed":
                return StorageError(
                    f"RECEIVER_STORAGE_URL: {where} says this machine's clock is wrong; "
                    "sync it (NTP)"
                )
            if code in _WRONG_REGION:
                return self._wrong_region(exc)
            return StorageError(
                f"RECEIVER_STORAGE_URL: could not {action} {where}: {code} {message}".rstrip()
            )
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StorageError(
                "RECEIVER_STORAGE_URL: no complete AWS credentials found; set AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an instance role)"
            )
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            endpoint = self.endpoint_url or "the AWS S3 endpoint"
            return StorageError(
                f"RECEIVER_STORAGE_URL: cannot {action} bucket {self.bucket!r}: {endpoint} is "
                f"unreachable or not answering ({type(exc).__name__}); check AWS_ENDPOINT_URL, "
                "the network and that the storage service is running"
            )
        return StorageError(f"RECEIVER_STORAGE_URL: could not {action} {where}: {exc}")


class _Body(RawReader):
    """A GetObject body whose read errors arrive as StorageError, not botocore exceptions."""

    def __init__(self, body: Any, key: str, store: S3Store) -> None:
        """Own the botocore StreamingBody `body` of the object at `key`."""
        super().__init__()
        self._body = body
        self._key = key
        self._store = store

    def _read(self, n: int) -> bytes:
        try:
            data: bytes = self._body.read(n)
        except BotoCoreError as exc:
            # A dropped connection or a short body mid-stream (IncompleteRead).
            self._store._fail(exc, self._key, f"read {self._key} from")
        return data

    def _release(self) -> None:
        """Release the HTTP connection."""
        self._body.close()


def _make_client(
    endpoint_url: str | None,
    region: str,
    *,
    connect_timeout: float,
    read_timeout: float,
    max_attempts: int,
    max_pool_connections: int,
    addressing_style: str | None,
) -> Any:
    style = addressing_style or ("path" if endpoint_url else "auto")
    options: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        # total_max_attempts counts the first try; botocore's "max_attempts"
        # key would count retries only and make 3 mean 4 requests.
        "retries": {"mode": "standard", "total_max_attempts": max_attempts},
        "max_pool_connections": max_pool_connections,
        "signature_version": "s3v4",
        # MinIO and most self-hosted stores serve buckets by path, not by
        # DNS name, so path style is the safe default off AWS.
        "s3": {"addressing_style": style},
    }
    if endpoint_url:
        # Several S3-compatible stores reject the CRC checksums newer botocore
        # sends by default; send them only where the API requires one.
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    # A session per store: boto3's default session is shared module state.
    session = boto3.session.Session()
    return session.client(
        "s3", region_name=region, endpoint_url=endpoint_url, config=Config(**options)
    )


def _endpoint_from_env(explicit: str | None) -> str | None:
    if explicit:
        return _check_endpoint(explicit, "endpoint_url")
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return _check_endpoint(value, name)
    return None


def _check_endpoint(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{name} must be an http(s) URL such as http://127.0.0.1:9000 (got {value!r})"
        )
    return value.rstrip("/")


def _region_from_env() -> str:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return DEFAULT_REGION


def _check_bucket(bucket: str) -> None:
    # S3's bucket naming rules, which MinIO and R2 share.
    ok = (
        isinstance(bucket, str)
        and 3 <= len(bucket) <= 63
        and all(ch.islower() or ch.isdigit() or ch in ".-" for ch in bucket)
        and bucket.isascii()
        and bucket[0].isalnum()
        and bucket[-1].isalnum()
        and ".." not in bucket
    )
    if not ok:
        raise ConfigError(
            "RECEIVER_STORAGE_URL: bucket names are 3-63 lower-case letters, digits, '.' "
            f"and '-', starting and ending with a letter or digit (got {bucket!r})"
        )


def _seekable(fp: BinaryIO) -> bool:
    try:
        return bool(fp.seekable()) and fp.tell() >= 0
    except (AttributeError, OSError, ValueError):
        return False


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")
