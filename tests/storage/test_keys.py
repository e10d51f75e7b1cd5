"""Object keys: layout of media, derived and outbound keys, and the path-safety rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from receiver.storage.keys import (
    MAX_KEY_LENGTH,
    derived_key,
    media_key,
    outbound_key,
    validate_key,
    validate_prefix,
)

ACCOUNT = "AC" + "a" * 32
MESSAGE = "MM" + "b" * 32
MEDIA = "ME" + "c" * 32


def test_media_key_layout():
    key = media_key(ACCOUNT, MESSAGE, 0, MEDIA, "jpg")
    assert key == f"media/{ACCOUNT}/{MESSAGE}/0-{MEDIA}.jpg"


def test_media_key_without_media_sid_and_normalised_extension():
    assert media_key(ACCOUNT, MESSAGE, 9, None, ".JPG") == f"media/{ACCOUNT}/{MESSAGE}/9-media.jpg"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("AC/../x", MESSAGE, 0, MEDIA, "jpg"), "account_sid"),
        ((ACCOUNT, "../../etc", 0, MEDIA, "jpg"), "message_sid"),
        ((ACCOUNT, MESSAGE, 0, "ME.x", "jpg"), "media_sid"),
        ((ACCOUNT, MESSAGE, 0, "", "jpg"), "media_sid"),
        ((ACCOUNT, MESSAGE, -1, MEDIA, "jpg"), "index"),
        ((ACCOUNT, MESSAGE, True, MEDIA, "jpg"), "index"),
        ((ACCOUNT, MESSAGE, "0", MEDIA, "jpg"), "index"),
        ((ACCOUNT, MESSAGE, 0, MEDIA, "j/pg"), "extension"),
        ((ACCOUNT, MESSAGE, 0, MEDIA, ""), "extension"),
        ((ACCOUNT, MESSAGE, 0, MEDIA, "tar.gz"), "extension"),
        ((ACCOUNT, MESSAGE, 0, MEDIA, "jpé"), "extension"),
        (("AC\u0660\u0661", MESSAGE, 0, MEDIA, "jpg"), "account_sid"),
    ],
)
def test_media_key_refuses_unsafe_parts(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        media_key(*args)


def test_derived_key_sits_beside_the_original_under_derived():
    original = media_key(ACCOUNT, MESSAGE, 2, MEDIA, "heic")
    assert (
        derived_key(original, "thumb", "jpg") == f"derived/{ACCOUNT}/{MESSAGE}/2-{MEDIA}.thumb.jpg"
    )
    no_sid = media_key(ACCOUNT, MESSAGE, 3, None, "png")
    assert (
        derived_key(no_sid, "poster", "webp") == f"derived/{ACCOUNT}/{MESSAGE}/3-media.poster.webp"
    )


@pytest.mark.parametrize(
    "original",
    [
        "outbound/2024/01/abc.jpg",
        "derived/AC1/MM1/0-ME1.thumb.jpg",
        "media/AC1/MM1/x.jpg",
        "media/../x",
    ],
)
def test_derived_key_needs_a_media_key(original):
    with pytest.raises(ValueError, match="not a media key"):
        derived_key(original, "thumb", "jpg")


@pytest.mark.parametrize("name", ["", "Thumb", "th/umb", "th.umb", "x" * 40, "-x"])
def test_derived_key_refuses_bad_names(name):
    with pytest.raises(ValueError, match="derivative name"):
        derived_key(media_key(ACCOUNT, MESSAGE, 0, MEDIA, "jpg"), name, "jpg")


def test_outbound_key_uses_utc_month():
    # 23:30 on 31 January at UTC-5 is already February in UTC.
    when = datetime(2024, 1, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert outbound_key("tok_abc-12345", "gif", when=when) == "outbound/2024/02/tok_abc-12345.gif"
    naive = datetime(2023, 12, 1, 0, 0)
    assert outbound_key("tok_abc-12345", "jpg", when=naive) == "outbound/2023/12/tok_abc-12345.jpg"
    now = datetime.now(UTC)
    assert outbound_key("abcdefgh", "png").startswith(f"outbound/{now:%Y}/{now:%m}/")


@pytest.mark.parametrize("token", ["short", "has/slash12", "has.dot1234", "x" * 129, "ünïcödé123"])
def test_outbound_key_refuses_bad_tokens(token):
    with pytest.raises(ValueError, match="token"):
        outbound_key(token, "jpg")


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "media/AC1/MM1/0-ME1.jpg",
        "derived/x/y.thumb.jpg",
        "A-Z_a.z/0-9",
        "/".join(["x" * 100] * 5) + "/" + "y" * 7,  # exactly MAX_KEY_LENGTH
        "a/" + "x" * 200,
    ],
)
def test_validate_key_accepts_safe_keys(key):
    assert len(key) <= MAX_KEY_LENGTH
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../x",
        "a/../b",
        "a/..",
        "..",
        ".",
        "./a",
        "a/./b",
        "/etc/passwd",
        "a//b",
        "a/",
        "a\x00b",
        "a\nb",
        "a b",
        "a\\b",
        "C:\\x",
        "médïa/x",
        "a/\u202eexe.jpg",
        "a/\uff0e\uff0e/b",
        ".hidden",
        "a/.x.meta.json",
        "a/.x.part",
        "a/" + "x" * 201,
        "x" * (MAX_KEY_LENGTH + 1),
        "a?b",
        "a#b",
        "a%2e%2e/b",
        "~/x",
    ],
)
def test_validate_key_refuses_path_tricks(key):
    with pytest.raises(ValueError):
        validate_key(key)


@pytest.mark.parametrize("key", [None, b"a/b", 3, ["a"]])
def test_validate_key_refuses_non_strings(key):
    with pytest.raises(ValueError, match="string"):
        validate_key(key)


def test_validate_prefix_allows_empty_and_trailing_slash():
    assert validate_prefix("") == ""
    assert validate_prefix("media/") == "media/"
    assert validate_prefix("media/AC1") == "media/AC1"
    for bad in ("/", "//", "../", "a//", "/media", "a/../", "é"):
        with pytest.raises(ValueError):
            validate_prefix(bad)
