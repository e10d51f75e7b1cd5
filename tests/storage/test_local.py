"""LocalStore: atomic writes, private permissions, safe keys, ranges, metadata, listing.

Also covers what every store shares (`open_store`, argument checks,
Content-Disposition) since those need no server.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from receiver.errors import ConfigError, StorageError
from receiver.storage import LocalStore, ObjectStore, content_disposition, open_store
from receiver.storage.keys import media_key
from receiver.storage.local import META_XATTR
from tests.support.stores import FailingReader, Trickle, key_calls

ROOT_DIR = Path(__file__).resolve().parents[2]
KEY = media_key("AC" + "1" * 32, "MM" + "2" * 32, 0, "ME" + "3" * 32, "jpg")


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "media", chunk_size=64 * 1024)


def refuse_xattrs(monkeypatch: pytest.MonkeyPatch, code: int = errno.ENOTSUP) -> list[str]:
    """Make setxattr fail as it does on a filesystem without user xattrs; returns
    the names it was asked to set."""
    asked: list[str] = []

    def setxattr(path: object, name: str, value: bytes, *args: object) -> None:
        asked.append(name)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "setxattr", setxattr)
    return asked


@pytest.fixture
def sidecar_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStore:
    """A store on a filesystem without extended attributes."""
    refuse_xattrs(monkeypatch)
    return LocalStore(tmp_path / "media", chunk_size=64 * 1024)


def files_under(root: Path) -> list[str]:
    """Every file below `root`, relative, sorted (including hidden ones)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- round trip ---------------------------------------------------------------


def test_put_open_stat_round_trip(store: LocalStore):
    data = os.urandom(300_000)
    store.put(
        KEY,
        io.BytesIO(data),
        content_type="image/jpeg",
        metadata={"sha256": "abc", "media-sid": "ME1", "declared_type": "image/png"},
        size=len(data),
    )
    assert store.exists(KEY)
    with store.open(KEY) as fp:
        assert fp.read() == data
    info = store.stat(KEY)
    assert info.key == KEY
    assert info.size == len(data)
    assert info.content_type == "image/jpeg"
    assert dict(info.metadata) == {
        "sha256": "abc",
        "media-sid": "ME1",
        "declared_type": "image/png",
    }
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.etag == info.sha256
    assert info.last_modified is not None and info.last_modified.tzinfo is not None
    assert store.path_for(KEY).read_bytes() == data
    assert store.presigned_url(KEY) is None
    assert list(store.iter_keys()) == [KEY]


def test_put_bytes_and_streams_without_size(store: LocalStore):
    store.put_bytes("a/empty.bin", b"", content_type="application/octet-stream")
    assert store.stat("a/empty.bin").size == 0
    data = os.urandom(200_000)
    store.put("a/trickle.bin", Trickle(data), content_type="application/octet-stream")
    with store.open("a/trickle.bin") as fp:
        assert fp.read() == data


def test_put_reads_from_the_current_position(store: LocalStore):
    fp = io.BytesIO(b"HEADERbody")
    fp.seek(6)
    store.put("a/b", fp, content_type="text/plain", size=4)
    assert store.open("a/b").read() == b"body"


def test_overwrite_replaces_atomically_and_open_readers_keep_old_bytes(store: LocalStore):
    store.put_bytes("x/y", b"old" * 1000, content_type="text/plain", metadata={"v": "1"})
    reader = store.open("x/y")
    store.put_bytes("x/y", b"new", content_type="text/csv", metadata={"v": "2"})
    assert reader.read() == b"old" * 1000  # the rename left the open file intact
    reader.close()
    info = store.stat("x/y")
    assert (info.size, info.content_type, dict(info.metadata)) == (3, "text/csv", {"v": "2"})
    assert store.open("x/y").read() == b"new"


def test_missing_objects_raise_file_not_found_with_the_key(store: LocalStore):
    for call in (store.open, store.stat, store.path_for, lambda k: store.open_range(k, 0, None)):
        with pytest.raises(FileNotFoundError) as excinfo:
            call("no/such/key")
        assert excinfo.value.args == ("no/such/key",)
        assert excinfo.value.filename == "no/such/key"
    assert store.exists("no/such/key") is False


def test_directories_are_not_objects(store: LocalStore):
    store.put_bytes("a/b/c", b"1", content_type="text/plain")
    assert store.exists("a/b") is False
    with pytest.raises(FileNotFoundError):
        store.open("a/b")
    with pytest.raises(FileNotFoundError):
        store.stat("a")


def test_a_key_cannot_be_both_an_object_and_a_prefix(store: LocalStore):
    store.put_bytes("a/b", b"1", content_type="text/plain")
    with pytest.raises(StorageError, match="key"):
        store.put_bytes("a/b/c", b"2", content_type="text/plain")
    store.put_bytes("d/e/f", b"1", content_type="text/plain")
    with pytest.raises(StorageError, match="prefix"):
        store.put_bytes("d/e", b"2", content_type="text/plain")
    assert store.open("d/e/f").read() == b"1"


def test_the_description_lives_in_an_extended_attribute_not_a_second_file(store: LocalStore):
    store.put_bytes("a/b", b"data", content_type="text/plain", metadata={"k": "v"})
    assert files_under(store.root) == ["a/b"]
    document = json.loads(os.getxattr(store.root / "a" / "b", META_XATTR))
    assert document == {
        "content_type": "text/plain",
        "metadata": {"k": "v"},
        "sha256": hashlib.sha256(b"data").hexdigest(),
        "size": 4,
    }
    info = store.stat("a/b")
    assert (info.content_type, dict(info.metadata)) == ("text/plain", {"k": "v"})


def test_unreadable_description_is_served_as_octet_stream(store: LocalStore):
    store.put_bytes("a/b", b"data", content_type="text/plain", metadata={"k": "v"})
    os.setxattr(store.root / "a" / "b", META_XATTR, b"{not json")
    info = store.stat("a/b")
    assert (info.content_type, dict(info.metadata), info.sha256) == (
        "application/octet-stream",
        {},
        None,
    )
    assert store.open("a/b").read() == b"data"


def test_without_xattrs_the_description_is_a_sidecar_and_setxattr_is_tried_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    asked = refuse_xattrs(monkeypatch)
    store = LocalStore(tmp_path / "media")
    store.put_bytes("a/b", b"data", content_type="text/plain", metadata={"k": "v"})
    store.put_bytes("a/c", b"more", content_type="image/png")
    assert asked == [META_XATTR]
    assert files_under(store.root) == ["a/.b.meta.json", "a/.c.meta.json", "a/b", "a/c"]
    info = store.stat("a/b")
    assert (info.content_type, dict(info.metadata), info.sha256) == (
        "text/plain",
        {"k": "v"},
        hashlib.sha256(b"data").hexdigest(),
    )
    assert store.stat("a/c").content_type == "image/png"


def test_a_description_too_big_for_an_attribute_goes_to_a_sidecar_for_that_object_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    store = LocalStore(tmp_path / "media")
    with monkeypatch.context() as patch:
        refuse_xattrs(patch, errno.E2BIG)
        store.put_bytes("a/big", b"1", content_type="text/plain", metadata={"k": "v" * 1000})
    store.put_bytes("a/small", b"2", content_type="text/plain")
    assert files_under(store.root) == ["a/.big.meta.json", "a/big", "a/small"]
    assert dict(store.stat("a/big").metadata) == {"k": "v" * 1000}


def test_rewriting_an_object_with_a_sidecar_moves_its_description_into_the_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with monkeypatch.context() as patch:
        refuse_xattrs(patch)
        LocalStore(tmp_path / "media").put_bytes("a/b", b"old", content_type="text/plain")
    store = LocalStore(tmp_path / "media")
    assert store.stat("a/b").content_type == "text/plain"
    store.put_bytes("a/b", b"new bytes", content_type="image/png")
    assert files_under(store.root) == ["a/b"]
    info = store.stat("a/b")
    assert (info.content_type, info.size, info.sha256) == (
        "image/png",
        9,
        hashlib.sha256(b"new bytes").hexdigest(),
    )


def test_unreadable_sidecar_is_served_as_octet_stream(sidecar_store: LocalStore):
    sidecar_store.put_bytes("a/b", b"data", content_type="text/plain", metadata={"k": "v"})
    sidecar = sidecar_store.root / "a" / ".b.meta.json"
    sidecar.write_text("{not json")
    info = sidecar_store.stat("a/b")
    assert (info.content_type, dict(info.metadata), info.sha256) == (
        "application/octet-stream",
        {},
        None,
    )


# -- atomicity ----------------------------------------------------------------


def test_failure_mid_copy_leaves_nothing_visible_and_no_debris(store: LocalStore):
    store.put_bytes("keep/me", b"1", content_type="text/plain")
    with pytest.raises(OSError, match="connection reset"):
        store.put(KEY, FailingReader(150_000, step=10_000), content_type="image/jpeg")
    assert store.exists(KEY) is False
    with pytest.raises(FileNotFoundError):
        store.open(KEY)
    assert list(store.iter_keys()) == ["keep/me"]
    # An ordinary failure cleans up after itself; only a crash leaves a .part.
    assert not [name for name in files_under(store.root) if name.endswith(".part")]


def test_failure_mid_copy_keeps_the_previous_object(store: LocalStore):
    store.put_bytes(KEY, b"previous", content_type="image/jpeg", metadata={"v": "1"})
    with pytest.raises(OSError):
        store.put(
            KEY, FailingReader(100_000, step=10_000), content_type="image/png", metadata={"v": "2"}
        )
    assert store.open(KEY).read() == b"previous"
    assert store.stat(KEY).content_type == "image/jpeg"
    assert dict(store.stat(KEY).metadata) == {"v": "1"}


@pytest.mark.parametrize(("declared", "actual"), [(10, 9), (10, 11), (0, 1)])
def test_size_mismatch_stores_nothing(store: LocalStore, declared: int, actual: int):
    with pytest.raises(ValueError, match="declared"):
        store.put("a/b", io.BytesIO(b"x" * actual), content_type="text/plain", size=declared)
    assert store.exists("a/b") is False
    assert not [name for name in files_under(store.root) if name.endswith(".part")]


def test_killed_writer_leaves_only_an_unlisted_part_file_that_cleanup_removes(tmp_path: Path):
    root = tmp_path / "media"
    writer = textwrap.dedent(
        f"""
        import sys
        from receiver.storage import LocalStore
        store = LocalStore({str(root)!r}, chunk_size=4096)
        store.put_bytes("keep/me", b"1", content_type="text/plain")
        print("ready", flush=True)
        store.put({KEY!r}, sys.stdin.buffer.raw, content_type="image/jpeg")
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer],
        cwd=ROOT_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT_DIR)},
    )
    try:
        assert proc.stdout.readline().strip() == b"ready"
        proc.stdin.write(b"y" * 100_000)
        proc.stdin.flush()
        deadline = time.monotonic() + 10
        parts: list[Path] = []
        while time.monotonic() < deadline:
            parts = [p for p in root.rglob("*.part") if p.stat().st_size > 0]
            if parts:
                break
            time.sleep(0.01)
        assert parts, "the writer never started its temp file"
        proc.send_signal(signal.SIGKILL)  # a crash: no finally, no cleanup
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = LocalStore(root)
    part = parts[0]
    assert part.exists() and part.name.startswith(".") and part.name.endswith(".part")
    assert list(store.iter_keys()) == ["keep/me"]
    assert store.exists(KEY) is False
    assert store.cleanup_partials(older_than_seconds=3600) == 0  # fresh debris is left alone
    assert part.exists()
    assert store.cleanup_partials(older_than_seconds=0) == 1
    assert not part.exists()
    assert files_under(root) == ["keep/me"]


def test_cleanup_removes_orphan_sidecars_and_empty_directories(sidecar_store: LocalStore):
    store = sidecar_store
    store.put_bytes("a/b/live", b"1", content_type="text/plain")
    orphan = store.root / "a" / "b" / ".gone.meta.json"
    orphan.write_text("{}")
    (store.root / "empty" / "nested").mkdir(parents=True)
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    assert store.cleanup_partials(older_than_seconds=3600) == 1
    assert not orphan.exists()
    assert not (store.root / "empty" / "nested").exists()
    assert store.open("a/b/live").read() == b"1"
    assert (store.root / "a" / "b" / ".live.meta.json").exists()


def test_readers_never_see_a_partial_object_during_a_slow_write(store: LocalStore):
    data = os.urandom(64 * 1024 * 8)
    gate = threading.Event()

    class Slow(io.RawIOBase):
        pos = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            gate.set()
            time.sleep(0.005)
            chunk = data[self.pos : self.pos + min(len(buffer), 64 * 1024)]
            buffer[: len(chunk)] = chunk
            self.pos += len(chunk)
            return len(chunk)

    writer = threading.Thread(target=store.put, args=(KEY, Slow()), kwargs={"content_type": "a/b"})
    writer.start()
    gate.wait(5)
    seen = set()
    while writer.is_alive():
        if store.exists(KEY):
            seen.add(store.stat(KEY).size)
        assert list(store.iter_keys()) in ([], [KEY])
    writer.join()
    assert seen <= {len(data)}
    assert store.open(KEY).read() == data


# -- permissions --------------------------------------------------------------


@pytest.mark.parametrize("xattrs", [True, False], ids=["xattr", "sidecar"])
def test_directories_are_0700_and_files_0600_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xattrs: bool
):
    if not xattrs:
        refuse_xattrs(monkeypatch)
    store = LocalStore(tmp_path / "media")
    old = os.umask(0)
    try:
        store.put_bytes(KEY, b"private", content_type="image/jpeg")
    finally:
        os.umask(old)
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(files) == (1 if xattrs else 2)  # the object, and its sidecar without xattrs
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    directory = store.path_for(KEY).parent
    while directory != store.root.parent:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        directory = directory.parent


def test_check_creates_a_private_root(tmp_path: Path):
    store = LocalStore(tmp_path / "a" / "media")
    store.check()
    assert store.root.is_dir()
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert os.listdir(store.root) == []  # the probe is gone


def test_check_reports_a_file_in_the_way(tmp_path: Path):
    (tmp_path / "media").write_text("oops")
    with pytest.raises(StorageError, match=r"RECEIVER_STORAGE_URL: .*media.* not a directory"):
        LocalStore(tmp_path / "media").check()
    with pytest.raises(StorageError, match="not a directory"):
        LocalStore(tmp_path / "media" / "sub").check()


def test_check_reports_a_directory_it_cannot_write(tmp_path: Path):
    # A world-traversable parent, so only the store directory's own mode matters.
    parent = Path(tempfile.mkdtemp(prefix="ro-store-"))
    try:
        parent.chmod(0o755)
        root = parent / "media"
        root.mkdir(mode=0o555)
        root.chmod(0o555)
        status, message = _as_unprivileged(lambda: LocalStore(root).check())
        assert status == "StorageError", message
        assert "RECEIVER_STORAGE_URL" in message and "writable" in message, message
        status, message = _as_unprivileged(lambda: LocalStore(root).check(write=False))
        assert status == "ok", message
    finally:
        (parent / "media").chmod(0o700)
        (parent / "media").rmdir()
        parent.rmdir()


def _as_unprivileged(action) -> tuple[str, str]:
    """Run `action` as a user without write access: in-process, or in a child as 'nobody' under root."""
    if os.geteuid() != 0:
        try:
            action()
        except StorageError as exc:
            return "StorageError", str(exc)
        return "ok", ""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop root (and with it CAP_DAC_OVERRIDE), then try
        os.close(read_end)
        result = "ok\n"
        try:
            os.setgid(65534)
            os.setuid(65534)
            action()
        except StorageError as exc:
            result = f"StorageError\n{exc}"
        except BaseException as exc:
            result = f"{type(exc).__name__}\n{exc}"
        os.write(write_end, result.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read().decode()
    os.waitpid(pid, 0)
    status, _, message = output.partition("\n")
    return status, message


# -- keys ---------------------------------------------------------------------

BAD_KEYS = [
    "../x",
    "../../etc/passwd",
    "/etc/passwd",
    "a//b",
    "a/../../b",
    "a\x00b",
    "médïa/x",
    "a/\u2024\u2024/b",
    "a/.x.meta.json",
    ".part",
    "a/",
    "",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_every_method_refuses_unsafe_keys(tmp_path: Path, key: str):
    store = LocalStore(tmp_path / "media")
    for call in [*key_calls(store, key), lambda: store.path_for(key)]:
        with pytest.raises(ValueError):
            call()
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("prefix", ["../", "/etc", "a//", "\x00", "é"])
def test_listing_and_bulk_delete_refuse_unsafe_prefixes(store: LocalStore, prefix: str):
    with pytest.raises(ValueError):
        store.iter_keys(prefix)
    with pytest.raises(ValueError):
        store.delete_prefix(prefix)


def test_symlinks_are_never_followed_out_of_the_store(store: LocalStore, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    store.put_bytes("a/real", b"1", content_type="text/plain")
    (store.root / "a" / "link").symlink_to(secret)
    (store.root / "dirlink").symlink_to(tmp_path)
    assert list(store.iter_keys()) == ["a/real"]


# -- ranges -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 0, b"0"),
        (0, 9, b"0123456789"),
        (3, 5, b"345"),
        (7, None, b"789"),
        (8, 1000, b"89"),
        (9, 9, b"9"),
    ],
)
def test_open_range(store: LocalStore, start, end, expected):
    store.put_bytes("r/x", b"0123456789", content_type="text/plain")
    with store.open_range("r/x", start, end) as fp:
        assert fp.read() == expected
        assert fp.read() == b""


def test_open_range_reads_large_windows_in_pieces(store: LocalStore):
    data = os.urandom(1_000_000)
    store.put_bytes("r/big", data, content_type="application/octet-stream")
    with store.open_range("r/big", 123_456, 876_543) as fp:
        pieces = []
        while chunk := fp.read(65_536):
            pieces.append(chunk)
    assert b"".join(pieces) == data[123_456:876_544]


@pytest.mark.parametrize(("start", "end"), [(10, None), (10, 12), (-1, 3), (5, 4), (1.5, None)])
def test_open_range_refuses_unsatisfiable_or_malformed_ranges(store: LocalStore, start, end):
    store.put_bytes("r/x", b"0123456789", content_type="text/plain")
    with pytest.raises(ValueError):
        store.open_range("r/x", start, end)


def test_open_range_on_an_empty_object_is_unsatisfiable(store: LocalStore):
    store.put_bytes("r/empty", b"", content_type="text/plain")
    with pytest.raises(ValueError):
        store.open_range("r/empty", 0, None)


# -- metadata and content type ------------------------------------------------


def test_metadata_is_copied_not_mutated(store: LocalStore):
    metadata = {"sha256": "f" * 64}
    store.put_bytes("m/x", b"1", content_type="text/plain", metadata=metadata)
    assert metadata == {"sha256": "f" * 64}
    assert store.stat("m/x").sha256 != metadata["sha256"]  # the store's own hash wins
    assert store.stat("m/x").metadata["sha256"] == "f" * 64


@pytest.mark.parametrize(
    "metadata",
    [
        {"Upper": "x"},
        {"with space": "x"},
        {"": "x"},
        {"k": "caf\u00e9"},
        {"k": "line\nbreak"},
        {"k": 3},
        {"k": "x" * 3000},
    ],
)
def test_bad_metadata_is_refused(store: LocalStore, metadata):
    with pytest.raises(ValueError, match="metadata"):
        store.put_bytes("m/x", b"1", content_type="text/plain", metadata=metadata)
    assert store.exists("m/x") is False


@pytest.mark.parametrize("content_type", ["image/jpeg", "text/plain; charset=utf-8", "text/vcard"])
def test_good_content_types(store: LocalStore, content_type):
    store.put_bytes("c/x", b"1", content_type=content_type)
    assert store.stat("c/x").content_type == content_type


@pytest.mark.parametrize(
    "content_type", ["", "jpeg", "image/", "/jpeg", "text/plain\r\nX-Evil: 1", "image/jpeg\x00"]
)
def test_bad_content_types(store: LocalStore, content_type):
    with pytest.raises(ValueError, match="content type"):
        store.put_bytes("c/x", b"1", content_type=content_type)


# -- listing and deleting -----------------------------------------------------


def test_iter_keys_lists_in_byte_order_and_hides_internal_files(store: LocalStore):
    keys = ["a-b", "a/x", "a.c", "a/y/z", "b", "a0", "A", "a/x-1", "a/x/1"]
    for key in keys:
        if key == "a/x/1":
            continue  # "a/x" is an object, so it cannot also be a prefix
        store.put_bytes(key, b"1", content_type="text/plain")
    (store.root / "a" / ".stray.part").write_text("debris")
    (store.root / "a" / "name with space").write_text("put here by hand")
    expected = sorted(k for k in keys if k != "a/x/1")
    assert list(store.iter_keys()) == expected
    assert list(store.iter_keys("a/")) == ["a/x", "a/x-1", "a/y/z"]
    assert list(store.iter_keys("a/x")) == ["a/x", "a/x-1"]
    assert list(store.iter_keys("a")) == [k for k in expected if k.startswith("a")]
    assert list(store.iter_keys("zzz")) == []
    assert list(LocalStore(store.root / "missing").iter_keys()) == []


def test_delete_is_idempotent_and_prunes_empty_directories(store: LocalStore):
    store.put_bytes(KEY, b"1", content_type="image/jpeg")
    store.put_bytes("media/other", b"1", content_type="image/jpeg")
    store.delete(KEY)
    store.delete(KEY)
    store.delete("never/existed")
    assert store.exists(KEY) is False
    assert files_under(store.root) == ["media/other"]
    assert sorted(p.name for p in (store.root / "media").iterdir()) == ["other"]


def test_delete_prefix_is_a_string_prefix_and_counts(store: LocalStore):
    for key in [
        "media/AC1/m1/0",
        "media/AC1/m1/1",
        "media/AC12/m/0",
        "media/AC2/m/0",
        "derived/AC1/x",
    ]:
        store.put_bytes(key, b"1", content_type="text/plain")
    assert store.delete_prefix("media/AC1/") == 2
    assert list(store.iter_keys()) == ["derived/AC1/x", "media/AC12/m/0", "media/AC2/m/0"]
    assert store.delete_prefix("media/AC1") == 1
    assert store.delete_prefix("media/AC1") == 0
    assert list(store.iter_keys()) == ["derived/AC1/x", "media/AC2/m/0"]
    with pytest.raises(ValueError, match="non-empty prefix"):
        store.delete_prefix("")


def test_concurrent_puts_and_deletes_in_one_directory(store: LocalStore):
    def churn(n: int) -> None:
        for i in range(40):
            key = f"media/AC1/MM1/{n}-{i}"
            store.put_bytes(key, b"x" * 100, content_type="text/plain")
            store.delete(key)  # may prune the directory another thread is about to use

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(churn, range(6)))  # raises what any thread raised
    assert list(store.iter_keys()) == []


# -- open_store and shared helpers ---------------------------------------------


def test_open_store_file_urls(tmp_path: Path):
    store = open_store((tmp_path / "my media").as_uri())
    assert isinstance(store, LocalStore) and isinstance(store, ObjectStore)
    assert store.root == tmp_path / "my media"
    assert store.url == (tmp_path / "my media").as_uri()
    assert repr(store) == f"LocalStore({store.url!r})"
    assert isinstance(open_store(f"file://localhost{tmp_path}"), LocalStore)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "file://relative/path",
        "file:relative",
        "/abs/path",
        "ftp://host/x",
        "s3://",
        "s3://Bad_Bucket/x",
        "s3://ab/x",
        "s3://key:secret@bucket/x",
        "s3://bucket/x?region=eu-west-1",
        "s3://bucket/../x",
    ],
)
def test_open_store_refuses_bad_urls_with_the_variable_name(url: str):
    with pytest.raises(ConfigError, match="RECEIVER_STORAGE_URL"):
        open_store(url)


def test_relative_root_is_refused():
    with pytest.raises(ConfigError, match="absolute"):
        LocalStore("data/media")


@pytest.mark.parametrize(
    ("filename", "disposition", "expected"),
    [
        ("photo.jpg", "attachment", 'attachment; filename="photo.jpg"'),
        ("photo.jpg", "inline", 'inline; filename="photo.jpg"'),
        (
            'a"b\r\nX-Evil: 1.jpg',
            "attachment",
            "attachment; filename=\"a_bX-Evil: 1.jpg\"; filename*=UTF-8''a%22bX-Evil%3A%201.jpg",
        ),
        (
            "caf\u00e9.png",
            "attachment",
            "attachment; filename=\"caf_.png\"; filename*=UTF-8''caf%C3%A9.png",
        ),
        ("../../etc/passwd", "attachment", 'attachment; filename=".._.._etc_passwd"'),
        ("", "attachment", 'attachment; filename="download"'),
    ],
)
def test_content_disposition_is_header_safe(filename, disposition, expected):
    value = content_disposition(filename, disposition)
    assert value == expected
    assert "\r" not in value and "\n" not in value


def test_content_disposition_refuses_other_types():
    with pytest.raises(ValueError):
        content_disposition("x", "form-data")
