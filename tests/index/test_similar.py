"""receiver.index.similar on SQLite and PostgreSQL: band probes find exactly what a scan finds."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from receiver.index import MediaIndex
from receiver.index.queries import MessageFilter, list_messages
from receiver.index.schema import media, media_hashes
from receiver.index.similar import MAX_DISTANCE, band_values, probe_values
from receiver.media.phash import distance
from tests.index.rows import media_rows, message, sid

START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def seed_images(index: MediaIndex, hashes: list[int], *, per_message: int = 1) -> list[int]:
    """Stored image items with these hashes, `per_message` to a message; their media ids."""
    ids: list[int] = []
    for n, start in enumerate(range(0, len(hashes), per_message)):
        chunk = hashes[start : start + per_message]
        index.record_message(
            message(
                n,
                from_addr=f"+1555000{n:04d}",
                received_at=START + timedelta(minutes=n),
                num_media=len(chunk),
            ),
            media_rows(len(chunk)),
        )
        ids.extend(item.id for item in index.media_of(sid(n)))
    with index.engine.begin() as conn:
        conn.execute(update(media).values(state="stored", kind="image"))
    index.set_hashes(list(zip(ids, hashes, strict=True)))
    return ids


def flip(value: int, bits: list[int]) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


def test_probes_cover_every_band_value_within_the_radius() -> None:
    probes = probe_values(0xABCD, 8, bits=21)  # 8 // 3 bands: at most 2 of 21 bits differ
    assert len(probes) == len(set(probes)) == 1 + 21 + 210
    assert all(distance(0xABCD, p) <= 2 for p in probes)
    assert all(p < 1 << 21 for p in probes)
    value = 0x0123_4567_89AB_CDEF
    bands = band_values(value)
    assert bands == [value >> 42, (value >> 21) & (2**21 - 1), value & (2**21 - 1)]


def test_band_probes_find_exactly_what_a_scan_finds(index: MediaIndex) -> None:
    rng = random.Random(15)
    centres = [rng.getrandbits(64) for _ in range(6)] + [(1 << 64) - 1, 1 << 63]
    hashes = [rng.getrandbits(64) for _ in range(300)]
    # Copies of each centre at every distance up to the widest search, bits spread at random.
    for centre in centres:
        for d in range(MAX_DISTANCE + 2):
            hashes.append(flip(centre, rng.sample(range(64), d)))
    ids = seed_images(index, hashes, per_message=10)
    by_id = dict(zip(ids, hashes, strict=True))
    for centre in centres:
        for max_distance in (0, 2, 3, 8, MAX_DISTANCE):
            found = index.similar_to_hash(centre, max_distance=max_distance, limit=10_000)
            expected = {i for i, h in by_id.items() if distance(centre, h) <= max_distance}
            assert {item.id for item in found} == expected
            assert all(item.distance == distance(centre, by_id[item.id]) for item in found)
            assert [item.distance for item in found] == sorted(item.distance for item in found)


def test_similar_media_lists_other_stored_images_nearest_first(index: MediaIndex) -> None:
    base = 0x0F0F_F0F0_1234_8765
    ids = seed_images(index, [base, flip(base, [1, 20, 40]), flip(base, [5]), base ^ (2**64 - 1)])
    found = index.similar_media(ids[0])
    assert found is not None
    assert [(item.id, item.distance) for item in found] == [(ids[2], 1), (ids[1], 3)]
    assert found[0].message_sid == sid(2)
    assert found[0].from_addr == "+15550000002"
    assert found[0].received_at == START + timedelta(minutes=2)
    assert index.similar_media(ids[0], max_distance=2) is not None
    assert [i.id for i in index.similar_media(ids[0], max_distance=2) or []] == [ids[2]]
    # A rejected item is no longer offered.
    with index.engine.begin() as conn:
        conn.execute(update(media).where(media.c.id == ids[2]).values(state="rejected"))
    assert [i.id for i in index.similar_media(ids[0]) or []] == [ids[1]]


def test_an_item_without_a_hash_has_no_answer_and_bad_distances_are_refused(
    index: MediaIndex,
) -> None:
    index.record_message(message(1), media_rows(1))
    (item,) = index.media_of(sid(1))
    assert index.hash_of(item.id) is None
    assert index.similar_media(item.id) is None
    for bad in (-1, MAX_DISTANCE + 1):
        with pytest.raises(ValueError, match="max_distance"):
            index.similar_media(item.id, max_distance=bad)


def test_hashes_are_replaced_kept_unsigned_and_deleted_with_their_message(
    index: MediaIndex,
) -> None:
    top = (1 << 64) - 2  # the sign bit set: stored as a negative BIGINT
    (media_id,) = seed_images(index, [5])
    index.set_hashes([(media_id, top)])
    assert index.hash_of(media_id) == top
    assert [i.id for i in index.similar_to_hash(top, max_distance=0)] == [media_id]
    assert index.similar_to_hash(5, max_distance=8) == []
    assert index.delete_message(sid(0))
    with index.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(media_hashes)).scalar() == 0


def test_the_message_list_filters_by_similar_to(index: MediaIndex) -> None:
    base = 0x1111_2222_3333_4444
    ids = seed_images(index, [base, flip(base, [0, 9]), base ^ (2**64 - 1), flip(base, [63])])
    page = list_messages(index, MessageFilter(similar_to=ids[0]))
    assert [m.sid for m in page.rows] == [sid(3), sid(1)]  # newest first, not itself
    page = list_messages(index, MessageFilter(similar_to=ids[0], from_addr="+15550000001"))
    assert [m.sid for m in page.rows] == [sid(1)]
    assert list_messages(index, MessageFilter(similar_to=ids[2])).rows == []
