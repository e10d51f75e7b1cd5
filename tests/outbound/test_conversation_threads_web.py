"""Conversation threads in the inbox: the list row, the thread page, and replies into the
conversation through the send core, against the fake Conversations API and MCS on loopback.

Also: outbound messages of every thread show the files they sent.
"""

from __future__ import annotations

import html
import io
import json
import re
from datetime import timedelta
from typing import Any

from tests.outbound.conftest import RECIPIENT, SENDER, Running
from tests.support import samples
from tests.support.fake_mcs import FakeMcs
from tests.support.fake_twilio import FakeTwilio
from tests.support.waiting import wait_for
from tests.support.webhooks import ACCOUNT_SID, WebhookPoster, inbound_params, new_sid
from tests.web.conftest import csrf_of, login

SERVICE = "IS" + "d" * 32
BUSINESS = "+15017122661"
MEMBERS = ["+15551230001", "+15551230002"]


def _event(conversation: str, **fields: str) -> list[tuple[str, str]]:
    return [
        ("AccountSid", ACCOUNT_SID),
        ("ConversationSid", conversation),
        ("ChatServiceSid", SERVICE),
        ("RetryCount", "0"),
        *fields.items(),
    ]


def _photo_from_member(group: Running, mcs: FakeMcs, conversation: str) -> tuple[Any, str]:
    """A member's photo arrives through the Conversations webhook; (browser, message SID)."""
    client = group.app.test_client()
    poster = WebhookPoster(client, base=group.url)
    path = "/twilio/conversations"
    event = _event(conversation, EventType="onConversationAdded", FriendlyName="Parcel 42")
    assert poster.post(event, path=path).status_code == 200
    photo = samples.jpeg(120, 90)
    media_sid = mcs.add(SERVICE, photo, "image/jpeg")
    sid = new_sid("IM")
    media = [{"Sid": media_sid, "ContentType": "image/jpeg", "Filename": "door.jpg", "Size": 1}]
    added = _event(
        conversation,
        EventType="onMessageAdded",
        MessageSid=sid,
        Index="0",
        Author=MEMBERS[0],
        ParticipantSid=new_sid("MB"),
        Body="The parcel is damaged",
        Attributes="{}",
        Source="SMS",
        Media=json.dumps(media),
    )
    assert poster.post(added, path=path).status_code == 200
    index = group.services.index

    def stored() -> bool:
        found = index.get_message(sid)
        return found is not None and [m.state for m in found.media] == ["stored"]

    assert wait_for(stored, seconds=15)
    assert login(client, next_path="/inbox").status_code in (302, 303)
    return client, sid


def _form(client: Any, thread: str) -> dict[str, str]:
    page = client.get(f"/inbox/{thread}").get_data(as_text=True)
    key = re.search(r'name="reply_key" value="([^"]+)"', page)
    assert key, "no reply form on the thread page"
    return {"csrf_token": csrf_of(client, f"/inbox/{thread}"), "reply_key": key.group(1)}


def test_a_conversation_is_one_inbox_thread_answered_through_mcs(
    group: Running, mcs: FakeMcs
) -> None:
    conversation = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    client, sid = _photo_from_member(group, mcs, conversation)

    inbox = html.unescape(client.get("/inbox").get_data(as_text=True))
    assert f'href="/inbox/{conversation}"' in inbox and "Parcel 42" in inbox
    assert f"{MEMBERS[0]}: The parcel is damaged" in inbox
    assert "/api/media/" in inbox  # the photo's thumbnail
    # No "<ours>~<author>" thread for the group's message.
    assert f"~{MEMBERS[0]}" not in inbox

    page = html.unescape(client.get(f"/inbox/{conversation}").get_data(as_text=True))
    assert "Parcel 42" in page and MEMBERS[0] in page and "The parcel is damaged" in page
    assert re.search(r'<img src="/api/media/\d+/thumbnail"', page)

    # The preview is a dry run: nothing uploaded, nothing created.
    fields = _form(client, conversation)
    heic = samples.heic(640, 480)
    media_calls = mcs.count(f"/v1/Services/{SERVICE}/Media")  # the inbound photo's
    preview = client.post(
        f"/api/threads/{conversation}/replies/preview",
        data={"files": [(io.BytesIO(heic), "photo.heic")]},
        headers={"X-CSRF-Token": fields["csrf_token"]},
        content_type="multipart/form-data",
    )
    assert preview.status_code == 200, preview.get_data(as_text=True)
    assert preview.get_json()["files"][0]["content_type"] == "image/jpeg"
    assert mcs.created == [] and mcs.count(f"/v1/Services/{SERVICE}/Media") == media_calls

    form = {**fields, "body": "A technician is on the way"}
    resp = client.post(
        f"/inbox/{conversation}/reply",
        data={**form, "files": [(io.BytesIO(heic), "photo.heic")]},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 303, resp.get_data(as_text=True)
    ((into, created),) = mcs.created
    assert into == conversation and created["Body"] == "A technician is on the way"
    uploaded = mcs.media_bytes(SERVICE, created["MediaSid"])
    assert uploaded is not None and uploaded[1] == "image/jpeg"
    assert uploaded[0][:3] == b"\xff\xd8\xff"
    # The same form again: sent once.
    again = client.post(
        f"/inbox/{conversation}/reply",
        data={**form, "files": [(io.BytesIO(heic), "photo.heic")]},
        content_type="multipart/form-data",
    )
    assert again.status_code == 303 and len(mcs.created) == 1

    (row,) = group.services.outbound_index.in_states(["sent"])
    assert row.to_addr == conversation and row.sid is not None
    # Each member's delivery receipt, as reconcile reads them from the Receipts resource.
    people = {
        p.address: p.sid for p in group.services.conversations.index.participants(conversation)
    }
    mcs.add_receipt(row.sid, people[MEMBERS[0]], "delivered")
    mcs.add_receipt(row.sid, people[MEMBERS[1]], "undelivered", error_code=30003)
    assert group.outbound.refresh_statuses(timedelta(hours=1)) >= 2

    page = html.unescape(client.get(f"/inbox/{conversation}").get_data(as_text=True))
    assert "sent by admin" in page and "A technician is on the way" in page
    assert "photo.jpg" in page and "image/jpeg" in page  # the file it sent
    assert re.search(rf"{re.escape(MEMBERS[0])}</span>: <span[^>]*>delivered", page)
    assert re.search(rf"{re.escape(MEMBERS[1])}</span>: <span[^>]*>undelivered", page)
    assert "30003" in page
    # The thread has no second entry for a message it holds once.
    assert page.count("The parcel is damaged") == 1
    summary = client.get("/inbox").get_data(as_text=True)
    assert "1 in, 1 out" in summary


def test_a_member_who_opted_out_disables_the_box_and_refuses_a_direct_post(
    group: Running, mcs: FakeMcs
) -> None:
    conversation = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    client, _ = _photo_from_member(group, mcs, conversation)
    # Learn the members (as a first send would), then one of them replies STOP.
    sender = group.services.outbound.conversation
    assert sender is not None
    sender.members(sender.rest(), conversation)
    group.services.index.record_refusal(MEMBERS[1], BUSINESS)

    page = html.unescape(client.get(f"/inbox/{conversation}").get_data(as_text=True))
    assert "<fieldset disabled" in page
    assert "opted out (replied STOP)" in page and MEMBERS[1][-4:] in page
    inbox = client.get("/inbox").get_data(as_text=True)
    assert "opted out (replied STOP)" in inbox

    fields = _form(client, conversation)
    resp = client.post(
        f"/inbox/{conversation}/reply",
        data={**fields, "body": "hello"},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 409
    assert "opted out" in html.unescape(resp.get_data(as_text=True))
    api = client.post(
        f"/api/threads/{conversation}/replies",
        json={"body": "hello"},
        headers={"X-CSRF-Token": fields["csrf_token"]},
    )
    assert api.status_code == 409 and api.get_json()["error"] == "opted_out"
    assert mcs.created == []
    assert group.services.outbound_index.in_states(["pending", "refused", "sent"]) == []


def test_a_reply_shows_the_file_it_sent_through_a_signed_link(
    service: Running, fake: FakeTwilio
) -> None:
    client = service.app.test_client()
    poster = WebhookPoster(client, base=service.url)
    params = inbound_params(body="Photo please", from_=RECIPIENT, to=SENDER)
    assert poster.post(params).status_code == 200
    assert login(client, next_path="/inbox").status_code in (302, 303)
    thread = f"{SENDER}~{RECIPIENT}"
    fields = _form(client, thread)
    resp = client.post(
        f"/inbox/{thread}/reply",
        data={**fields, "body": "here", "files": [(io.BytesIO(samples.png(80, 60)), "map.png")]},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 303, resp.get_data(as_text=True)
    assert len(fake.outbound()) == 1

    page = client.get(f"/inbox/{thread}").get_data(as_text=True)
    found = re.search(r'<img src="(/m/[^"]+)" alt="sent image ([^"]+)"', page)
    assert found, page
    served = client.get(found.group(1))
    assert served.status_code == 200 and served.mimetype == "image/png"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert served.get_data()[:8] == b"\x89PNG\r\n\x1a\n"
    inbox = client.get("/inbox").get_data(as_text=True)
    assert 'alt="sent image' in inbox
