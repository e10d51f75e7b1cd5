"""Database errors become `IndexUnavailable`, in one place.

Every read and write of the index goes through `translate_db_errors`, so the
web answers 503 and the workers retry later when the database is down,
whichever module's statement noticed it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ContextDecorator
from types import TracebackType
from typing import ParamSpec, TypeVar, overload

from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from receiver.errors import IndexUnavailable

P = ParamSpec("P")
R = TypeVar("R")


class DatabaseErrors(ContextDecorator):
    """The translation itself: a `with` block, or a decorator of functions."""

    def __init__(self, what: str, *, opening: bool) -> None:
        self.what = what
        self.opening = opening

    def __enter__(self) -> DatabaseErrors:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if self.opening and isinstance(exc, SQLAlchemyError):
            raise IndexUnavailable(f"{self.what}: {exc.__class__.__name__}: {exc}") from exc
        if isinstance(exc, OperationalError) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        ):
            raise IndexUnavailable(f"{self.what}: {exc.__class__.__name__}") from exc


@overload
def translate_db_errors(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def translate_db_errors(
    fn: None = None, /, *, what: str = ..., opening: bool = ...
) -> DatabaseErrors: ...


def translate_db_errors(
    fn: Callable[P, R] | None = None,
    /,
    *,
    what: str = "index unavailable",
    opening: bool = False,
) -> Callable[P, R] | DatabaseErrors:
    """Turn a lost database into IndexUnavailable (the web answers 503).

    ``@translate_db_errors`` on a function, or ``with translate_db_errors():``
    around statements. An OperationalError, or any driver error that
    invalidated the connection, means the database cannot be reached; other
    errors (an IntegrityError, a bad statement) are conflicts or bugs and pass
    unchanged. With `opening` (connecting and upgrading at start-up) every
    database error means the index cannot be opened, and the message keeps
    the database's own words.
    """
    translator = DatabaseErrors(what, opening=opening)
    return translator if fn is None else translator(fn)
