"""Perceptual hashes of stored images and "which images are within distance N of this one".

The hash is split into `HASH_BANDS` bands (`BAND_BITS`) with an index each. Two
hashes at most N bits apart have, by the pigeonhole principle, one band at
most N // HASH_BANDS bits apart, so the candidates are the rows whose band
equals one of the few values that close to ours (multi-probe), and each
candidate is then checked by its exact distance: docs/design.md
("Near-duplicate photos").
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import lru_cache

from sqlalchemy import ColumnElement, Integer, any_, bindparam, or_, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.records import SimilarMedia
from receiver.index.schema import HASH_BANDS, media, media_hashes, messages
from receiver.media.phash import HASH_BITS, distance

__all__ = ["DEFAULT_MAX_DISTANCE", "MAX_DISTANCE", "Similar", "band_values", "probe_values"]

#: "Near-duplicate" unless told otherwise: 8 of 64 bits.
DEFAULT_MAX_DISTANCE = 8
#: The widest search: 11 // 3 = 3 bits in some band, about 1,800 probes of each band.
MAX_DISTANCE = 11
#: At most this many similar images are listed, nearest first.
MAX_SIMILAR = 100

#: Bits per band, most significant first (22 + 21 + 21 = 64).
BAND_BITS = tuple(
    HASH_BITS // HASH_BANDS + (1 if i < HASH_BITS % HASH_BANDS else 0) for i in range(HASH_BANDS)
)


def band_values(value: int) -> list[int]:
    """The bands of an unsigned 64-bit hash, most significant first."""
    out = []
    shift = HASH_BITS
    for bits in BAND_BITS:
        shift -= bits
        out.append((value >> shift) & ((1 << bits) - 1))
    return out


@lru_cache(maxsize=16)
def _flip_masks(bits: int, radius: int) -> tuple[int, ...]:
    """Every `bits`-wide mask with at most `radius` bits set."""
    return tuple(
        sum(1 << bit for bit in chosen)
        for r in range(radius + 1)
        for chosen in itertools.combinations(range(bits), r)
    )


def probe_values(band: int, max_distance: int, *, bits: int = BAND_BITS[0]) -> list[int]:
    """The values a `bits`-wide band may have in a hash within `max_distance`, when our
    band is `band` (pigeonhole: some band is at most max_distance // HASH_BANDS away)."""
    return [band ^ mask for mask in _flip_masks(bits, max_distance // HASH_BANDS)]


def _signed(value: int) -> int:
    # BIGINT is signed: the top bit of the hash is its sign bit there.
    return value - (1 << HASH_BITS) if value >= 1 << (HASH_BITS - 1) else value


def _unsigned(value: int) -> int:
    return value & ((1 << HASH_BITS) - 1)


class Similar(IndexCore):
    """Perceptual hashes: recording them and finding the stored images close to one."""

    @translate_db_errors
    def set_hashes(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Record the perceptual hashes (unsigned 64-bit) of several items in one transaction."""
        if not pairs:
            return
        rows = [
            {"media_id": media_id, "hash": _signed(value)}
            | {f"band{i}": band for i, band in enumerate(band_values(value))}
            for media_id, value in pairs
        ]
        stmt = self._insert(media_hashes)
        stmt = stmt.on_conflict_do_update(
            index_elements=[media_hashes.c.media_id],
            set_={name: stmt.excluded[name] for name in rows[0] if name != "media_id"},
        )
        with self.begin() as conn:
            conn.execute(stmt, rows)

    @translate_db_errors
    def hash_of(self, media_id: int) -> int | None:
        """The perceptual hash of an item, or None when it has none (yet)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(media_hashes.c.hash).where(media_hashes.c.media_id == media_id)
            ).scalar()
        return None if value is None else _unsigned(value)

    @translate_db_errors
    def similar_media(
        self,
        media_id: int,
        *,
        max_distance: int = DEFAULT_MAX_DISTANCE,
        limit: int = MAX_SIMILAR,
    ) -> list[SimilarMedia] | None:
        """Stored images (other than `media_id`) within `max_distance`, nearest first.

        None when `media_id` has no hash. `max_distance` is 0 to MAX_DISTANCE.
        """
        if not 0 <= max_distance <= MAX_DISTANCE:
            raise ValueError(f"max_distance: must be 0 to {MAX_DISTANCE}, got {max_distance}")
        with self.engine.connect() as conn:
            own = conn.execute(
                select(media_hashes.c.hash).where(media_hashes.c.media_id == media_id)
            ).scalar()
            if own is None:
                return None
            near = self._within(conn, _unsigned(own), max_distance)
            near.pop(media_id, None)
            return self._describe(conn, near, limit)

    @translate_db_errors
    def similar_to_hash(
        self, value: int, *, max_distance: int = DEFAULT_MAX_DISTANCE, limit: int = MAX_SIMILAR
    ) -> list[SimilarMedia]:
        """Stored images whose hash is within `max_distance` of `value`, nearest first."""
        if not 0 <= max_distance <= MAX_DISTANCE:
            raise ValueError(f"max_distance: must be 0 to {MAX_DISTANCE}, got {max_distance}")
        with self.engine.connect() as conn:
            return self._describe(conn, self._within(conn, value, max_distance), limit)

    def _within(self, conn: Connection, value: int, max_distance: int) -> dict[int, int]:
        """{media_id: distance} of every hash within `max_distance` of `value`."""
        probes: list[ColumnElement[bool]] = [
            self._band_in(i, probe_values(band, max_distance, bits=BAND_BITS[i]))
            for i, band in enumerate(band_values(value))
        ]
        # One index probe per band value (a BitmapOr on PostgreSQL, SQLite's OR
        # optimisation), then the exact distance decides.
        rows = conn.execute(
            select(media_hashes.c.media_id, media_hashes.c.hash).where(or_(*probes))
        ).all()
        found = {}
        for media_id, stored in rows:
            d = distance(value, _unsigned(stored))
            if d <= max_distance:
                found[media_id] = d
        return found

    def _band_in(self, band: int, values: list[int]) -> ColumnElement[bool]:
        column = media_hashes.c[f"band{band}"]
        if self.dialect == "postgresql":
            # One array parameter instead of hundreds: binding them cost more than the scan.
            return column == any_(bindparam(f"probes{band}", values, type_=ARRAY(Integer)))
        return column.in_(values)

    def _describe(self, conn: Connection, near: dict[int, int], limit: int) -> list[SimilarMedia]:
        if not near:
            return []
        # The nearest first; a chunk at a time keeps the IN list short for a common picture.
        ranked = sorted(near, key=lambda media_id: (near[media_id], media_id))
        out: list[SimilarMedia] = []
        for start in range(0, len(ranked), 500):
            chunk = ranked[start : start + 500]
            rows = conn.execute(
                select(
                    media.c.id, media.c.message_sid, messages.c.from_addr, messages.c.received_at
                )
                .join(messages, messages.c.sid == media.c.message_sid)
                .where(media.c.id.in_(chunk), media.c.state == "stored")
            ).all()
            out.extend(
                SimilarMedia(row.id, row.message_sid, row.from_addr, row.received_at, near[row.id])
                for row in rows
            )
            if len(out) >= limit:
                break
        out.sort(key=lambda item: (item.distance, item.received_at, item.id))
        return out[:limit]
