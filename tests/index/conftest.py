"""Index fixtures: every index test runs on SQLite and on the local PostgreSQL (`db_url`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from receiver.index import MediaIndex


@pytest.fixture
def index(db_url: str) -> Iterator[MediaIndex]:
    """A fresh index on each database."""
    ix = MediaIndex.open(db_url)
    yield ix
    ix.close()
