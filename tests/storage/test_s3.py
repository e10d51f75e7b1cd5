"""S3Store against moto's standalone S3 server, a real process on loopback.

Every request goes over HTTP through boto3's real client (connections,
timeouts, retries, multipart, presigning); nothing is patched in-process.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from receiver.errors import ConfigError, StorageError
from receiver.storage import ObjectStore, open_store
from receiver.storage import s3 as s3_module
from receiver.storage.keys import media_key
from receiver.storage.s3 import S3Store
from tests.support.s3server import MotoS3Server, moto_server_fixture
from tests.support.services import free_port
from tests.support.stores import FailingReader, Trickle, key_calls

pytestmark = pytest.mark.s3

MIB = 1024 * 1024
KEY = media_key("AC" + "1" * 32, "MM" + "2" * 32, 0, "ME" + "3" * 32, "jpg")
# Low limits so that failure tests finish in about a second.
FAST = {"max_attempts": 1, "connect_timeout": 1, "read_timeout": 2}
SMALL_PARTS = {"multipart_threshold": 5 * MIB, "multipart_chunksize": 5 * MIB}

moto = moto_server_fixture(scope="module", name="moto")
# A second server that tests may stop, pause and restart without disturbing the others.
moto_outage = moto_server_fixture(scope="module", name="moto_outage")


def point_env_at(monkeypatch: pytest.MonkeyPatch, server: MotoS3Server) -> None:
    """Make boto3 find `server` through the environment only, as in production."""
    for name in (
        "AWS_ENDPOINT_URL_S3",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def s3_client(moto: MotoS3Server):
    """One client built by S3Store from the environment, shared by the module's stores.

    Building a boto3 client parses S3's service model (0.1-0.4 s); sharing
    one keeps this module fast while still using the store's own client
    configuration. Tests of the configuration itself build their own.
    """
    with pytest.MonkeyPatch.context() as patch:
        point_env_at(patch, moto)
        return S3Store("client-only", **FAST).client


@pytest.fixture
def bucket(moto: MotoS3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    point_env_at(monkeypatch, moto)
    return moto.new_bucket()


@pytest.fixture
def store(bucket: str, s3_client) -> S3Store:
    store = open_store(f"s3://{bucket}/tenant-a", client=s3_client, **SMALL_PARTS)
    assert isinstance(store, S3Store)
    return store


def raw_head(moto: MotoS3Server, bucket: str, key: str) -> dict:
    return moto.client().head_object(Bucket=bucket, Key=key)


def pending_uploads(moto: MotoS3Server, bucket: str) -> list:
    return moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads") or []


# -- configuration --------------------------------------------------------------


def test_open_store_reads_endpoint_and_region_from_the_environment(
    bucket: str, moto: MotoS3Server, monkeypatch: pytest.MonkeyPatch
):
    store = open_store(f"s3://{bucket}")
    assert isinstance(store, S3Store) and isinstance(store, ObjectStore)
    assert (store.bucket, store.prefix, store.region) == (bucket, "", "us-east-1")
    assert store.endpoint_url == moto.endpoint_url
    assert store.url == f"s3://{bucket}/"
    # The S3-specific variable wins over the general one.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    store = open_store(f"s3://{bucket}/a/b/")
    assert (store.endpoint_url, store.region, store.prefix) == (
        moto.endpoint_url,
        "eu-central-1",
        "a/b/",
    )
    monkeypatch.delenv("AWS_REGION")
    assert open_store(f"s3://{bucket}").region == "eu-west-1"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert open_store(f"s3://{bucket}").region == "us-east-1"


def test_client_is_configured_with_timeouts_and_standard_retries(bucket: str):
    config = S3Store(bucket).client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (5, 30)
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}


def test_bad_endpoint_and_settings_are_config_errors(bucket: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "minio:9000")
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL"):
        open_store(f"s3://{bucket}")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(ConfigError, match="multipart_chunksize"):
        S3Store(bucket, multipart_chunksize=MIB)
    with pytest.raises(ConfigError, match="max_attempts"):
        S3Store(bucket, max_attempts=0)


def test_an_explicit_client_is_used_as_given(bucket: str, moto: MotoS3Server):
    store = S3Store(bucket, "p", client=moto.client())
    store.put_bytes("x/y", b"1", content_type="text/plain")
    assert store.endpoint_url == moto.endpoint_url
    assert raw_head(moto, bucket, "p/x/y")["ContentLength"] == 1


# -- round trip -----------------------------------------------------------------


def test_put_get_stat_with_content_type_and_metadata(store: S3Store, moto: MotoS3Server):
    data = os.urandom(200_000)
    metadata = {"sha256": hashlib.sha256(data).hexdigest(), "media-sid": "ME3"}
    store.put(KEY, io.BytesIO(data), content_type="image/jpeg", metadata=metadata, size=len(data))
    assert store.exists(KEY)
    with store.open(KEY) as fp:
        assert fp.read() == data
    info = store.stat(KEY)
    assert (info.key, info.size, info.content_type) == (KEY, len(data), "image/jpeg")
    assert dict(info.metadata) == metadata
    assert info.sha256 == metadata["sha256"]
    assert info.etag == hashlib.md5(data).hexdigest()  # single PutObject below the threshold
    assert info.last_modified is not None
    # What S3 itself holds: the prefixed key, the content type and the user metadata.
    head = raw_head(moto, store.bucket, f"tenant-a/{KEY}")
    assert head["ContentType"] == "image/jpeg"
    assert head["Metadata"] == metadata
    assert store.path_for(KEY) is None


def test_put_bytes_empty_object(store: S3Store):
    store.put_bytes("a/empty", b"", content_type="text/plain")
    assert store.stat("a/empty").size == 0
    assert store.open("a/empty").read() == b""


def test_missing_key_is_file_not_found_from_none(store: S3Store):
    for call in (store.open, store.stat, lambda k: store.open_range(k, 0, 10)):
        with pytest.raises(FileNotFoundError) as excinfo:
            call("no/such/key")
        assert excinfo.value.args == ("no/such/key",)
        assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
    assert store.exists("no/such/key") is False
    store.delete("no/such/key")  # idempotent


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(0, 0, b"0"), (3, 5, b"345"), (7, None, b"789"), (8, 1000, b"89"), (0, None, b"0123456789")],
)
def test_open_range(store: S3Store, start, end, expected):
    store.put_bytes("r/x", b"0123456789", content_type="text/plain")
    with store.open_range("r/x", start, end) as fp:
        assert fp.read() == expected


def test_open_range_past_the_end_is_value_error(store: S3Store):
    store.put_bytes("r/x", b"0123456789", content_type="text/plain")
    with pytest.raises(ValueError):
        store.open_range("r/x", 10, None)
    with pytest.raises(ValueError):
        store.open_range("r/x", 5, 2)


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a//b", "a\x00b", "médïa/x", "a/./b"])
def test_every_method_refuses_unsafe_keys(store: S3Store, moto: MotoS3Server, key: str):
    # iter_keys and delete_prefix take prefixes, which S3 checks like keys.
    prefix_calls = [lambda: store.iter_keys(key), lambda: store.delete_prefix(key)]
    for call in key_calls(store, key) + prefix_calls:
        with pytest.raises(ValueError):
            call()
    assert moto.client().list_objects_v2(Bucket=store.bucket).get("KeyCount") == 0


# -- multipart and failures -----------------------------------------------------


def test_large_file_goes_up_in_parts(store: S3Store, moto: MotoS3Server):
    data = os.urandom(12 * MIB)
    store.put(KEY, io.BytesIO(data), content_type="video/mp4", metadata={"k": "v"}, size=len(data))
    info = store.stat(KEY)
    assert info.etag is not None and info.etag.endswith("-3"), info.etag  # 5 + 5 + 2 MiB
    assert (info.size, info.content_type, dict(info.metadata)) == (
        len(data),
        "video/mp4",
        {"k": "v"},
    )
    with store.open(KEY) as fp:
        assert hashlib.sha256(fp.read()).digest() == hashlib.sha256(data).digest()
    assert pending_uploads(moto, store.bucket) == []


def test_small_file_is_a_single_put(store: S3Store):
    store.put_bytes("a/small", b"x" * (4 * MIB), content_type="application/octet-stream")
    assert "-" not in (store.stat("a/small").etag or "")


def test_non_seekable_stream_with_short_reads_uploads_in_full_parts(store: S3Store):
    data = os.urandom(11 * MIB)
    store.put(KEY, Trickle(data, step=100_000), content_type="video/mp4", size=len(data))
    assert store.stat(KEY).etag.endswith("-3")
    with store.open(KEY) as fp:
        assert fp.read() == data


def test_failure_mid_multipart_upload_leaves_no_object_and_no_upload(
    store: S3Store, moto: MotoS3Server
):
    with pytest.raises(OSError, match="connection reset"):
        store.put(KEY, FailingReader(7 * MIB), content_type="video/mp4")
    assert store.exists(KEY) is False
    assert list(store.iter_keys()) == []
    assert pending_uploads(moto, store.bucket) == []  # the multipart upload was aborted


def test_failure_in_a_small_upload_leaves_no_object(store: S3Store):
    with pytest.raises(OSError):
        store.put(KEY, FailingReader(1000), content_type="image/jpeg")
    assert store.exists(KEY) is False


def test_failure_keeps_the_previous_object(store: S3Store):
    store.put_bytes(KEY, b"previous", content_type="image/jpeg")
    with pytest.raises(OSError):
        store.put(KEY, FailingReader(6 * MIB), content_type="image/jpeg")
    assert store.open(KEY).read() == b"previous"


@pytest.mark.parametrize(("declared", "actual"), [(6 * MIB, 6 * MIB - 1), (6 * MIB, 6 * MIB + 1)])
def test_size_mismatch_uploads_nothing(store: S3Store, moto: MotoS3Server, declared, actual):
    with pytest.raises(ValueError, match="declared"):
        store.put(KEY, Trickle(b"q" * actual, step=MIB), content_type="a/b", size=declared)
    with pytest.raises(ValueError, match="declared"):
        store.put(KEY, io.BytesIO(b"q" * actual), content_type="a/b", size=declared)
    assert store.exists(KEY) is False
    assert pending_uploads(moto, store.bucket) == []


def test_cleanup_partials_aborts_only_stale_uploads_under_the_prefix(
    store: S3Store, moto: MotoS3Server
):
    client = moto.client()
    mine = client.create_multipart_upload(Bucket=store.bucket, Key="tenant-a/media/x")
    client.create_multipart_upload(Bucket=store.bucket, Key="tenant-b/media/x")
    # moto dates every upload 2010-11-10, so "fresh" means younger than a century here.
    assert store.cleanup_partials(older_than_seconds=100 * 365 * 86400) == 0
    assert store.cleanup_partials(older_than_seconds=3600) == 1
    left = pending_uploads(moto, store.bucket)
    assert [u["Key"] for u in left] == ["tenant-b/media/x"]
    assert mine["UploadId"] not in {u["UploadId"] for u in left}


def test_concurrent_puts_share_one_client(store: S3Store):
    def work(n: int) -> None:
        for i in range(5):
            store.put_bytes(f"c/{n}/{i}", f"{n}-{i}".encode(), content_type="text/plain")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))  # raises what any thread raised
    assert len(list(store.iter_keys("c/"))) == 40
    assert store.open("c/7/4").read() == b"7-4"


# -- prefixes, listing, deleting --------------------------------------------------


def test_prefix_isolates_stores_in_one_bucket(bucket: str, s3_client):
    a = open_store(f"s3://{bucket}/tenant-a", client=s3_client)
    b = open_store(f"s3://{bucket}//tenant-b/", client=s3_client)
    whole = open_store(f"s3://{bucket}", client=s3_client)
    a.put_bytes("media/1", b"a", content_type="text/plain")
    b.put_bytes("media/1", b"b", content_type="text/plain")
    assert a.open("media/1").read() == b"a" and b.open("media/1").read() == b"b"
    assert list(a.iter_keys()) == ["media/1"]
    assert list(whole.iter_keys()) == ["tenant-a/media/1", "tenant-b/media/1"]
    assert a.delete_prefix("media/") == 1
    assert list(whole.iter_keys()) == ["tenant-b/media/1"]
    a.delete("media/1")
    assert b.exists("media/1")


def test_iter_keys_order_prefix_and_foreign_keys(store: S3Store, moto: MotoS3Server):
    keys = ["a-b", "a/x", "a.c", "a/y/z", "b", "a0", "A"]
    for key in keys:
        store.put_bytes(key, b"1", content_type="text/plain")
    # Objects written by something else that no key of ours can name are skipped.
    moto.client().put_object(Bucket=store.bucket, Key="tenant-a/has space", Body=b"x")
    moto.client().put_object(Bucket=store.bucket, Key="tenant-a/../escape", Body=b"x")
    assert list(store.iter_keys()) == sorted(keys)
    assert list(store.iter_keys("a/")) == ["a/x", "a/y/z"]
    assert list(store.iter_keys("a")) == sorted(k for k in keys if k.startswith("a"))


def test_delete_prefix_in_batches(store: S3Store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(s3_module, "DELETE_BATCH", 2)
    for i in range(5):
        store.put_bytes(f"media/AC1/{i}", b"1", content_type="text/plain")
    store.put_bytes("media/AC12/0", b"1", content_type="text/plain")
    store.put_bytes("media/AC2/0", b"1", content_type="text/plain")
    assert store.delete_prefix("media/AC1/") == 5
    assert list(store.iter_keys()) == ["media/AC12/0", "media/AC2/0"]
    assert store.delete_prefix("media/AC1") == 1
    with pytest.raises(ValueError, match="non-empty prefix"):
        store.delete_prefix("")


# -- presigned URLs -------------------------------------------------------------


def test_presigned_url_serves_the_bytes_and_content_type(store: S3Store):
    data = os.urandom(50_000)
    store.put_bytes(KEY, data, content_type="image/jpeg")
    url = store.presigned_url(KEY, expires=60)
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Type"] == "image/jpeg"
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["60"]
    assert urlsplit(url).path == f"/{store.bucket}/tenant-a/{KEY}"


def test_presigned_url_signs_response_overrides(store: S3Store):
    store.put_bytes(KEY, b"x", content_type="image/jpeg")
    url = store.presigned_url(KEY, filename='caf\u00e9 "1".jpg', content_type="image/jpeg")
    query = parse_qs(urlsplit(url).query)
    assert query["response-content-type"] == ["image/jpeg"]
    assert query["response-content-disposition"] == [
        "attachment; filename=\"caf_ _1_.jpg\"; filename*=UTF-8''caf%C3%A9%20%221%22.jpg"
    ]
    inline = parse_qs(urlsplit(store.presigned_url(KEY, disposition="inline")).query)
    assert inline["response-content-disposition"] == ["inline"]
    # moto ignores response-* overrides (AWS and MinIO apply them), so the
    # served headers are checked in the test above, the signed query here.
    assert requests.get(url, timeout=5).status_code == 200


def test_presigned_url_arguments_are_checked(store: S3Store):
    for bad in ({"expires": 0}, {"expires": 8 * 24 * 3600}, {"content_type": "bad\r\nx"}):
        with pytest.raises(ValueError):
            store.presigned_url(KEY, **bad)
    with pytest.raises(ValueError):
        store.presigned_url(KEY, disposition="form-data")


def test_presigned_urls_can_be_signed_for_a_public_endpoint(bucket: str, moto: MotoS3Server):
    # The service talks to MinIO at an internal name; Twilio and browsers use another.
    store = open_store(f"s3://{bucket}", public_endpoint_url="https://media.example.com", **FAST)
    url = store.presigned_url("a/b")
    assert url.startswith(f"https://media.example.com/{bucket}/a/b?")
    assert store.endpoint_url == moto.endpoint_url


# -- check and failures ------------------------------------------------------------


def test_check_passes_and_leaves_nothing_behind(store: S3Store, moto: MotoS3Server):
    store.check()
    store.check(write=False)
    assert moto.client().list_objects_v2(Bucket=store.bucket).get("KeyCount") == 0


def test_missing_bucket_is_a_clear_storage_error(s3_client):
    store = open_store("s3://no-such-bucket-here/p", client=s3_client)
    with pytest.raises(StorageError) as excinfo:
        store.check()
    message = str(excinfo.value)
    assert message.startswith("RECEIVER_STORAGE_URL: bucket 'no-such-bucket-here' does not exist")
    assert "create it" in message
    with pytest.raises(StorageError, match="does not exist"):
        store.put_bytes("a/b", b"1", content_type="text/plain")
    with pytest.raises(StorageError, match="does not exist"):
        store.open("a/b")
    with pytest.raises(StorageError, match="does not exist"):
        list(store.iter_keys())


def test_missing_credentials_are_a_clear_storage_error(bucket: str, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    store = open_store(f"s3://{bucket}", **FAST)
    with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID"):
        store.check()


def test_unreachable_endpoint_fails_fast_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = S3Store("some-bucket", endpoint_url=endpoint, **FAST)
    started = time.monotonic()
    with pytest.raises(StorageError) as excinfo:
        store.check()
    assert time.monotonic() - started < 3
    assert endpoint in str(excinfo.value) and "unreachable" in str(excinfo.value)


def test_storage_outage_then_recovery(moto_outage: MotoS3Server, monkeypatch):
    point_env_at(monkeypatch, moto_outage)
    bucket = moto_outage.new_bucket()
    store = open_store(f"s3://{bucket}/p", **FAST)
    store.put_bytes("before/outage", b"kept", content_type="text/plain")
    with moto_outage.outage():
        calls = [
            lambda: store.check(),
            lambda: store.put_bytes("during/outage", b"x", content_type="text/plain"),
            lambda: store.open("before/outage"),
            lambda: store.stat("before/outage"),
            lambda: store.exists("before/outage"),
            lambda: store.delete("before/outage"),
            lambda: list(store.iter_keys()),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StorageError, match="unreachable"):
                call()
            assert time.monotonic() - started < 3
    # Same port, same client: it works again, and nothing half-written appeared.
    store.check()
    assert store.open("before/outage").read() == b"kept"
    assert store.exists("during/outage") is False
    store.put_bytes("after/outage", b"ok", content_type="text/plain")
    assert list(store.iter_keys()) == ["after/outage", "before/outage"]


def test_hanging_server_times_out_as_storage_error(moto_outage: MotoS3Server, monkeypatch):
    point_env_at(monkeypatch, moto_outage)
    bucket = moto_outage.new_bucket()
    store = open_store(f"s3://{bucket}", max_attempts=1, connect_timeout=1, read_timeout=1)
    store.put_bytes("a/b", b"1", content_type="text/plain")
    moto_outage.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match="not answering"):
            store.stat("a/b")
        assert time.monotonic() - started < 4
    finally:
        moto_outage.resume()
    assert store.open("a/b").read() == b"1"


def test_server_restart_helper_keeps_state_on_the_same_port(moto_outage: MotoS3Server):
    bucket = moto_outage.new_bucket()
    moto_outage.client().put_object(
        Bucket=bucket, Key="k", Body=b"v", ContentType="image/png", Metadata={"a": "b"}
    )
    port = moto_outage.port
    moto_outage.restart()
    assert moto_outage.port == port
    head = moto_outage.client().head_object(Bucket=bucket, Key="k")
    assert (head["ContentType"], head["Metadata"]) == ("image/png", {"a": "b"})
    moto_outage.reset()
    assert moto_outage.client().list_buckets()["Buckets"] == []
