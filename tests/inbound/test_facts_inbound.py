"""The "correct facts" corpus through the real webhook, pipeline, API and page."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree

from tests.conftest import AUTH
from tests.support import facts_corpus
from tests.support.mediaserver import MediaServer
from tests.support.samples import jpeg
from tests.support.webhooks import WebhookPoster, inbound_params, media_path, new_sid


@pytest.fixture
def app(make_app: Any, media_server: MediaServer) -> Any:
    return make_app(RECEIVER_MEDIA_HOSTS=media_server.host_port)


def post(
    app: Any, media_server: MediaServer, files: list[tuple[bytes, str]]
) -> tuple[str, str, dict[str, Any]]:
    """Post one MMS carrying `files`; (message SID, reply text, message JSON)."""
    sid = new_sid()
    media = [
        (media_server.add(media_path(sid, i), data, content_type=ctype), ctype)
        for i, (data, ctype) in enumerate(files)
    ]
    resp = WebhookPoster(app.test_client()).post(inbound_params(sid, media=media))
    assert resp.status_code == 200
    reply = " ".join(etree.fromstring(resp.data).itertext()).strip()
    got = app.test_client().get(f"/api/messages/{sid}", headers=AUTH)
    assert got.status_code == 200
    return sid, reply, got.get_json()


def test_smil_part_is_kept_as_presentation_and_not_counted(
    app: Any, media_server: MediaServer
) -> None:
    layout = facts_corpus.smil(("img", "photo.jpg"))
    sid, reply, msg = post(
        app, media_server, [(layout, "application/smil"), (jpeg(), "image/jpeg")]
    )
    assert reply.startswith("Got a photo,"), reply
    assert "could not be accepted" not in reply and "file" not in reply
    assert msg["state"] == "complete"
    smil, photo = msg["media"]
    assert (smil["kind"], smil["state"], smil["detected_type"]) == (
        "presentation",
        "stored",
        "application/smil+xml",
    )
    assert smil["storage_key"].endswith(".smil") and photo["state"] == "stored"
    # The raw parameters still name the part the carrier sent.
    assert ["MediaContentType0", "application/smil"] in msg["params"]
    page = app.test_client().get(f"/messages/{sid}", headers=AUTH)
    assert page.status_code == 200 and "application/smil" in page.get_data(as_text=True)


def test_a_message_of_only_a_smil_part_does_not_claim_an_attachment(
    app: Any, media_server: MediaServer
) -> None:
    _, reply, msg = post(app, media_server, [(facts_corpus.smil(), "application/smil")])
    assert "Got" not in reply and "could not be accepted" not in reply
    assert msg["state"] == "complete"


def test_accepted_type_mismatch_has_a_detail(app: Any, media_server: MediaServer) -> None:
    _, reply, msg = post(app, media_server, [(jpeg(), "image/png")])
    (item,) = msg["media"]
    assert item["state"] == "stored" and item["type_mismatch"] is True
    assert item["detail"] == "declared image/png, bytes are image/jpeg"
    assert reply.startswith("Got a photo")


def test_amr_wb_is_stored_and_served_as_amr_wb(app: Any, media_server: MediaServer) -> None:
    data = facts_corpus.amr_wb()
    _, reply, msg = post(app, media_server, [(data, "audio/amr")])
    (item,) = msg["media"]
    assert (item["detected_type"], item["kind"], item["state"]) == (
        "audio/amr-wb",
        "audio",
        "stored",
    )
    assert item["storage_key"].endswith(".awb")
    assert item["detail"] == "declared audio/amr, bytes are audio/amr-wb"
    assert reply.startswith("Got an audio clip")
    resp = app.test_client().get(f"/api/media/{item['id']}/content", headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "audio/amr-wb" and resp.data == data


def test_every_contact_of_an_address_book_is_listed(app: Any, media_server: MediaServer) -> None:
    sid, _, msg = post(app, media_server, [(facts_corpus.address_book(3), "text/x-vcard")])
    (item,) = msg["media"]
    assert [c["name"] for c in item["contacts"]] == ["Contact 1", "Contact 2", "Contact 3"]
    assert item["contact"]["name"] == "Contact 1"
    html = app.test_client().get(f"/messages/{sid}", headers=AUTH).get_data(as_text=True)
    for i in (1, 2, 3):
        assert f"Contact {i}" in html and f"+1555010000{i}" in html


@pytest.mark.parametrize(
    "card", facts_corpus.CHARSET_CARDS[:3], ids=[c.label for c in facts_corpus.CHARSET_CARDS[:3]]
)
def test_shift_jis_card_reads_right_on_the_api_and_the_page(
    app: Any, media_server: MediaServer, card: facts_corpus.CharsetCard
) -> None:
    sid, _, msg = post(app, media_server, [(card.data(), "text/x-vcard")])
    (item,) = msg["media"]
    assert item["contact"]["name"] == card.name and item["contact"]["org"] == card.org
    html = app.test_client().get(f"/messages/{sid}", headers=AUTH).get_data(as_text=True)
    assert card.name in html


def test_voice_memo_in_3gpp_is_an_audio_clip_with_its_facts(
    app: Any, media_server: MediaServer
) -> None:
    from tests.support import avfiles

    _, reply, msg = post(app, media_server, [(avfiles.voice_memo_3gp(), "audio/3gpp")])
    (item,) = msg["media"]
    assert (item["detected_type"], item["kind"], item["state"]) == ("audio/3gpp", "audio", "stored")
    assert item["type_mismatch"] is False and item["detail"] is None
    assert item["codecs"] == ["aac"] and item["duration_seconds"] == pytest.approx(2.0, abs=0.2)
    assert "3gp" in item["container"]
    assert reply.startswith("Got an audio clip"), reply


def test_check_says_whether_ffprobe_is_there(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from receiver.cli import main
    from tests.conftest import base_env

    out = CliRunner().invoke(main, ["check"], env=base_env(tmp_path)).output
    assert "ffprobe: ok  ffprobe version" in out
    missing = CliRunner().invoke(
        main, ["check"], env={**base_env(tmp_path), "PATH": "/nonexistent"}
    )
    assert "ffprobe: missing (apt-get install ffmpeg)" in missing.output


def test_message_page_shows_codecs_and_duration(app: Any, media_server: MediaServer) -> None:
    from tests.support import avfiles

    sid, _, _ = post(app, media_server, [(avfiles.video_3gp(), "video/3gpp")])
    html = app.test_client().get(f"/messages/{sid}", headers=AUTH).get_data(as_text=True)
    assert "<dt>Codecs</dt><dd>h263, aac, 2.0 s</dd>" in html
