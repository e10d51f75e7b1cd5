"""`LocalStore`: objects as private files under one directory (the default store).

Layout: the object at key ``a/b/c.jpg`` is the file ``<root>/a/b/c.jpg``; its
content type, metadata and SHA-256 are a JSON document in the file's extended
attribute ``user.mms-receiver``, written and synced with the bytes. Where the
filesystem has no user extended attributes (or the document is too big for
one), the document is a sidecar file next to it, ``.c.jpg.meta.json``; reads
look for both. Copies of the store must keep extended attributes
(``cp -a``, ``rsync -aX``, ``tar --xattrs``); without them objects are served
as application/octet-stream, their bytes intact.

Every write goes to a temp file in the target's own directory (``.c.jpg.<random>.part``),
is fsynced, then renamed over the target, and the directory is fsynced, so
the object appears whole or not at all, even across a power cut. A process
killed mid-write leaves only the ``.part`` file: keys never start with ``.``,
so it is never listed or opened, and `cleanup_partials` removes it later.

Directories are created 0700 and files 0600: the store holds private media.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import secrets
import stat as stat_mode
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from receiver.errors import ConfigError, StorageError
from receiver.storage.base import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectStore,
    RawReader,
    check_delete_prefix,
    check_range,
    not_found,
)
from receiver.storage.keys import validate_key, validate_prefix

DIR_MODE = 0o700
FILE_MODE = 0o600
PART_SUFFIX = ".part"
META_SUFFIX = ".meta.json"
META_XATTR = "user.mms-receiver"
# setxattr errors meaning "not here": no xattrs on this filesystem (or not for
# this user), or a value too big for the inode; the sidecar is used instead.
_NO_XATTR = frozenset(
    {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.E2BIG, errno.ENOSPC, errno.ERANGE}
)
# How often `put` recreates its directory when a concurrent delete pruned it
# between mkdir and creating the temp file.
_MKDIR_ATTEMPTS = 5


class LocalStore(ObjectStore):
    """Objects stored as files under `root`, written atomically with fsync."""

    def __init__(self, root: str | os.PathLike[str], *, chunk_size: int = CHUNK_SIZE) -> None:
        """Use the absolute directory `root` (created on the first write or `check`)."""
        path = Path(root)
        if not path.is_absolute():
            raise ConfigError(
                "RECEIVER_STORAGE_URL: local storage needs an absolute directory, "
                f"got {str(root)!r}; use file:///absolute/path"
            )
        if chunk_size <= 0:
            raise ConfigError(f"chunk_size must be > 0 (got {chunk_size})")
        # Normalise without resolving symlinks: an operator may point the store
        # at a symlinked volume on purpose.
        self.root = Path(os.path.normpath(path))
        self._chunk_size = chunk_size
        # Cleared by the first write that finds no xattr support: one failed
        # syscall per process, then sidecars.
        self._xattrs = hasattr(os, "setxattr")

    @property
    def url(self) -> str:
        """The ``file://`` URL of the root directory."""
        return self.root.as_uri()

    # -- writing ------------------------------------------------------------

    def _store(
        self, key: str, fp: BinaryIO, content_type: str, meta: dict[str, str], size: int | None
    ) -> None:
        """Copy `fp` to a temp file, fsync it, then rename it into place; see ObjectStore.put."""
        target = self._path(key)
        fd, tmp = self._create_temp(target)
        sidecar_tmp: Path | None = None
        try:
            with os.fdopen(fd, "wb") as out:
                digest, written = self._copy(fp, out, key, size, tmp)
                document = json.dumps(
                    {
                        "content_type": content_type,
                        "metadata": meta,
                        "sha256": digest,
                        "size": written,
                    },
                    sort_keys=True,
                ).encode()
                # In the inode, the description is synced with the bytes by
                # the one fsync: no second file to write, sync and rename.
                described = self._set_xattr(out.fileno(), document)
                self._sync(out, tmp)
            if not described:
                # The sidecar goes in first: for a new key, the object must
                # never be visible without its content type.
                sidecar_tmp = self._write_temp_bytes(target, document)
                self._replace(sidecar_tmp, _sidecar_path(target))
                sidecar_tmp = None
            self._replace(tmp, target)
            if described:
                # A sidecar of an earlier version would be ignored (the
                # attribute wins) but is clutter.
                _unlink_quietly(_sidecar_path(target))
            try:
                _fsync_dir(target.parent)
            except OSError as exc:
                raise self._error("write", target.parent, exc) from exc
        except BaseException:
            # An ordinary failure leaves nothing behind; only a killed process
            # leaves a .part file for cleanup_partials.
            _unlink_quietly(tmp)
            if sidecar_tmp is not None:
                _unlink_quietly(sidecar_tmp)
            raise

    def _set_xattr(self, fd: int, document: bytes) -> bool:
        """Store the description as the file's extended attribute; False where that is
        impossible (the caller writes a sidecar)."""
        if not self._xattrs:
            return False
        try:
            os.setxattr(fd, META_XATTR, document)
        except OSError as exc:
            if exc.errno not in _NO_XATTR:
                raise self._error("write", self.root, exc) from exc
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                self._xattrs = False
            return False
        return True

    def delete(self, key: str) -> None:
        """Remove the object and its sidecar, then any directories left empty."""
        validate_key(key)
        target = self._path(key)
        try:
            os.unlink(target)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            # Nothing to delete; a sidecar left by a crash goes all the same.
            _unlink_quietly(_sidecar_path(target))
            return
        except OSError as exc:
            raise self._error("delete", target, exc) from exc
        _unlink_quietly(_sidecar_path(target))
        _fsync_dir(target.parent, missing_ok=True)
        self._prune(target.parent)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix`; see ObjectStore.delete_prefix."""
        check_delete_prefix(prefix)
        count = 0
        # Deleting while walking is safe: the walk lists each directory before
        # yielding from it, and pruning only removes directories left empty.
        for key in self.iter_keys(prefix):
            self.delete(key)
            count += 1
        return count

    # -- reading ------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """Open the object's file for reading; FileNotFoundError(key) if there is none."""
        validate_key(key)
        target = self._path(key)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise not_found(key) from None
        except OSError as exc:
            raise self._error("read", target, exc) from exc
        try:
            if not stat_mode.S_ISREG(os.fstat(fd).st_mode):
                raise not_found(key)
            return os.fdopen(fd, "rb", buffering=self._chunk_size)
        except BaseException:
            os.close(fd)
            raise

    def open_range(self, key: str, start: int, end: int | None) -> BinaryIO:
        """Open bytes `start`..`end` (inclusive) of the object; see ObjectStore.open_range."""
        check_range(start, end)
        fp = self.open(key)
        try:
            size = os.fstat(fp.fileno()).st_size
            if start >= size:
                raise ValueError(f"{key}: range start {start} is past the end ({size} bytes)")
            stop = size if end is None else min(end + 1, size)
            reader = _RangeReader(fp, start, stop - start)
        except BaseException:
            fp.close()
            raise
        return io.BufferedReader(reader, buffer_size=self._chunk_size)

    def stat(self, key: str) -> ObjectInfo:
        """Size from the file, the rest from its description; FileNotFoundError(key) if absent."""
        validate_key(key)
        target = self._path(key)
        try:
            st = os.stat(target)
        except (FileNotFoundError, NotADirectoryError):
            raise not_found(key) from None
        except OSError as exc:
            raise self._error("read", target, exc) from exc
        if not stat_mode.S_ISREG(st.st_mode):
            raise not_found(key)
        description = self._read_description(target)
        metadata = description.get("metadata")
        sha256 = description.get("sha256")
        # A sidecar for other bytes (a crash between the two renames of an
        # overwrite) must not vouch for this file's hash.
        if description.get("size") != st.st_size:
            sha256 = None
        return ObjectInfo(
            key=key,
            size=st.st_size,
            content_type=str(description.get("content_type") or DEFAULT_CONTENT_TYPE),
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
            etag=sha256 if isinstance(sha256, str) else None,
            sha256=sha256 if isinstance(sha256, str) else None,
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
        )

    def exists(self, key: str) -> bool:
        """Whether a complete object file is stored under `key`."""
        validate_key(key)
        try:
            return stat_mode.S_ISREG(os.stat(self._path(key)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise self._error("read", self._path(key), exc) from exc

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Yield stored keys starting with `prefix` in lexicographic order, as S3 lists them."""
        # Validate now, not on the first next(): a bad prefix is the caller's bug.
        validate_prefix(prefix)
        base, _, _ = prefix.rpartition("/")
        start = self.root / base if base else self.root
        return self._walk(start, f"{base}/" if base else "", prefix)

    def _presign(
        self, key: str, expires: int, filename: str | None, mime: str | None, disposition: str
    ) -> str | None:
        """Always None: local files are served by the application (see `path_for`)."""
        return None

    def path_for(self, key: str) -> Path:
        """The file holding the object, for zero-copy serving; FileNotFoundError(key) if absent."""
        validate_key(key)
        target = self._path(key)
        if not self.exists(key):
            raise not_found(key)
        return target

    # -- maintenance --------------------------------------------------------

    def check(self, *, write: bool = True) -> None:
        """Create the root if needed and prove it is a writable directory; else StorageError."""
        try:
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except FileExistsError:
            raise StorageError(
                f"RECEIVER_STORAGE_URL: {self.root} exists but is not a directory; "
                "remove it or choose another path"
            ) from None
        except OSError as exc:
            raise self._error("create", self.root, exc) from exc
        if not self.root.is_dir():
            raise StorageError(
                f"RECEIVER_STORAGE_URL: {self.root} is not a directory; "
                "remove it or choose another path"
            )
        if not write:
            if not os.access(self.root, os.R_OK | os.X_OK):
                raise StorageError(
                    f"RECEIVER_STORAGE_URL: {self.root} is not readable by uid {os.geteuid()}; "
                    "fix its ownership or permissions"
                )
            return
        probe = self.root / f".check-{secrets.token_hex(6)}{PART_SUFFIX}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            try:
                os.write(fd, b"ok")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            _unlink_quietly(probe)
            raise self._error("write", self.root, exc) from exc

    def cleanup_partials(self, older_than_seconds: float = 3600.0) -> int:
        """Remove stale ``.part`` files, orphaned sidecars and empty directories; return the count.

        Only debris whose modification time is older than `older_than_seconds`
        is touched, so a write in progress (which keeps its temp file's mtime
        fresh) is left alone.
        """
        if older_than_seconds < 0:
            raise ValueError("older_than_seconds must be >= 0")
        cutoff = time.time() - older_than_seconds
        removed = 0
        if not self.root.is_dir():
            return 0
        for dirpath, _dirnames, filenames in os.walk(self.root, topdown=False):
            directory = Path(dirpath)
            for name in filenames:
                if not name.startswith("."):
                    continue
                path = directory / name
                if name.endswith(PART_SUFFIX):
                    stale = True
                elif name.endswith(META_SUFFIX):
                    # A sidecar whose object never arrived (crash between renames).
                    data = directory / name[1 : -len(META_SUFFIX)]
                    stale = not data.exists()
                else:
                    continue
                if stale and _older_than(path, cutoff) and _unlink_quietly(path):
                    removed += 1
            if directory != self.root:
                # No age test: removing a child just refreshed the mtime. A put
                # racing with this recreates its directory (see _create_temp).
                with contextlib.suppress(OSError):  # not empty, or already gone
                    directory.rmdir()
        return removed

    # -- internals ----------------------------------------------------------

    def _path(self, key: str) -> Path:
        # `key` has passed validate_key: no "..", no leading "/", no empty or
        # dot segments, so the join cannot leave the root.
        return self.root.joinpath(*key.split("/"))

    def _create_temp(self, target: Path) -> tuple[int, Path]:
        for attempt in range(_MKDIR_ATTEMPTS + 1):
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}{PART_SUFFIX}")
            try:
                # Most keys land in a directory that exists already, so the
                # directories are made (and fsynced) only when the open says so.
                if attempt:
                    self._makedirs(target.parent)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            except (FileNotFoundError, NotADirectoryError):
                continue  # missing, or pruned by a concurrent delete: make it (again)
            except OSError as exc:
                raise self._error("write", tmp, exc) from exc
            # The mode passed to open() is filtered by the umask; make it exact.
            os.fchmod(fd, FILE_MODE)
            return fd, tmp
        raise StorageError(f"RECEIVER_STORAGE_URL: directory {target.parent} keeps disappearing")

    def _makedirs(self, directory: Path) -> None:
        """Create `directory` and its missing parents below the root, each 0700 and fsynced."""
        if not self.root.is_dir():
            try:
                self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            except OSError as exc:
                raise self._error("create", self.root, exc) from exc
        current = self.root
        for part in directory.relative_to(self.root).parts:
            current = current / part
            try:
                os.mkdir(current, DIR_MODE)
            except FileNotFoundError:
                raise  # the parent was pruned meanwhile; _create_temp tries again
            except FileExistsError:
                # One look at what is there: a concurrent delete may prune the
                # directory, and another put make it again, between two looks.
                try:
                    is_dir = stat_mode.S_ISDIR(os.stat(current).st_mode)
                except FileNotFoundError:
                    raise  # pruned meanwhile; _create_temp tries again
                if is_dir:
                    continue
                raise StorageError(
                    f"cannot store under {current}: an object already uses that name as its "
                    "key, so it cannot also be a key prefix"
                ) from None
            except OSError as exc:
                raise self._error("create", current, exc) from exc
            os.chmod(current, DIR_MODE)  # exact mode whatever the umask
            _fsync_dir(current.parent)

    def _copy(
        self, fp: BinaryIO, out: BinaryIO, key: str, size: int | None, tmp: Path
    ) -> tuple[str, int]:
        digest = hashlib.sha256()
        written = 0
        while True:
            # Errors raised by the caller's stream propagate unchanged.
            chunk = fp.read(self._chunk_size)
            if not chunk:
                break
            written += len(chunk)
            if size is not None and written > size:
                raise ValueError(f"{key}: stream is longer than the declared {size} bytes")
            digest.update(chunk)
            try:
                out.write(chunk)
            except OSError as exc:
                raise self._error("write", tmp, exc) from exc
        if size is not None and written != size:
            raise ValueError(f"{key}: stream ended after {written} of the declared {size} bytes")
        return digest.hexdigest(), written

    def _sync(self, out: BinaryIO, path: Path) -> None:
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as exc:
            raise self._error("write", path, exc) from exc

    def _write_temp_bytes(self, target: Path, document: bytes) -> Path:
        fd, tmp = self._create_temp(target)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(document)
                self._sync(out, tmp)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return tmp

    def _replace(self, source: Path, target: Path) -> None:
        try:
            os.replace(source, target)
        except IsADirectoryError:
            raise StorageError(
                f"cannot store {target}: other objects use its key as a prefix"
            ) from None
        except OSError as exc:
            raise self._error("write", target, exc) from exc

    def _read_description(self, target: Path) -> dict[str, Any]:
        """The object's description: its extended attribute, else its sidecar, else {}."""
        try:
            raw = os.getxattr(target, META_XATTR) if hasattr(os, "getxattr") else None
        except OSError:
            raw = None  # no such attribute, or no xattrs here
        try:
            if raw is None:
                raw = _sidecar_path(target).read_bytes()
            document = json.loads(raw)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # The bytes are intact even if their description is not; serve
            # them as octet-stream rather than failing.
            return {}
        return document if isinstance(document, dict) else {}

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[str]:
        try:
            with os.scandir(directory) as scan:
                entries = list(scan)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._error("list", directory, exc) from exc
        items: list[tuple[str, bool]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue  # temp files, sidecars and probes are never objects
            # Symlinks are not followed: they could lead out of the store.
            if entry.is_dir(follow_symlinks=False):
                items.append((f"{rel}{entry.name}/", True))
            elif entry.is_file(follow_symlinks=False):
                items.append((f"{rel}{entry.name}", False))
        # Sorting directories as "name/" yields full keys in byte order, the
        # order S3 lists them in ("a-b" before "a/x").
        items.sort()
        for path, is_dir in items:
            if not (path.startswith(prefix) or (is_dir and prefix.startswith(path))):
                continue
            if is_dir:
                yield from self._walk(directory / path[len(rel) : -1], path, prefix)
                continue
            try:
                validate_key(path)
            except ValueError:
                continue  # a file put here by hand that no key could name
            yield path

    def _prune(self, directory: Path) -> None:
        # Remove directories emptied by a delete, so a purge of old messages
        # does not leave one empty directory per message behind.
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            _fsync_dir(directory.parent, missing_ok=True)
            directory = directory.parent

    def _error(self, action: str, path: Path, exc: OSError) -> StorageError:
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.EACCES, errno.EPERM):
            fix = f"make {self.root} writable by uid {os.geteuid()} (owner and mode 0700)"
        elif exc.errno == errno.ENOSPC:
            fix = "free disk space or move the store to a larger volume"
        elif exc.errno == errno.EROFS:
            fix = "the filesystem is mounted read-only; mount it read-write or choose another path"
        elif exc.errno == errno.ENOTDIR:
            fix = "a path component is a file, not a directory; choose another path"
        else:
            fix = "check the disk and the path"
        return StorageError(f"RECEIVER_STORAGE_URL: cannot {action} {path} ({reason}); {fix}")


class _RangeReader(RawReader):
    """A read-only window of `length` bytes starting at `offset` of an open file."""

    def __init__(self, fp: BinaryIO, offset: int, length: int) -> None:
        """Take ownership of `fp`; reads use pread so no shared file position is involved."""
        super().__init__()
        self._fp = fp
        self._fd = fp.fileno()
        self._offset = offset
        self._remaining = length

    def _read(self, n: int) -> bytes:
        want = min(n, self._remaining)
        if want <= 0:
            return b""
        data = os.pread(self._fd, want, self._offset)
        self._offset += len(data)
        self._remaining -= len(data)
        return data

    def _release(self) -> None:
        self._fp.close()


def _sidecar_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{META_SUFFIX}")


def _fsync_dir(directory: Path, *, missing_ok: bool = False) -> None:
    # A rename or new entry is durable only once its directory is synced.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        if missing_ok:
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> bool:
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def _older_than(path: Path, cutoff: float) -> bool:
    try:
        return os.stat(path, follow_symlinks=False).st_mtime < cutoff
    except OSError:
        return False
