"""Opt-out keywords: whole body, trimmed, case-insensitive; OptOutType wins."""

from __future__ import annotations

import pytest

from receiver.twilio.keywords import (
    HELP_KEYWORDS,
    START_KEYWORDS,
    STOP_KEYWORDS,
    classify_keyword,
)


def test_keyword_sets_are_twilios_defaults():
    stop = ["CANCEL", "END", "OPTOUT", "QUIT", "REVOKE", "STOP", "STOPALL", "UNSUBSCRIBE"]
    assert sorted(STOP_KEYWORDS) == stop
    assert sorted(START_KEYWORDS) == ["START", "UNSTOP", "YES"]
    assert sorted(HELP_KEYWORDS) == ["HELP", "INFO"]


@pytest.mark.parametrize("word", sorted(STOP_KEYWORDS))
def test_stop_words(word):
    assert classify_keyword(word, None) == "STOP"
    assert classify_keyword(word.lower(), None) == "STOP"
    assert classify_keyword(f"  {word.title()}\n", None) == "STOP"


@pytest.mark.parametrize("word", sorted(START_KEYWORDS))
def test_start_words(word):
    assert classify_keyword(word, None) == "START"
    assert classify_keyword(f"\t{word.lower()} ", None) == "START"


@pytest.mark.parametrize("word", sorted(HELP_KEYWORDS))
def test_help_words(word):
    assert classify_keyword(word, None) == "HELP"
    assert classify_keyword(word.capitalize(), None) == "HELP"


@pytest.mark.parametrize(
    "body",
    [
        "",
        "   ",
        "STOP PLEASE",
        "please stop",
        "STOP.",
        "S TOP",
        "stopp",
        "yes!",
        "HELP ME",
        "ＳＴＯＰ",  # fullwidth letters: Twilio does not treat these as STOP either
        "ſtop",  # long s: upper-cases to STOP, but Twilio matches ASCII only
        "information",
        "Hello there",
    ],
)
def test_not_keywords(body):
    assert classify_keyword(body, None) is None


@pytest.mark.parametrize(
    ("body", "opt_out_type", "expected"),
    [
        ("ARRET", "STOP", "STOP"),  # a custom Advanced Opt-Out keyword
        ("stop", "START", "START"),
        ("hello", "HELP", "HELP"),
        ("STOP", "help", "HELP"),
        ("STOP", " stop ", "STOP"),
        ("STOP", "", "STOP"),
        ("STOP", "SOMETHING_NEW", "STOP"),
        ("hello", "SOMETHING_NEW", None),
    ],
)
def test_opt_out_type_wins(body, opt_out_type, expected):
    assert classify_keyword(body, opt_out_type) == expected
