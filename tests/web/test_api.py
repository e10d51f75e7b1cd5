"""The JSON API: list with filters and keyset pages, one message, deletion, bad input."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from receiver.errors import StorageError
from receiver.index.queries import Cursor
from tests.conftest import AUTH
from tests.support import samples
from tests.support.mediaserver import MediaServer
from tests.support.webhooks import WebhookPoster, inbound_params, new_sid
from tests.web.seed import BASE_TIME, Item, Seeder

VCARD = (
    b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Pat Example\r\nTEL;TYPE=CELL:+15550100123\r\nEND:VCARD\r\n"
)


@pytest.fixture
def api(app: Any) -> Any:
    return app.test_client()


def get(client: Any, path: str, **params: Any) -> Any:
    return client.get(path, query_string=params, headers=AUTH)


def sids(resp: Any) -> list[str]:
    return [m["sid"] for m in resp.get_json()["messages"]]


# -- listing ------------------------------------------------------------------


def test_empty_list(api: Any) -> None:
    resp = get(api, "/api/messages")
    assert resp.status_code == 200
    assert resp.get_json() == {"messages": [], "next_cursor": None}


def test_list_is_newest_first_with_contract_fields(api: Any, seed: Seeder) -> None:
    old = seed.message(body="old", received_at=BASE_TIME)
    new = seed.message(body="new", received_at=BASE_TIME + timedelta(hours=1), items=[Item()])
    data = get(api, "/api/messages").get_json()
    assert [m["sid"] for m in data["messages"]] == [new, old]
    first = data["messages"][0]
    for name in (
        "sid",
        "account_sid",
        "from",
        "to",
        "channel",
        "body",
        "num_media",
        "received_at",
        "state",
        "media",
    ):
        assert name in first
    item = first["media"][0]
    for name in (
        "id",
        "index",
        "media_sid",
        "declared_type",
        "detected_type",
        "kind",
        "size_bytes",
        "sha256",
        "width",
        "height",
        "state",
        "reason",
        "storage_key",
    ):
        assert name in item
    assert first["received_at"] == "2024-05-01T13:00:00Z"


def _walk(client: Any, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        data = get(client, "/api/messages", **query).get_json()
        seen += [m["sid"] for m in data["messages"]]
        cursor = data["next_cursor"]
        pages += 1
        assert pages < 100
        if cursor is None:
            return seen


@pytest.mark.parametrize("limit", [1, 7, 50, 200])
def test_cursor_pages_visit_every_message_once(api: Any, seed: Seeder, limit: int) -> None:
    # Equal timestamps on purpose: the SID breaks ties, so no row is skipped or repeated.
    made = [seed.message(received_at=BASE_TIME + timedelta(minutes=i // 3)) for i in range(60)]
    seen = _walk(api, limit=limit)
    assert len(seen) == len(set(seen)) == 60
    assert set(seen) == set(made)
    expected = sorted(
        made, key=lambda s: (BASE_TIME + timedelta(minutes=made.index(s) // 3), s), reverse=True
    )
    assert seen == expected


def test_last_page_has_null_cursor(api: Any, seed: Seeder) -> None:
    for _ in range(3):
        seed.message()
    data = get(api, "/api/messages", limit=3).get_json()
    assert len(data["messages"]) == 3 and data["next_cursor"] is None
    data = get(api, "/api/messages", limit=2).get_json()
    assert re.fullmatch(r"[0-9]{1,16}-[A-Za-z0-9]{1,64}", data["next_cursor"])


def test_filters(api: Any, seed: Seeder) -> None:
    a = seed.message(
        from_addr="+15550000001",
        body="Invoice attached",
        items=[Item(kind="document", detected_type="application/pdf", ext="pdf")],
    )
    b = seed.message(from_addr="+15550000002", body="photo of the dent", items=[Item()])
    c = seed.message(
        from_addr="+15550000001",
        channel="whatsapp",
        body="100% sure_thing",
        items=[Item(kind="video", detected_type="video/mp4", ext="mp4")],
    )
    d = seed.message(
        from_addr="+15550000003",
        body="bad file",
        items=[Item(state="rejected", reason="type_mismatch")],
    )
    e = seed.message(
        from_addr="+15550000004",
        body="card",
        items=[Item(kind="contact", detected_type="text/vcard", ext="vcf")],
        received_at=BASE_TIME + timedelta(days=3),
    )
    assert set(sids(get(api, "/api/messages", **{"from": "+15550000001"}))) == {a, c}
    assert sids(get(api, "/api/messages", **{"from": "whatsapp:+15550000001"})) == [c]
    # "+" sent unencoded arrives as a space; it still means the number.
    assert set(sids(api.get("/api/messages?from=+15550000001", headers=AUTH))) == {a, c}
    assert sids(get(api, "/api/messages", kind="video")) == [c]
    assert sids(get(api, "/api/messages", kind="contact")) == [e]
    assert set(sids(get(api, "/api/messages", kind="image"))) == {b, d}
    assert sids(get(api, "/api/messages", kind="image", state="stored")) == [b]
    assert sids(get(api, "/api/messages", state="rejected")) == [d]
    assert set(sids(get(api, "/api/messages", state="complete"))) == {a, b, c, d, e}
    assert sids(get(api, "/api/messages", state="pending")) == []
    assert sids(get(api, "/api/messages", q="INVOICE")) == [a]
    assert sids(get(api, "/api/messages", q="100%")) == [c]
    assert sids(get(api, "/api/messages", q="t_e")) == []  # "_" is literal: "the" does not match
    assert sids(get(api, "/api/messages", q="sure_")) == [c]
    assert sids(get(api, "/api/messages", since="2024-05-02")) == [e]
    assert set(sids(get(api, "/api/messages", until="2024-05-01"))) == {a, b, c, d}
    assert sids(
        get(api, "/api/messages", since="2024-05-01T12:01:30Z", until="2024-05-01T12:02:30Z")
    ) == [b]
    assert sids(
        get(
            api,
            "/api/messages",
            since="2024-05-01T14:01:30+02:00",
            until="2024-05-01T14:02:30+02:00",
        )
    ) == [b]
    assert sids(
        get(api, "/api/messages", **{"from": "+15550000001"}, kind="document", q="invoice")
    ) == [a]
    assert sids(get(api, "/api/messages", **{"from": "+15550000009"})) == []


def test_filtered_pages_follow_the_filter(api: Any, seed: Seeder) -> None:
    wanted = [seed.message(from_addr="+15550000001", items=[Item()]) for _ in range(9)]
    for _ in range(9):
        seed.message(from_addr="+15550000002", items=[Item()])
    seen = _walk(api, limit=4, **{"from": "+15550000001"}, kind="image")
    assert seen == list(reversed(wanted))


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"limit": "100000"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1e3"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "12-"}, "cursor"),
        ({"cursor": "-MMabc"}, "cursor"),
        ({"cursor": "1714567890123456-MM../../etc"}, "cursor"),
        ({"cursor": "99999999999999999-MMabc"}, "cursor"),
        ({"cursor": "' OR 1=1 --"}, "cursor"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2024-13-01"}, "since"),
        ({"since": "2024-02-30"}, "since"),
        ({"until": "2024-05-01T25:00:00Z"}, "until"),
        ({"until": "2024-05-01T10:00:00+99:00"}, "until"),
        ({"since": "1714567890"}, "since"),
        ({"kind": "spreadsheet"}, "kind"),
        ({"kind": "IMAGE"}, "kind"),
        ({"state": "deleted"}, "state"),
        ({"q": "x" * 201}, "q"),
        ({"q": "a\x00b"}, "q"),
        ({"from": "+1" * 200}, "from"),
    ],
)
def test_bad_parameters_get_400_naming_them(
    api: Any, params: dict[str, str], parameter: str
) -> None:
    resp = get(api, "/api/messages", **params)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    data = resp.get_json()
    assert data["error"] == "invalid_parameter"
    assert data["parameter"] == parameter
    assert parameter in data["message"]


def test_cursor_round_trip() -> None:
    at = BASE_TIME + timedelta(microseconds=123456)
    cursor = Cursor(at, "MM" + "a" * 32)
    assert Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize(
    "name", ["from", "kind", "state", "since", "until", "q", "cursor", "limit"]
)
def test_empty_parameters_are_refused(api: Any, name: str) -> None:
    resp = api.get(f"/api/messages?{name}=", headers=AUTH)
    assert resp.status_code == 400
    assert resp.get_json()["parameter"] == name


def test_unknown_parameters_are_refused(api: Any) -> None:
    resp = api.get("/api/messages?form=%2B15550001111", headers=AUTH)
    assert resp.status_code == 400
    data = resp.get_json()
    assert data["parameter"] == "form"
    assert "from" in data["message"]


# -- one message --------------------------------------------------------------


def test_get_message(api: Any, seed: Seeder) -> None:
    made = seed.message(body="hi", items=[Item(), Item(state="failed", reason="fetch_failed")])
    data = get(api, f"/api/messages/{made}").get_json()
    assert data["sid"] == made
    assert data["params"][0] == ["MessageSid", made]
    assert [m["index"] for m in data["media"]] == [0, 1]
    assert data["media"][1]["reason"] == "fetch_failed"
    assert data["media"][0]["reason"] is None


@pytest.mark.parametrize(
    "path",
    [
        "/api/messages/MM" + "0" * 32,
        "/api/messages/..",
        "/api/messages/..%2F..%2Fetc%2Fpasswd",
        "/api/messages/%2e%2e",
        "/api/messages/MM" + "0" * 31 + "%00",
        "/api/messages/MM" + "0" * 32 + "%0a",
        "/api/messages/" + "A" * 5000,
        "/api/messages/MM" + "0" * 31 + "'",
        "/api/media/0/content",
        "/api/media/-1/content",
        "/api/media/abc/content",
        "/api/media/1.5/content",
        "/api/media/99999999999/content",
        "/api/media/2147483648/thumbnail",
        "/api/media/%2e%2e/content",
        "/api/media/1%2F..%2F..%2Fetc/content",
        "/api/media/..%2F1/content",
        "/api/media/0x10/content",
        "/api/media/%20%31/content",
    ],
)
def test_path_tricks_are_404(api: Any, seed: Seeder, path: str) -> None:
    seed.message(items=[Item()])
    resp = api.get(path, headers=AUTH)
    assert resp.status_code == 404, (path, resp.status_code)
    assert resp.is_json
    assert resp.get_json()["error"] == "not_found"


# -- deletion -----------------------------------------------------------------


def test_delete_removes_objects_then_rows(app: Any, api: Any, seed: Seeder) -> None:
    store = app.extensions["receiver"].store
    keep = seed.message(items=[Item()])
    made = seed.message(items=[Item(), Item(kind="audio", detected_type="audio/mpeg", ext="mp3")])
    keys = [k for m in seed.media_rows(made) for k in (m["storage_key"], m["thumbnail_key"]) if k]
    assert len(keys) == 3 and all(store.exists(k) for k in keys)
    resp = api.delete(f"/api/messages/{made}", headers=AUTH)
    assert resp.status_code == 200
    assert resp.get_json() == {"deleted": made, "objects_deleted": 3}
    assert not any(store.exists(k) for k in keys)
    assert app.extensions["receiver"].index.get_message(made) is None
    assert seed.media_rows(made) == []
    assert get(api, f"/api/messages/{made}").status_code == 404
    assert api.delete(f"/api/messages/{made}", headers=AUTH).status_code == 404
    assert sids(get(api, "/api/messages")) == [keep]
    assert all(store.exists(m["storage_key"]) for m in seed.media_rows(keep))


def test_delete_keeps_rows_when_storage_fails(
    app: Any, api: Any, seed: Seeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = seed.message(items=[Item()])
    store = app.extensions["receiver"].store

    def broken(prefix: str) -> int:
        raise StorageError("disk unavailable")

    monkeypatch.setattr(store, "delete_prefix", broken)
    resp = api.delete(f"/api/messages/{made}", headers=AUTH)
    assert resp.status_code == 503
    assert resp.get_json()["error"] == "storage_unavailable"
    assert app.extensions["receiver"].index.get_message(made) is not None


def test_delete_removes_unrecorded_objects_of_the_message(app: Any, api: Any, seed: Seeder) -> None:
    made = seed.message(items=[Item()])
    store = app.extensions["receiver"].store
    # A file written by a crashed process before its row was updated.
    stray = f"media/AC{'1' * 32}/{made}/5-ME{'f' * 32}.jpg"
    store.put_bytes(stray, b"x", content_type="image/jpeg")
    assert api.delete(f"/api/messages/{made}", headers=AUTH).status_code == 200
    assert not store.exists(stray)


# -- the whole path -------------------------------------------------------------


def test_webhook_to_api_through_the_real_pipeline(make_app: Any) -> None:
    with MediaServer() as server:
        jpeg = samples.jpeg(640, 480)
        png = samples.png(40, 30)
        urls = [
            (server.add("/a.jpg", jpeg, content_type="image/jpeg"), "image/jpeg"),
            (server.add("/b.png", png, content_type="image/png"), "image/png"),
            (server.add("/c.vcf", VCARD, content_type="text/vcard"), "text/vcard"),
        ]
        app = make_app(RECEIVER_MEDIA_HOSTS=server.host_port)
        client = app.test_client()
        msid = new_sid()
        resp = WebhookPoster(client).post(inbound_params(msid, media=urls, body="three files"))
        assert resp.status_code == 200, resp.get_data(as_text=True)
        app.extensions["receiver"].pipeline.shutdown(wait=True)
    data = get(client, "/api/messages").get_json()
    assert [m["sid"] for m in data["messages"]] == [msid]
    items = data["messages"][0]["media"]
    assert [m["state"] for m in items] == ["stored", "stored", "stored"]
    assert [m["kind"] for m in items] == ["image", "image", "contact"]
    assert items[2]["contact"]["name"] == "Pat Example"
    content = client.get(f"/api/media/{items[0]['id']}/content", headers=AUTH)
    assert content.status_code == 200 and content.data == jpeg
    assert content.headers["Content-Type"] == "image/jpeg"
    thumb = client.get(f"/api/media/{items[0]['id']}/thumbnail", headers=AUTH)
    assert thumb.status_code == 200 and thumb.data[:3] == b"\xff\xd8\xff"
    card = client.get(f"/api/media/{items[2]['id']}/content", headers=AUTH)
    assert card.headers["Content-Disposition"].startswith("attachment")
    assert get(client, "/api/messages", kind="contact").get_json()["messages"][0]["sid"] == msid
    assert (
        client.delete(f"/api/messages/{msid}", headers=AUTH).get_json()["objects_deleted"] == 5
    )  # 3 originals, 2 thumbnails


# -- both databases -------------------------------------------------------------


def test_pages_and_filters_on_each_database(make_app: Any, db_url: str) -> None:
    app = make_app(RECEIVER_DATABASE_URL=db_url)
    client = app.test_client()
    seed = Seeder(app)
    images: list[tuple[Any, str]] = []
    for i in range(25):
        at = BASE_TIME + timedelta(seconds=i // 2)
        items = [Item()] if i % 2 else [Item(kind="audio", detected_type="audio/mpeg", ext="mp3")]
        made = seed.message(received_at=at, body=f"n{i} Hello", items=items)
        if i % 2:
            images.append((at, made))
    everything = _walk(client, limit=4)
    assert len(everything) == len(set(everything)) == 25
    assert _walk(client, limit=3, kind="image") == [s for _, s in sorted(images, reverse=True)]
    assert len(sids(get(client, "/api/messages", q="hello", limit=200))) == 25
    assert sids(get(client, "/api/messages", q="n13 hel")) == [images[6][1]]
    assert sids(get(client, "/api/messages", q="N13 HEL")) == [images[6][1]]


# -- text search with the trigram index ---------------------------------------------


def _drop_search_index(engine: Any) -> None:
    from sqlalchemy import text

    if engine.dialect.name == "postgresql":
        statements = ["DROP INDEX IF EXISTS ix_messages_body_trgm"]
    else:
        statements = [
            f"DROP TRIGGER IF EXISTS messages_fts_{event}"
            for event in ("insert", "delete", "update")
        ] + ["DROP TABLE IF EXISTS messages_fts"]
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def test_start_up_builds_the_trigram_index_and_survives_a_refusal(
    make_app: Any, db_url: str, caplog: Any, monkeypatch: Any
) -> None:
    from receiver.index import db

    def has_index(engine: Any) -> bool:
        with engine.connect() as conn:
            return db.has_search_index(conn)

    app = make_app(RECEIVER_DATABASE_URL=db_url)
    engine = app.extensions["receiver"].index.engine
    assert has_index(engine)
    _drop_search_index(engine)
    assert not has_index(engine)
    # A database that refuses the DDL leaves search working by scanning.
    with monkeypatch.context() as patch:
        patch.setattr(db, "search_index_ddl", lambda _: ["CREATE INDEX x ON no_such_table (x)"])
        with caplog.at_level("WARNING", logger="receiver.index.db"):
            assert db.ensure_search_index(engine) is False
    assert "trigram index could not be created" in caplog.text
    assert not has_index(engine)
    seed = Seeder(app)
    sid = seed.message(body="scanned anyway", received_at=BASE_TIME)
    assert sids(get(app.test_client(), "/api/messages", q="anyway")) == [sid]
    assert db.ensure_search_index(engine) is True
    assert has_index(engine)
    assert sids(get(app.test_client(), "/api/messages", q="anyway")) == [sid]


def test_text_search_gives_the_same_answers_with_the_trigram_index(
    make_app: Any, db_url: str
) -> None:
    from sqlalchemy import text

    from receiver.index.schema import search_index_ddl

    app = make_app(RECEIVER_DATABASE_URL=db_url)
    client = app.test_client()
    seed = Seeder(app)
    bodies = ["Photo of the DENT", 'say "hi" 100%', "a_b c", "Ünïcode café", "dent dent", "", "x"]
    bodies += [f"filler {i} dentist" for i in range(30)]
    for i, body in enumerate(bodies):
        seed.message(body=body, received_at=BASE_TIME + timedelta(seconds=i))
    queries = [
        "dent",
        "DENT",
        "den",
        "de",
        '"hi"',
        "100%",
        "a_b",
        "é",
        "café",
        "zzz",
        "filler 1",
        "tis",
    ]
    engine = app.extensions["receiver"].index.engine
    # Start-up builds the index; drop it so the first pass scans.
    _drop_search_index(engine)
    before = {q: _walk(client, q=q, limit=5) for q in queries}
    with engine.begin() as conn:
        for statement in search_index_ddl(engine.dialect.name):
            conn.execute(text(statement))
    after = {q: _walk(client, q=q, limit=5) for q in queries}
    assert after == before
    assert len(after["dent"]) == 32 and after["zzz"] == []
    # The index follows new and deleted messages.
    new = seed.message(body="a brand new zebra", received_at=BASE_TIME + timedelta(days=1))
    assert sids(get(client, "/api/messages", q="zebra")) == [new]
    assert client.delete(f"/api/messages/{new}", headers=AUTH).status_code == 200
    assert sids(get(client, "/api/messages", q="zebra")) == []


def test_errors_keep_the_headers_that_explain_them(client: Any) -> None:
    wrong_method = client.put("/api/messages", headers=AUTH)
    assert wrong_method.status_code == 405
    assert wrong_method.get_json()["error"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["Allow"]
    page = client.patch("/messages")
    assert page.status_code == 405 and "GET" in page.headers["Allow"]
    assert page.mimetype == "text/plain"


def test_media_json_says_whether_a_playable_copy_is_ready(api: Any, seed: Seeder) -> None:
    sid = seed.message(
        items=[
            Item(kind="audio", detected_type="audio/amr", ext="amr", thumbnail=False),
            Item(kind="video", detected_type="video/3gpp", ext="3gp", thumbnail=False),
            Item(),
        ]
    )
    index = seed.svc.index
    audio, video, image = (m.id for m in index.media_of(sid))
    index.queue_playable(audio)
    index.finish_playable(audio, state="failed", reason="unreadable", detail="no audio track")
    listed = get(api, "/api/messages").get_json()["messages"][0]["media"]
    one = get(api, f"/api/messages/{sid}").get_json()["media"]
    assert [m["playable"] for m in listed] == [m["playable"] for m in one]
    assert [m["playable"] for m in one] == [
        {"state": "failed", "url": f"/api/media/{audio}/playable", "reason": "unreadable"},
        {"state": "pending", "url": f"/api/media/{video}/playable", "reason": None},
        None,
    ]
    # The URL answers as the state says.
    failed = get(api, one[0]["playable"]["url"])
    assert failed.status_code == 422
    assert failed.get_json()["reason"] == "unreadable"
    assert get(api, f"/api/media/{image}/playable").status_code == 404
