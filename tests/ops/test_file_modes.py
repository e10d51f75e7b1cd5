"""Every file the service creates is private: the SQLite index and its -wal/-shm included."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import text

from receiver.index import MediaIndex
from tests.reliability.security import check_file_modes, private_mode_problems


def test_an_older_world_readable_index_is_made_private(tmp_path: Path) -> None:
    database = tmp_path / "receiver.db"
    database.touch(mode=0o644)
    os.chmod(database, 0o644)
    index = MediaIndex.open(f"sqlite:///{database}")
    with index.begin() as conn:  # a write creates -wal and -shm
        conn.execute(text("SELECT 1"))
    index.backlog()
    assert (database.stat().st_mode & 0o777) == 0o600
    for suffix in ("-wal", "-shm"):
        extra = Path(f"{database}{suffix}")
        if extra.exists():
            assert (extra.stat().st_mode & 0o777) == 0o600, suffix
    index.close()


def test_a_new_index_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        index = MediaIndex.open(f"sqlite:///{tmp_path / 'new.db'}")
        index.backlog()
    finally:
        os.umask(old)
    checked, problems = private_mode_problems(tmp_path)
    assert checked >= 2
    assert problems == [], problems
    index.close()


def test_data_directory_after_serve_worker_and_purge(tmp_path: Path) -> None:
    check = check_file_modes(tmp_path)
    assert check.attempts >= 20  # the index, its lock, media and thumbnails, three times
    assert check.accepted == 0, check.details
