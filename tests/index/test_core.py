"""receiver.index.core: the engine, write transactions and ping every part shares."""

from __future__ import annotations

from sqlalchemy import select

from receiver.index import MediaIndex
from receiver.index.core import IndexCore
from receiver.index.schema import messages
from tests.index.rows import media_rows, message, sid


def test_parts_share_one_core(index: MediaIndex) -> None:
    # One engine, one writer lock, one group commit for messages, queue and opt-outs.
    assert isinstance(index, IndexCore)
    assert index.dialect == index.engine.dialect.name
    index.ping()


def test_begin_commits_and_rolls_back(index: MediaIndex) -> None:
    index.record_message(message(1), media_rows(0))
    try:
        with index.begin() as conn:
            conn.execute(messages.update().values(body="changed"))
            raise RuntimeError("abandon the transaction")
    except RuntimeError:
        pass
    got = index.get_message(sid(1))
    assert got is not None and got.body == "message 1"
    with index.begin() as conn:
        conn.execute(messages.update().values(body="changed"))
    with index.engine.connect() as conn:
        assert conn.execute(select(messages.c.body)).scalar_one() == "changed"


def test_a_part_opens_alone(db_url: str) -> None:
    core = IndexCore.open(db_url)
    try:
        core.ping()
    finally:
        core.close()
