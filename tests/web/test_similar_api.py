"""Near-duplicate photos through the real pipeline: /api/media/<id>/similar, similar_to, the page."""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageOps

from tests.conftest import AUTH
from tests.support import samples
from tests.support.mediaserver import MediaServer
from tests.support.webhooks import WebhookPoster, inbound_params, new_sid
from tests.web.conftest import login
from tests.web.seed import Item, Seeder

PHOTO = samples.photo(1200, 900, seed=11)
SENDERS = ("+15550100001", "+15550100002", "+15550100003")


def deliver(make_app: Any, db_url: str) -> tuple[Any, list[str], dict[str, int]]:
    """Three senders: the photo, a smaller re-encoded copy of it, and its mirror image."""
    files = {
        "photo.jpg": samples.encode(PHOTO, "JPEG", quality=92),
        "copy.jpg": samples.encode(
            PHOTO.resize((600, 450), Image.Resampling.LANCZOS), "JPEG", quality=60
        ),
        "mirror.jpg": samples.encode(ImageOps.mirror(PHOTO), "JPEG", quality=92),
    }
    with MediaServer() as server:
        app = make_app(RECEIVER_MEDIA_HOSTS=server.host_port, RECEIVER_DATABASE_URL=db_url)
        client = app.test_client()
        sids = []
        for sender, (name, data) in zip(SENDERS, files.items(), strict=True):
            url = server.add(f"/{name}", data, content_type="image/jpeg")
            sid = new_sid()
            params = inbound_params(sid, media=[(url, "image/jpeg")], from_=sender)
            resp = WebhookPoster(client).post(params)
            assert resp.status_code == 200, resp.get_data(as_text=True)
            sids.append(sid)
        app.extensions["receiver"].pipeline.shutdown(wait=True)
    index = app.extensions["receiver"].index
    ids = {name: index.media_of(sid)[0].id for name, sid in zip(files, sids, strict=True)}
    return app, sids, ids


def test_the_same_photo_from_another_number_is_found(make_app: Any, db_url: str) -> None:
    app, sids, ids = deliver(make_app, db_url)
    client = app.test_client()
    resp = client.get(f"/api/media/{ids['photo.jpg']}/similar", headers=AUTH)
    assert resp.status_code == 200
    (match,) = resp.get_json()["media"]
    assert match["id"] == ids["copy.jpg"]
    assert match["message_sid"] == sids[1]
    assert match["from"] == SENDERS[1]
    assert 0 <= match["distance"] <= 4
    assert match["received_at"].endswith("Z")
    # The mirror image is far from both, even at the widest search.
    wide = client.get(f"/api/media/{ids['mirror.jpg']}/similar?max_distance=11", headers=AUTH)
    assert wide.get_json() == {"media": []}
    listed = client.get(f"/api/messages?similar_to={ids['copy.jpg']}", headers=AUTH)
    assert [m["sid"] for m in listed.get_json()["messages"]] == [sids[0]]
    # The copy's page says where it was seen first.
    login(client)
    page = client.get(f"/messages/{sids[1]}").get_data(as_text=True)
    assert f"seen before: 1 time, from {SENDERS[0]}, first on" in page
    assert f"similar_to={ids['copy.jpg']}" in page
    first = client.get(f"/messages/{sids[0]}").get_data(as_text=True)
    assert "seen before" not in first
    listed_page = client.get(f"/messages?similar_to={ids['copy.jpg']}").get_data(as_text=True)
    assert sids[0] in listed_page and sids[1] not in listed_page and sids[2] not in listed_page


def test_bad_requests_to_similar_name_the_problem(app: Any) -> None:
    seed = Seeder(app)
    sid = seed.message(items=[Item(), Item(kind="contact", detected_type="text/vcard")])
    photo, card = (row["id"] for row in seed.media_rows(sid))
    client = app.test_client()
    for raw in ("12", "-1", "eight", "999"):
        resp = client.get(f"/api/media/{photo}/similar?max_distance={raw}", headers=AUTH)
        assert resp.status_code == 400
        assert resp.get_json()["parameter"] == "max_distance"
    resp = client.get(f"/api/media/{photo}/similar?distance=3", headers=AUTH)
    assert resp.status_code == 400 and resp.get_json()["parameter"] == "distance"
    resp = client.get(f"/api/media/{card}/similar", headers=AUTH)
    assert resp.status_code == 404 and resp.get_json()["error"] == "no_hash"
    assert client.get("/api/media/999999/similar", headers=AUTH).status_code == 404
    assert client.get(f"/api/media/{photo}/similar").status_code == 401
    resp = client.get("/api/messages?similar_to=abc", headers=AUTH)
    assert resp.status_code == 400 and resp.get_json()["parameter"] == "similar_to"


def test_an_image_stored_before_hashes_were_kept_is_hashed_when_asked(app: Any) -> None:
    # Seeded with a thumbnail and no hash, as an index from an earlier version has it.
    seed = Seeder(app)
    first = seed.message(items=[Item()], from_addr="+15550100009")
    second = seed.message(items=[Item(thumbnail=False)])
    (old,) = (row["id"] for row in seed.media_rows(first))
    (new,) = (row["id"] for row in seed.media_rows(second))
    index = app.extensions["receiver"].index
    assert index.hash_of(old) is None and index.hash_of(new) is None
    client = app.test_client()
    resp = client.get(f"/api/media/{new}/similar", headers=AUTH)
    assert resp.status_code == 200
    assert index.hash_of(new) is not None  # made with its thumbnail, in the request
    assert resp.get_json() == {"media": []}  # the old one has no hash yet
    resp = client.get(f"/api/media/{old}/similar", headers=AUTH)
    # Hashed from its (different, small) seeded thumbnail.
    assert resp.status_code == 200 and index.hash_of(old) is not None


def test_a_stored_image_that_cannot_be_hashed_answers_202(app: Any) -> None:
    seed = Seeder(app)
    sid = seed.message(items=[Item(data=b"\xff\xd8\xff\xe0 not really a jpeg", thumbnail=False)])
    (broken,) = (row["id"] for row in seed.media_rows(sid))
    resp = app.test_client().get(f"/api/media/{broken}/similar", headers=AUTH)
    assert resp.status_code == 202
    assert resp.get_json()["error"] == "hash_pending"
    assert int(resp.headers["Retry-After"]) > 0
