"""Serving stored files: detected type, safe headers, Range requests, presigned S3 redirects."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.conftest import AUTH
from tests.support import samples
from tests.web.conftest import PAGE_CSP
from tests.web.seed import Item, Seeder

VIDEO = bytes(range(256)) * 40  # 10,240 bytes; the content does not matter for serving


def first_media(seed: Seeder, item: Item) -> dict[str, Any]:
    made = seed.message(items=[item])
    return seed.media_rows(made)[0]


def fetch(client: Any, media_id: int, which: str = "content", **headers: str) -> Any:
    return client.get(f"/api/media/{media_id}/{which}", headers={**AUTH, **headers})


def test_image_inline_with_detected_type_and_safe_headers(client: Any, seed: Seeder) -> None:
    data = samples.jpeg()
    row = first_media(seed, Item(data=data, declared_type="application/octet-stream"))
    resp = fetch(client, row["id"])
    assert resp.status_code == 200
    assert resp.data == data
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert resp.headers["Content-Length"] == str(len(data))
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Disposition"].startswith("inline; filename=")
    assert resp.headers["Content-Security-Policy"] == PAGE_CSP + "; sandbox"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["ETag"]


def test_conditional_get(client: Any, seed: Seeder) -> None:
    row = first_media(seed, Item())
    etag = fetch(client, row["id"]).headers["ETag"]
    resp = fetch(client, row["id"], **{"If-None-Match": etag})
    assert resp.status_code == 304 and resp.data == b""


def test_declared_type_is_not_trusted(client: Any, seed: Seeder) -> None:
    # Declared as a JPEG, the bytes are HTML: served as what they are, as a download.
    html = b"<html><script>alert(1)</script></html>"
    row = first_media(
        seed,
        Item(
            kind="document",
            detected_type="text/html",
            declared_type="image/jpeg",
            data=html,
            ext="html",
        ),
    )
    resp = fetch(client, row["id"])
    assert resp.headers["Content-Type"].startswith("text/html")
    assert resp.headers["Content-Disposition"].startswith("attachment")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("kind", "detected", "ext", "disposition"),
    [
        ("image", "image/png", "png", "inline"),
        ("image", "image/gif", "gif", "inline"),
        ("image", "image/webp", "webp", "inline"),
        ("image", "image/heic", "heic", "attachment"),
        ("image", "image/bmp", "bmp", "attachment"),
        ("image", "image/tiff", "tiff", "attachment"),
        ("document", "image/svg+xml", "svg", "attachment"),
        ("video", "video/mp4", "mp4", "inline"),
        ("video", "video/quicktime", "mov", "inline"),
        ("audio", "audio/mpeg", "mp3", "inline"),
        ("audio", "audio/amr", "amr", "inline"),
        ("contact", "text/vcard", "vcf", "attachment"),
        ("document", "application/pdf", "pdf", "attachment"),
        ("document", "text/plain", "txt", "attachment"),
        ("other", "application/zip", "zip", "attachment"),
    ],
)
def test_disposition_by_detected_type(
    client: Any, seed: Seeder, kind: str, detected: str, ext: str, disposition: str
) -> None:
    row = first_media(
        seed, Item(kind=kind, detected_type=detected, ext=ext, data=b"bytes", thumbnail=False)
    )
    resp = fetch(client, row["id"])
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].split(";")[0] == detected
    assert resp.headers["Content-Disposition"].split(";")[0] == disposition
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_filename_is_derived_from_ids_not_sender_input(client: Any, seed: Seeder) -> None:
    row = first_media(
        seed, Item(kind="document", detected_type="application/pdf", ext="pdf", data=b"%PDF")
    )
    disposition = fetch(client, row["id"]).headers["Content-Disposition"]
    assert disposition == f'attachment; filename="{row["message_sid"]}-0.pdf"'


# -- Range ----------------------------------------------------------------------------


@pytest.fixture
def video(seed: Seeder) -> dict[str, Any]:
    return first_media(seed, Item(kind="video", detected_type="video/mp4", ext="mp4", data=VIDEO))


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, len(VIDEO) - 1),
        ("bytes=-500", len(VIDEO) - 500, len(VIDEO) - 1),
        ("bytes=10000-99999999", 10000, len(VIDEO) - 1),
        ("bytes=-99999", 0, len(VIDEO) - 1),
        ("bytes=5-5", 5, 5),
    ],
)
def test_range_requests(
    client: Any, video: dict[str, Any], header: str, start: int, end: int
) -> None:
    resp = fetch(client, video["id"], Range=header)
    assert resp.status_code == 206
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{len(VIDEO)}"
    assert resp.headers["Content-Length"] == str(end - start + 1)
    assert resp.data == VIDEO[start : end + 1]
    assert resp.headers["Content-Type"] == "video/mp4"
    assert resp.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=20000-30000", "bytes=-0"])
def test_unsatisfiable_range(client: Any, video: dict[str, Any], header: str) -> None:
    resp = fetch(client, video["id"], Range=header)
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(VIDEO)}"


@pytest.mark.parametrize(
    "header", ["bytes=0-1,5-6", "items=0-5", "bytes=abc", "bytes=9-3", "bytes=", "bytes=--1"]
)
def test_ignored_range_sends_the_whole_file(
    client: Any, video: dict[str, Any], header: str
) -> None:
    resp = fetch(client, video["id"], Range=header)
    assert resp.status_code == 200
    assert resp.data == VIDEO


def test_if_range_with_another_version_sends_the_whole_file(
    client: Any, video: dict[str, Any]
) -> None:
    resp = fetch(client, video["id"], Range="bytes=0-9", **{"If-Range": '"other"'})
    assert resp.status_code == 200 and resp.data == VIDEO
    etag = fetch(client, video["id"]).headers["ETag"]
    resp = fetch(client, video["id"], Range="bytes=0-9", **{"If-Range": etag})
    assert resp.status_code == 206 and resp.data == VIDEO[:10]


def test_head_has_headers_and_no_body(client: Any, video: dict[str, Any]) -> None:
    resp = client.head(f"/api/media/{video['id']}/content", headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers["Content-Length"] == str(len(VIDEO))
    assert resp.data == b""


# -- thumbnails, not-stored items, missing files ----------------------------------------


def test_thumbnail(client: Any, seed: Seeder) -> None:
    row = first_media(seed, Item())
    resp = fetch(client, row["id"], "thumbnail")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert resp.data[:3] == b"\xff\xd8\xff"
    assert resp.headers["Content-Disposition"].startswith("inline")


def test_no_thumbnail(client: Any, seed: Seeder) -> None:
    row = first_media(seed, Item(kind="audio", detected_type="audio/mpeg", ext="mp3"))
    resp = fetch(client, row["id"], "thumbnail")
    assert resp.status_code == 404
    assert resp.get_json()["error"] == "no_thumbnail"


@pytest.mark.parametrize(
    ("state", "reason"),
    [("rejected", "type_mismatch"), ("failed", "fetch_failed"), ("pending", None)],
)
def test_not_stored(client: Any, seed: Seeder, state: str, reason: str | None) -> None:
    row = first_media(seed, Item(state=state, reason=reason))
    for which in ("content", "thumbnail"):
        resp = fetch(client, row["id"], which)
        assert resp.status_code == 404
        data = resp.get_json()
        assert data["error"] == "not_stored"
        assert data["reason"] == (reason or state)
        assert state in data["message"]


def test_unknown_media_id(client: Any) -> None:
    resp = fetch(client, 4242)
    assert resp.status_code == 404 and resp.get_json()["error"] == "not_found"


def test_file_missing_from_storage_is_a_clear_404(app: Any, client: Any, seed: Seeder) -> None:
    row = first_media(seed, Item())
    app.extensions["receiver"].store.delete(row["storage_key"])
    app.extensions["receiver"].store.delete(row["thumbnail_key"])
    for which in ("content", "thumbnail"):
        resp = fetch(client, row["id"], which)
        assert resp.status_code == 404
        assert resp.get_json() == {
            "error": "file_missing",
            "reason": "file_missing",
            "message": f"media {row['id']} is recorded as stored but its file is missing from storage",
        }
        # An <img> gets a placeholder picture rather than a broken image.
        img = fetch(
            client,
            row["id"],
            which,
            **{"Sec-Fetch-Dest": "image", "Accept": "image/avif,image/webp,*/*"},
        )
        assert img.status_code == 404
        assert img.headers["Content-Type"].startswith("image/svg+xml")
        assert b"file missing" in img.data
        assert img.headers["X-Content-Type-Options"] == "nosniff"


def test_media_needs_credentials(client: Any, seed: Seeder) -> None:
    row = first_media(seed, Item())
    assert client.get(f"/api/media/{row['id']}/content").status_code == 401
    wrong = client.get(f"/api/media/{row['id']}/content", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


# -- S3: presigned redirects --------------------------------------------------------------


@pytest.fixture
def s3_app(make_app: Any, moto_s3: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    bucket = moto_s3.new_bucket()
    for name, value in moto_s3.env().items():
        monkeypatch.setenv(name, value)
    return make_app(RECEIVER_STORAGE_URL=f"s3://{bucket}/media-test", **moto_s3.env())


def test_s3_redirects_to_a_short_lived_presigned_url(s3_app: Any) -> None:
    client = s3_app.test_client()
    seed = Seeder(s3_app)
    data = samples.jpeg()
    made = seed.message(
        items=[
            Item(data=data),
            Item(kind="document", detected_type="application/pdf", ext="pdf", data=b"%PDF-1.4"),
        ]
    )
    image, pdf = seed.media_rows(made)
    resp = fetch(client, image["id"])
    assert resp.status_code == 302
    assert resp.headers["Cache-Control"] == "no-store"
    location = resp.headers["Location"]
    assert "X-Amz-Expires=60" in location
    query = parse_qs(urlsplit(location).query)
    assert query["response-content-type"] == ["image/jpeg"]
    assert query["response-content-disposition"][0].startswith("inline; filename=")
    fetched = requests.get(location, timeout=10)
    assert fetched.status_code == 200 and fetched.content == data
    doc_query = parse_qs(urlsplit(fetch(client, pdf["id"]).headers["Location"]).query)
    assert doc_query["response-content-type"] == ["application/pdf"]
    assert doc_query["response-content-disposition"][0].startswith("attachment; filename=")
    thumb = fetch(client, image["id"], "thumbnail")
    assert thumb.status_code == 302
    assert requests.get(thumb.headers["Location"], timeout=10).content[:3] == b"\xff\xd8\xff"


def test_s3_page_policy_allows_the_store_origin(s3_app: Any, moto_s3: Any) -> None:
    resp = s3_app.test_client().get("/healthz")
    csp = resp.headers["Content-Security-Policy"]
    origin = moto_s3.endpoint_url.rstrip("/")
    assert f"img-src 'self' {origin};" in csp
    assert f"media-src 'self' {origin};" in csp


def test_s3_missing_object_is_a_clear_404(s3_app: Any) -> None:
    client = s3_app.test_client()
    seed = Seeder(s3_app)
    row = seed.media_rows(seed.message(items=[Item()]))[0]
    s3_app.extensions["receiver"].store.delete(row["storage_key"])
    resp = fetch(client, row["id"])
    assert resp.status_code == 404
    assert resp.get_json()["error"] == "file_missing"


# -- thumbnails on demand: a stored image never answers 404 ------------------------------


def test_thumbnail_still_queued_is_made_in_the_request_and_recorded(
    client: Any, seed: Seeder, app: Any
) -> None:
    from PIL import Image

    row = first_media(seed, Item(data=samples.jpeg(1200, 900), thumbnail=False))
    assert row["thumbnail_key"] is None
    resp = fetch(client, row["id"], "thumbnail")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(resp.data)) as im:
        assert max(im.size) == 320  # a thumbnail, not the 1200 px original
    recorded = app.extensions["receiver"].index.get_media(row["id"])
    assert recorded.thumbnail_key and recorded.thumbnail_key.endswith(".jpg")
    again = fetch(client, row["id"], "thumbnail")
    assert again.status_code == 200 and again.data == resp.data
    # The page links the thumbnail route, not the full-size original.
    html = client.get(f"/messages/{row['message_sid']}", headers=AUTH).get_data(as_text=True)
    assert f"/api/media/{row['id']}/thumbnail" in html


def test_thumbnail_that_cannot_be_made_falls_back_to_a_browser_safe_original(
    client: Any, seed: Seeder
) -> None:
    damaged = samples.jpeg()[:200]  # stored earlier, damaged since: no thumbnail can come
    row = first_media(seed, Item(data=damaged, thumbnail=False))
    resp = fetch(client, row["id"], "thumbnail")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "image/jpeg" and resp.data == damaged


def test_thumbnail_that_cannot_be_made_of_another_image_type_says_retry(
    client: Any, seed: Seeder
) -> None:
    row = first_media(
        seed,
        Item(detected_type="image/tiff", ext="tiff", data=b"II*\x00" + bytes(64), thumbnail=False),
    )
    resp = fetch(client, row["id"], "thumbnail")
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "5"
    assert resp.get_json()["error"] == "thumbnail_pending"
