"""receiver.index.errors: a lost database becomes IndexUnavailable, other errors pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from receiver.errors import IndexUnavailable
from receiver.index import MediaIndex
from receiver.index.errors import translate_db_errors
from tests.index.rows import media_rows, message


def lost() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))


def test_as_a_decorator_it_keeps_the_function_and_translates_outages() -> None:
    @translate_db_errors
    def read(fail: bool) -> str:
        """Reads something."""
        if fail:
            raise lost()
        return "value"

    assert read(False) == "value"
    assert read.__doc__ == "Reads something."
    with pytest.raises(IndexUnavailable, match="index unavailable: OperationalError") as caught:
        read(True)
    assert isinstance(caught.value.__cause__, OperationalError)


def test_as_a_block_conflicts_pass_unchanged() -> None:
    conflict = IntegrityError("INSERT", {}, ValueError("duplicate key"))
    with pytest.raises(IntegrityError), translate_db_errors():
        raise conflict
    with pytest.raises(IndexUnavailable), translate_db_errors():
        raise lost()


def test_opening_turns_every_database_error_into_unavailable_with_its_words() -> None:
    conflict = IntegrityError("CREATE", {}, ValueError("permission denied for schema"))
    with (
        pytest.raises(
            IndexUnavailable, match="cannot open the index: IntegrityError: .*permission"
        ),
        translate_db_errors(what="cannot open the index", opening=True),
    ):
        raise conflict


def test_an_index_whose_database_is_gone_answers_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gone' / 'index.db'}"
    (tmp_path / "gone").mkdir()
    index = MediaIndex.open(url)
    index.record_message(message(1), media_rows(1))
    index.close()
    shutil.rmtree(tmp_path / "gone")  # the database file, its WAL and its writer lock
    try:
        with pytest.raises(IndexUnavailable):
            index.ping()
        with pytest.raises(IndexUnavailable):
            index.count_messages()
    finally:
        index.close()
