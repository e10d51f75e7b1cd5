"""Perceptual hashes: the same picture stays close through re-encoding, others are far."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageOps

from receiver.errors import MediaError
from receiver.index.similar import DEFAULT_MAX_DISTANCE
from receiver.media.phash import dhash, distance
from receiver.media.transform import make_thumbnail, perceptual_hash
from tests.support import samples


def thumbnail_hash(data: bytes) -> int:
    made = make_thumbnail(io.BytesIO(data))
    assert made.phash is not None
    return made.phash


def test_distance_counts_differing_bits_of_64() -> None:
    assert distance(0, 0) == 0
    assert distance(0, (1 << 64) - 1) == 64
    assert distance(0b1011, 0b0001) == 2
    assert distance(1 << 63, 0) == 1


def test_a_recompressed_smaller_copy_is_a_near_duplicate() -> None:
    original = samples.photo(1600, 1200, seed=3)
    first = thumbnail_hash(samples.encode(original, "JPEG", quality=92))
    smaller = original.resize((640, 480), Image.Resampling.LANCZOS)
    second = thumbnail_hash(samples.encode(smaller, "JPEG", quality=55))
    assert distance(first, second) <= DEFAULT_MAX_DISTANCE // 2


def test_a_different_photo_and_a_mirrored_one_are_not_near_duplicates() -> None:
    original = samples.photo(800, 600, seed=3)
    first = thumbnail_hash(samples.encode(original, "JPEG", quality=90))
    other = thumbnail_hash(samples.encode(samples.photo(800, 600, seed=4), "JPEG", quality=90))
    mirrored = thumbnail_hash(samples.encode(ImageOps.mirror(original), "JPEG", quality=90))
    assert distance(first, other) > DEFAULT_MAX_DISTANCE
    assert distance(first, mirrored) > DEFAULT_MAX_DISTANCE


def test_the_hash_is_of_the_upright_picture() -> None:
    # Stored sideways with EXIF orientation 6, and the same picture stored upright.
    upright = samples.photo(300, 400, seed=5)
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    tagged = samples.encode(sideways, "JPEG", quality=95, exif=samples.exif_block(orientation=6))
    plain = samples.encode(upright, "JPEG", quality=95)
    assert distance(thumbnail_hash(tagged), thumbnail_hash(plain)) <= 2


def test_an_animation_is_hashed_by_its_first_frame() -> None:
    data = samples.gif_photo_animated()
    with Image.open(io.BytesIO(data)) as im:
        first = dhash(im.convert("RGB"))
        im.seek(im.n_frames - 1)
        last = dhash(im.convert("RGB"))
    made = thumbnail_hash(data)
    assert distance(made, first) <= 2
    assert distance(made, last) > DEFAULT_MAX_DISTANCE


def test_a_50_megapixel_photo_is_hashed_from_a_reduced_decode() -> None:
    # At the pixel cap: JPEG draft decoding keeps this cheap, and the hash matches a small copy.
    small = samples.photo(866, 577, seed=6)
    big = small.resize((8660, 5770), Image.Resampling.BILINEAR)
    assert big.width * big.height <= 50_000_000
    data = samples.encode(big, "JPEG", quality=80)
    del big
    assert distance(thumbnail_hash(data), dhash(small)) <= DEFAULT_MAX_DISTANCE // 2


def test_the_standalone_hash_has_the_bits_of_the_thumbnails_hash() -> None:
    # Backfill and on-demand hashes must match what arrival recorded, bit for bit.
    for data in (
        samples.encode(samples.photo(4000, 3000, seed=7), "JPEG", quality=85),
        samples.rotated_jpeg(orientation=6),
        samples.png(640, 480, alpha=True),
        samples.gif_photo_animated(frames=3),
    ):
        assert perceptual_hash(io.BytesIO(data)) == thumbnail_hash(data)


def test_the_standalone_hash_refuses_what_the_thumbnail_refuses() -> None:
    for bad, reason in ((samples.png_bomb(), "decompression_bomb"), (b"\xff\xd8 junk", None)):
        with pytest.raises(MediaError) as thumb_error:
            make_thumbnail(io.BytesIO(bad))
        with pytest.raises(MediaError) as hash_error:
            perceptual_hash(io.BytesIO(bad))
        assert hash_error.value.reason == thumb_error.value.reason
        if reason:
            assert hash_error.value.reason == reason
