"""receiver.index.optouts on SQLite and PostgreSQL: the latest word of a recipient wins."""

from __future__ import annotations

import pytest

from receiver.index import MediaIndex
from receiver.index.optouts import OptOuts


def test_opt_outs_follow_the_latest_keyword(index: MediaIndex) -> None:
    assert index.is_opted_out("+15550001111", ["+15550002222"]) is False
    index.set_opt_out(
        "+15550001111", "+15550002222", opted_out=True, keyword="STOP", source="inbound"
    )
    assert index.is_opted_out("+15550001111", ["+15550002222"]) is True
    assert index.is_opted_out("+15550001111", ["+15559999999"]) is False
    index.set_opt_out(
        "+15550001111", "+15550002222", opted_out=False, keyword="START", source="inbound"
    )
    assert index.is_opted_out("+15550001111", ["+15550002222"]) is False
    index.set_opt_out("+15550001111", "*", opted_out=True, keyword="21610", source="twilio-21610")
    assert index.is_opted_out("+15550001111", ["+15559999999"]) is True


def test_keywords_and_refusals_are_recorded_through_one_writer(db_url: str) -> None:
    # The opt-out part works alone: it needs nothing but the database core.
    optouts = OptOuts.open(db_url)
    try:
        optouts.record_keyword("+15550001111", "+15550002222", "STOP", "SM" + "1" * 32)
        assert optouts.is_opted_out("+15550001111", ["+15550002222"]) is True
        (row,) = optouts.opt_out_rows("+15550001111")
        assert (row["keyword"], row["source"], row["message_sid"]) == (
            "STOP",
            "inbound",
            "SM" + "1" * 32,
        )
        optouts.record_keyword("+15550001111", "+15550002222", "START", "SM" + "2" * 32)
        assert optouts.is_opted_out("+15550001111", ["+15550002222"]) is False
        with pytest.raises(ValueError, match="HELP"):
            optouts.record_keyword("+15550001111", "+15550002222", "HELP", "SM" + "3" * 32)
        optouts.record_refusal("+15550003333", "MG" + "4" * 32)
        assert optouts.is_opted_out("+15550003333", ["MG" + "4" * 32]) is True
        (refused,) = optouts.opt_out_rows("+15550003333")
        assert (refused["opted_out"], refused["keyword"], refused["source"]) == (
            True,
            "STOP",
            "twilio-21610",
        )
    finally:
        optouts.close()
