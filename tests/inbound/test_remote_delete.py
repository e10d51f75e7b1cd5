"""Twilio's copy is deleted only after the stored copy reads back with the same SHA-256."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from receiver.errors import ConfigError
from receiver.settings import Settings
from tests.conftest import ACCOUNT_SID, AUTH, TOKEN, base_env
from tests.support.fake_twilio import FakeTwilio
from tests.support.webhooks import WebhookPoster, inbound_params


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=TOKEN, numbers=["+15557654321"]) as server:
        yield server


def photo() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(buf, "JPEG")
    return buf.getvalue()


def deliver(app: Any, fake: FakeTwilio, data: bytes) -> tuple[str, dict[str, Any]]:
    sid = fake.add_inbound(from_="+15551230001", to="+15557654321", media=[(data, "image/jpeg")])
    (media_sid,) = fake.media[sid]
    url = f"{fake.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media/{media_sid}"
    resp = WebhookPoster(app.test_client()).post(inbound_params(sid, media=[(url, "image/jpeg")]))
    assert resp.status_code == 200
    item = app.test_client().get(f"/api/messages/{sid}", headers=AUTH).get_json()["media"][0]
    assert item["state"] == "stored", item
    return sid, item


def run_remote_deletion(app: Any) -> None:
    """One step of the sweeper's remote-deletion task (built only when it is enabled)."""
    task = app.extensions["receiver"].remote_deletion
    assert task is not None
    task()


def test_remote_copy_deleted_after_verified_readback(make_app: Any, fake: FakeTwilio) -> None:
    app = make_app(
        TWILIO_API_BASE=fake.url,
        RECEIVER_MEDIA_HOSTS=fake.host_port,
        RECEIVER_DELETE_REMOTE_MEDIA="true",
    )
    data = photo()
    sid, item = deliver(app, fake, data)
    # The media URL needed Twilio credentials: they were sent to the account's media path.
    assert item["size_bytes"] == len(data) and item["remote_delete_state"] == "pending"
    run_remote_deletion(app)
    assert fake.media[sid] == {}
    item = app.test_client().get(f"/api/messages/{sid}", headers=AUTH).get_json()["media"][0]
    assert item["remote_delete_state"] == "done"


def test_corrupted_stored_copy_keeps_the_remote_one(make_app: Any, fake: FakeTwilio) -> None:
    app = make_app(
        TWILIO_API_BASE=fake.url,
        RECEIVER_MEDIA_HOSTS=fake.host_port,
        RECEIVER_DELETE_REMOTE_MEDIA="true",
    )
    sid, item = deliver(app, fake, photo())
    store = app.extensions["receiver"].store
    store.put_bytes(item["storage_key"], b"bit rot", content_type="image/jpeg")
    run_remote_deletion(app)
    assert len(fake.media[sid]) == 1
    item = app.test_client().get(f"/api/messages/{sid}", headers=AUTH).get_json()["media"][0]
    assert item["remote_delete_state"] == "mismatch"


def test_remote_deletion_needs_credentials(tmp_path: Any) -> None:
    env = base_env(tmp_path, RECEIVER_DELETE_REMOTE_MEDIA="true")
    env.pop("TWILIO_ACCOUNT_SID")
    with pytest.raises(ConfigError, match="RECEIVER_DELETE_REMOTE_MEDIA needs TWILIO_ACCOUNT_SID"):
        Settings.from_env(env)
