"""receiver.index.serialize: the API's JSON shape of records read back from the index."""

from __future__ import annotations

import json

from receiver.index import MediaIndex
from receiver.index.serialize import media_json, message_json
from tests.index.rows import ACCOUNT, media_rows, message, sid

MESSAGE_FIELDS = [
    "sid",
    "account_sid",
    "messaging_service_sid",
    "direction",
    "from",
    "to",
    "channel",
    "body",
    "num_media",
    "num_segments",
    "keyword",
    "received_at",
    "updated_at",
    "state",
    "conversation_sid",
    "author",
    "params",
    "media",
]


def test_message_json_fields_in_order_with_media(index: MediaIndex) -> None:
    rows = index.insert_message(message(1), media_rows(2), lease_owner="w", lease_seconds=60)
    assert rows is not None
    facts = {"mismatch": True, "orientation": 6}
    index.finish_media(rows[0].id, "w", state="stored", facts=facts, storage_key="k/0.jpg")
    index.finish_media(rows[1].id, "w", state="rejected", reason="too_large", detail="")
    got = index.get_message(sid(1))
    assert got is not None
    shaped = message_json(got)
    assert list(shaped) == MESSAGE_FIELDS
    assert (shaped["sid"], shaped["account_sid"], shaped["from"]) == (
        sid(1),
        ACCOUNT,
        "+15550001111",
    )
    assert shaped["params"] == [["MessageSid", sid(1)]]
    assert shaped["received_at"].endswith("Z")
    stored, rejected = shaped["media"]
    assert stored == media_json(got.media[0])
    assert stored["type_mismatch"] is True and stored["orientation"] == 6
    assert stored["reason"] is None and stored["storage_key"] == "k/0.jpg"
    assert (rejected["reason"], rejected["detail"], rejected["index"]) == ("too_large", None, 1)
    without = message_json(got, include_params=False)
    assert "params" not in without and without["media"] == shaped["media"]
    # Everything is plain JSON.
    assert json.loads(json.dumps(shaped)) == shaped
