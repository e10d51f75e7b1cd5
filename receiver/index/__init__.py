"""The metadata index: SQLite by default, PostgreSQL in production (SQLAlchemy Core)."""

from receiver.index.media_index import MediaIndex
from receiver.index.records import MediaItem, MessageRecord

__all__ = ["MediaIndex", "MediaItem", "MessageRecord"]
