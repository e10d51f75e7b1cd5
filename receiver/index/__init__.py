"""The metadata index: SQLite by default, PostgreSQL in production (SQLAlchemy Core)."""

from receiver.index.store import MediaIndex

__all__ = ["MediaIndex"]
