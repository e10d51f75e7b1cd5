"""POST /twilio/conversations: verify, record threads and messages, fetch MCS media later.

Against a fake MCS on loopback (tests/support/fake_mcs.py) that enforces
Basic auth and expiring temporary URLs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from receiver.errors import WebhookError
from receiver.twilio.webhook import parse_conversation_event, parse_conversation_media
from tests.conftest import AUTH
from tests.support.fake_mcs import FakeMcs
from tests.support.mediaserver import MediaServer
from tests.support.samples import jpeg
from tests.support.waiting import wait_for
from tests.support.webhooks import ACCOUNT_SID, TOKEN, WebhookPoster, new_sid

PATH = "/twilio/conversations"
SERVICE = "IS" + "a" * 32


def message_params(
    sid: str,
    conversation: str,
    *,
    media: Sequence[dict[str, Any]] | None = None,
    body: str = "hi",
    index: int = 0,
    author: str = "+15551230001",
    retry: int = 0,
    service: str | None = SERVICE,
    event: str = "onMessageAdded",
) -> list[tuple[str, str]]:
    """An onMessageAdded as Conversations sends it (form fields of
    https://www.twilio.com/docs/conversations/conversations-webhooks)."""
    params = [
        ("EventType", event),
        ("AccountSid", ACCOUNT_SID),
        ("ConversationSid", conversation),
        ("MessageSid", sid),
        ("Index", str(index)),
        ("Author", author),
        ("ParticipantSid", new_sid("MB")),
        ("Body", body),
        ("Attributes", "{}"),
        ("Source", "SMS"),
        ("DateCreated", "2026-12-03T12:00:00.000Z"),
        ("RetryCount", str(retry)),
    ]
    if service is not None:
        params.append(("ChatServiceSid", service))
    if media is not None:
        params.append(("Media", json.dumps(list(media))))
    return params


def participant_params(
    conversation: str, participant: str, address: str, event: str = "onParticipantAdded"
) -> list[tuple[str, str]]:
    return [
        ("EventType", event),
        ("AccountSid", ACCOUNT_SID),
        ("ConversationSid", conversation),
        ("ChatServiceSid", SERVICE),
        ("ParticipantSid", participant),
        ("MessagingBinding.Address", address),
        ("MessagingBinding.ProxyAddress", "+15550009999"),
        ("RetryCount", "0"),
    ]


def media_item(sid: str, content_type: str = "image/jpeg") -> dict[str, Any]:
    return {"Sid": sid, "ContentType": content_type, "Filename": "a.jpg", "Size": 100}


@pytest.fixture
def mcs() -> Iterator[FakeMcs]:
    with FakeMcs(ACCOUNT_SID, TOKEN) as server:
        yield server


@pytest.fixture
def mcs_app(make_app: Any, mcs: FakeMcs) -> Any:
    return make_app(TWILIO_MCS_BASE=mcs.url, RECEIVER_MEDIA_HOSTS=mcs.host_port)


@pytest.fixture
def post(mcs_app: Any) -> WebhookPoster:
    return WebhookPoster(mcs_app.test_client())


def message(client: Any, sid: str) -> dict[str, Any] | None:
    resp = client.get(f"/api/messages/{sid}", headers=AUTH)
    return resp.get_json() if resp.status_code == 200 else None


def media_state(client: Any, sid: str) -> list[tuple[str, str | None]]:
    msg = message(client, sid)
    return [(m["state"], m["reason"]) for m in msg["media"]] if msg else []


# -- parsing -------------------------------------------------------------------


def test_media_list_is_parsed() -> None:
    sid = new_sid("ME")
    (item,) = parse_conversation_media(json.dumps([media_item(sid)]))
    assert (item.sid, item.content_type, item.filename, item.size) == (
        sid,
        "image/jpeg",
        "a.jpg",
        100,
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not valid JSON"),
        ('{"Sid": "x"}', "JSON list"),
        (json.dumps([media_item(new_sid("ME")) for _ in range(50)]), "50 items"),
        (json.dumps([media_item("ME123")]), "no Media SID"),
        (json.dumps([media_item("../../etc/passwd")]), "no Media SID"),
        (json.dumps([{**media_item(new_sid("ME")), "Size": -1}]), "Size"),
        (json.dumps(["ME" + "a" * 32]), "not an object"),
    ],
)
def test_bad_media_lists_are_refused(raw: str, reason: str) -> None:
    with pytest.raises(WebhookError, match=reason):
        parse_conversation_media(raw)


def test_message_events_need_their_sids() -> None:
    params = message_params(new_sid("IM"), new_sid("CH"))
    event = parse_conversation_event(params)
    assert event.retry_count == 0 and event.index == 0 and event.chat_service_sid == SERVICE
    without = [(k, v) for k, v in params if k != "MessageSid"]
    with pytest.raises(WebhookError, match="MessageSid"):
        parse_conversation_event(without)
    wrong = [(k, "SM" + v[2:] if k == "MessageSid" else v) for k, v in params]
    with pytest.raises(WebhookError, match="IM"):
        parse_conversation_event(wrong)


# -- through the app -------------------------------------------------------------


def test_forged_request_is_refused_and_changes_nothing(post: WebhookPoster) -> None:
    sid = new_sid("IM")
    resp = post.post(message_params(sid, new_sid("CH")), path=PATH, signature="forged")
    assert resp.status_code == 403
    assert message(post.client, sid) is None
    unsigned = post.client.post(PATH, data={"EventType": "onMessageAdded"})
    assert unsigned.status_code == 403


@pytest.mark.parametrize(
    ("media", "reason"),
    [
        ("[not json", "not valid JSON"),
        (json.dumps([media_item("ME" + "a" * 31)]), "no Media SID"),
        (json.dumps([media_item(new_sid("ME")) for _ in range(50)]), "50 items"),
    ],
)
def test_bad_media_parameter_is_400_with_a_reason(
    post: WebhookPoster, media: str, reason: str
) -> None:
    sid = new_sid("IM")
    params = [*message_params(sid, new_sid("CH")), ("Media", media)]
    resp = post.post(params, path=PATH)
    assert resp.status_code == 400
    assert reason in resp.get_data(as_text=True)
    assert message(post.client, sid) is None


def test_unknown_event_type_is_200_and_logged_once(
    post: WebhookPoster, caplog: pytest.LogCaptureFixture
) -> None:
    params = [("EventType", "onSomethingNew"), ("AccountSid", ACCOUNT_SID)]
    with caplog.at_level("INFO", logger="receiver.web.hooks"):
        assert post.post(params, path=PATH).status_code == 200
        assert post.post(params, path=PATH).status_code == 200
    logged = [r for r in caplog.records if "onSomethingNew" in r.getMessage()]
    assert len(logged) == 1


def test_group_mms_thread_is_recorded_once_with_media_from_mcs(
    post: WebhookPoster, mcs: FakeMcs
) -> None:
    conversation = new_sid("CH")
    for n, address in enumerate(("+15551230001", "+15551230002", "+15557650000")):
        resp = post.post(participant_params(conversation, f"MB{n:032d}", address), path=PATH)
        assert resp.status_code == 200
    photo = jpeg(64, 48)
    media_sid = mcs.add(SERVICE, photo, "image/jpeg")
    sid = new_sid("IM")
    params = message_params(sid, conversation, media=[media_item(media_sid)], body="look")
    assert post.post(params, path=PATH).status_code == 200
    # A retry (RetryCount=1) stores nothing twice.
    retry = message_params(sid, conversation, media=[media_item(media_sid)], body="look", retry=1)
    assert post.post(retry, path=PATH).status_code == 200
    assert wait_for(lambda: media_state(post.client, sid) == [("stored", None)])
    msg = message(post.client, sid)
    assert msg is not None
    assert msg["body"] == "look" and msg["num_media"] == 1 and msg["from"] == "+15551230001"
    (item,) = msg["media"]
    assert item["kind"] == "image" and item["size_bytes"] == len(photo)
    media_requests = [r for r in mcs.requests if r.path.startswith("/v1/")]
    assert media_requests and all(r.authorized for r in media_requests)
    temporary = [r for r in mcs.requests if r.path.startswith("/temporary/")]
    assert temporary and not any(r.had_authorization for r in temporary)
    svc = post.client.application.extensions["receiver"]
    participants = svc.conversations.index.participants(conversation)
    assert [p.address for p in participants] == ["+15551230001", "+15551230002", "+15557650000"]
    assert svc.conversations.index.message_sids(conversation) == [sid]
    assert svc.conversations.index.get(conversation).chat_service_sid == SERVICE


def test_expired_temporary_url_asks_mcs_again(post: WebhookPoster, mcs: FakeMcs) -> None:
    media_sid = mcs.add(SERVICE, jpeg(32, 32), "image/jpeg")
    mcs.expire_first = 1
    sid = new_sid("IM")
    params = message_params(sid, new_sid("CH"), media=[media_item(media_sid)])
    assert post.post(params, path=PATH).status_code == 200
    assert wait_for(lambda: media_state(post.client, sid) == [("stored", None)])
    assert mcs.count("/v1/") == 2 and mcs.count("/temporary/") == 2


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(401, False), (404, False), (500, True)],
)
def test_mcs_errors_end_in_a_clear_state(
    post: WebhookPoster, mcs: FakeMcs, status: int, retryable: bool
) -> None:
    media_sid = mcs.add(SERVICE, jpeg(32, 32), "image/jpeg")
    mcs.fail_next(status)
    sid = new_sid("IM")
    params = message_params(sid, new_sid("CH"), media=[media_item(media_sid)])
    assert post.post(params, path=PATH).status_code == 200
    assert wait_for(lambda: media_state(post.client, sid) == [("failed", "fetch_failed")])
    svc = post.client.application.extensions["receiver"]
    (item,) = svc.index.media_of(sid)
    assert (item.next_attempt_at is not None) is retryable
    assert f"HTTP {status}" in (item.detail or "")
    if retryable:
        # The sweep retries once the item is due, and MCS answers now.
        svc.index.requeue_failed(sid)
        svc.pipeline.sweep()
        assert media_state(post.client, sid) == [("stored", None)]


def test_temporary_url_on_a_private_address_is_blocked(post: WebhookPoster, mcs: FakeMcs) -> None:
    with MediaServer() as elsewhere:
        mcs.temporary_base = elsewhere.url("").rstrip("/")
        media_sid = mcs.add(SERVICE, jpeg(32, 32), "image/jpeg")
        sid = new_sid("IM")
        params = message_params(sid, new_sid("CH"), media=[media_item(media_sid)])
        assert post.post(params, path=PATH).status_code == 200
        assert wait_for(lambda: media_state(post.client, sid) == [("rejected", "blocked_host")])
        assert elsewhere.requests == []


def test_events_for_an_unseen_conversation_make_a_placeholder_filled_later(
    post: WebhookPoster,
) -> None:
    conversation = new_sid("CH")
    sid = new_sid("IM")
    params = message_params(sid, conversation, service=None, index=3)
    assert post.post(params, path=PATH).status_code == 200
    svc = post.client.application.extensions["receiver"]
    placeholder = svc.conversations.index.get(conversation)
    assert placeholder is not None and placeholder.chat_service_sid is None
    added = [
        ("EventType", "onConversationAdded"),
        ("AccountSid", ACCOUNT_SID),
        ("ConversationSid", conversation),
        ("ChatServiceSid", SERVICE),
        ("FriendlyName", "Kitchen repair"),
        ("State", "active"),
        ("Attributes", "{}"),
    ]
    assert post.post(added, path=PATH).status_code == 200
    filled = svc.conversations.index.get(conversation)
    assert filled.chat_service_sid == SERVICE and filled.friendly_name == "Kitchen repair"
    # Media of a message whose service is unknown cannot be located: 400, nothing kept.
    lost = new_sid("IM")
    other = message_params(lost, new_sid("CH"), service=None, media=[media_item(new_sid("ME"))])
    resp = post.post(other, path=PATH)
    assert resp.status_code == 400 and "ChatServiceSid" in resp.get_data(as_text=True)
    assert message(post.client, lost) is None


def test_updates_and_removals_keep_the_thread_current(post: WebhookPoster) -> None:
    conversation = new_sid("CH")
    sid = new_sid("IM")
    assert post.post(message_params(sid, conversation, body="v1"), path=PATH).status_code == 200
    updated = message_params(sid, conversation, body="v2", event="onMessageUpdated")
    assert post.post(updated, path=PATH).status_code == 200
    assert message(post.client, sid)["body"] == "v2"
    svc = post.client.application.extensions["receiver"]
    removed = message_params(sid, conversation, event="onMessageRemoved")
    assert post.post(removed, path=PATH).status_code == 200
    assert svc.conversations.index.message_sids(conversation) == []
    member = new_sid("MB")
    assert (
        post.post(participant_params(conversation, member, "+15550001"), path=PATH).status_code
        == 200
    )
    moved = participant_params(conversation, member, "+15550002", event="onParticipantUpdated")
    assert post.post(moved, path=PATH).status_code == 200
    assert [p.address for p in svc.conversations.index.participants(conversation)] == ["+15550002"]
    gone = participant_params(conversation, member, "+15550002", event="onParticipantRemoved")
    assert post.post(gone, path=PATH).status_code == 200
    assert svc.conversations.index.participants(conversation) == []
    ended = [
        ("EventType", "onConversationRemoved"),
        ("AccountSid", ACCOUNT_SID),
        ("ConversationSid", conversation),
    ]
    assert post.post(ended, path=PATH).status_code == 200
    assert svc.conversations.index.get(conversation).removed is True


def test_answer_does_not_wait_for_a_slow_mcs(post: WebhookPoster, mcs: FakeMcs) -> None:
    mcs.latency = 1.5
    media_sid = mcs.add(SERVICE, jpeg(32, 32), "image/jpeg")
    sid = new_sid("IM")
    params = message_params(sid, new_sid("CH"), media=[media_item(media_sid)])
    assert post.post(params, path=PATH).status_code == 200
    # Answered while MCS is still thinking: the item is committed, not yet fetched.
    assert media_state(post.client, sid) == [("pending", None)]
    assert wait_for(lambda: media_state(post.client, sid) == [("stored", None)])


# -- the API and the browser ----------------------------------------------------------


def test_api_and_page_show_the_thread_in_index_order(post: WebhookPoster, mcs: FakeMcs) -> None:
    conversation = new_sid("CH")
    for n, address in enumerate(("+15551230001", "+15551230002")):
        params = participant_params(conversation, f"MB{n:032d}", address)
        assert post.post(params, path=PATH).status_code == 200
    later, earlier = new_sid("IM"), new_sid("IM")
    media_sid = mcs.add(SERVICE, jpeg(40, 30), "image/jpeg")
    # Delivered out of order: the thread follows Index, not arrival.
    second = message_params(
        later, conversation, index=1, body="<b>second</b>", author="+15551230002"
    )
    assert post.post(second, path=PATH).status_code == 200
    first = message_params(earlier, conversation, index=0, media=[media_item(media_sid)])
    assert post.post(first, path=PATH).status_code == 200
    assert wait_for(lambda: media_state(post.client, earlier) == [("stored", None)])

    listed = post.client.get("/api/conversations", headers=AUTH).get_json()
    assert conversation in [c["sid"] for c in listed["conversations"]]
    one = post.client.get(f"/api/conversations/{conversation}", headers=AUTH).get_json()
    assert one["sid"] == conversation
    assert [p["address"] for p in one["participants"]] == ["+15551230001", "+15551230002"]
    assert set(one["participants"][0]) == {"sid", "address", "projected_address", "identity"}
    assert [m["sid"] for m in one["messages"]] == [earlier, later]
    assert one["messages"][1]["author"] == "+15551230002"
    assert all(m["conversation_sid"] == conversation for m in one["messages"])
    # The same JSON as /api/messages (less the raw parameters, as in its list), plus each
    # member's delivery receipts.
    alone = message(post.client, later)
    assert alone is not None
    assert {k: v for k, v in alone.items() if k != "params"} == {
        k: v for k, v in one["messages"][1].items() if k != "receipts"
    }
    assert one["messages"][1]["receipts"] == []
    # Existing filters reach conversation messages too.
    found = post.client.get("/api/messages?from=%2B15551230002", headers=AUTH).get_json()
    assert later in [m["sid"] for m in found["messages"]]

    assert post.client.get("/api/conversations").status_code == 401
    assert post.client.get("/api/conversations/CH123", headers=AUTH).status_code == 404

    page = post.client.get(f"/conversations/{conversation}", headers=AUTH)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "&lt;b&gt;second&lt;/b&gt;" in html and "<b>second</b>" not in html
    assert html.index(earlier) < html.index(later)
    assert "+15551230001" in html and "+15551230002" in html
    assert post.client.get(f"/conversations/{new_sid('CH')}", headers=AUTH).status_code == 404
    detail = post.client.get(f"/messages/{later}", headers=AUTH).get_data(as_text=True)
    assert f'href="/conversations/{conversation}"' in detail
