"""Sending into a Conversation (group MMS): `send --conversation` and `POST /api/messages`
with "conversation", against the fake MCS/Conversations API and the service on loopback.

Each file is uploaded raw to the conversation's Chat Service, then the message is
created with `Author`, `Body` and one `MediaSid` per message."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from receiver.cli import main
from receiver.errors import OutboundError, TwilioApiError
from receiver.outbound import Outbound, OutboundRequest
from receiver.twilio.signature import compute_signature
from tests.conftest import AUTH
from tests.outbound.conftest import API_KEY, RECIPIENT, SENDER, Running, write
from tests.support import samples
from tests.support.fake_mcs import FakeMcs
from tests.support.fake_twilio import FakeTwilio
from tests.support.mediaserver import MediaServer
from tests.support.webhooks import ACCOUNT_SID, TOKEN, new_sid

SERVICE = "IS" + "c" * 32
BUSINESS = "+15017122661"
MEMBERS = ["+15551230001", "+15551230002"]


def conversation_request(sid: str, *media: str, **kwargs: object) -> OutboundRequest:
    return OutboundRequest(
        to="",
        conversation_sid=sid,
        author=str(kwargs.pop("author", "business")),
        body=str(kwargs.pop("body", "Technician on the way")),
        media=media,
        **kwargs,  # type: ignore[arg-type]
    )


def sender_without_grace(group: Running) -> Outbound:
    """Another sender on the same index (as a later process would be), with no in-flight
    grace, so it resumes cut-off sends at once."""
    svc = group.services
    later = Outbound.build(
        svc.settings,
        svc.index,
        svc.store,
        outbound_index=svc.outbound_index,
        links=svc.links,
        rest=svc.twilio,
        in_flight_grace=0,
    )
    group.built.append(later)
    return later


def test_photos_are_uploaded_to_mcs_and_sent_one_per_message(
    group: Running, mcs: FakeMcs, tmp_path: Path
) -> None:
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    eta = write(tmp_path, "eta.jpg", samples.rotated_jpeg(gps=True))
    map_png = write(tmp_path, "map.png", samples.png(80, 60))
    result = group.outbound.send(conversation_request(sid, eta, map_png))

    assert result.sid is not None and result.sid.startswith("IM")
    assert result.status == "sent" and not result.duplicate
    assert result.prepared is not None and result.prepared.mode == "mms"
    # The conversation was unknown here: its service and members were learnt from Twilio.
    conversations = group.services.conversations.index
    assert conversations.service_of(sid) == SERVICE
    assert {p.address for p in conversations.participants(sid)} >= set(MEMBERS)
    # Uploaded with Basic auth; what MCS holds is exactly what was prepared (EXIF removed).
    assert all(r.authorized for r in mcs.requests)
    sent = [form for conv, form in mcs.created if conv == sid]
    assert [f.get("Body") for f in sent] == ["Technician on the way", None]
    assert all(f["Author"] == "business" for f in sent)
    for form, item in zip(sent, result.prepared.media, strict=True):
        assert form["MediaSid"] == item.media_sid
        stored = mcs.media_bytes(SERVICE, form["MediaSid"])
        assert stored is not None
        assert stored[1] == item.content_type
        assert hashlib.sha256(stored[0]).hexdigest() == item.sha256
    assert "metadata (EXIF/GPS) removed" in result.prepared.media[0].changes
    row = group.services.outbound_index.by_sid(result.sid)
    assert row is not None and row.to_addr == sid and row.from_addr == "business"


def test_same_key_sends_once(group: Running, mcs: FakeMcs) -> None:
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    first = group.outbound.send(conversation_request(sid, idempotency_key="eta-1"))
    again = group.outbound.send(conversation_request(sid, idempotency_key="eta-1"))
    assert again.duplicate and again.sid == first.sid
    assert len(mcs.created) == 1


def test_a_member_who_opted_out_stops_the_group_message(
    group: Running, mcs: FakeMcs, tmp_path: Path
) -> None:
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    group.services.index.record_refusal(MEMBERS[1], BUSINESS)
    photo = write(tmp_path, "eta.jpg", samples.jpeg(64, 48))
    with pytest.raises(OutboundError) as caught:
        group.outbound.send(conversation_request(sid, photo))
    assert caught.value.reason == "opted_out"
    assert MEMBERS[1][-4:] in str(caught.value)
    assert mcs.created == [] and mcs.count(f"/v1/Services/{SERVICE}/Media") == 0


def test_group_mms_needs_us_numbers(group: Running, mcs: FakeMcs, tmp_path: Path) -> None:
    sid = mcs.add_conversation(SERVICE, ["+15551230001", "+447700900123"], BUSINESS)
    photo = write(tmp_path, "eta.jpg", samples.jpeg(64, 48))
    with pytest.raises(OutboundError) as caught:
        group.outbound.send(conversation_request(sid, photo))
    assert caught.value.reason == "mms_not_carried"
    assert mcs.created == []


def test_unknown_conversation_and_bad_upload_credentials_name_the_fix(
    group: Running, mcs: FakeMcs, tmp_path: Path
) -> None:
    with pytest.raises(OutboundError) as caught:
        group.outbound.send(conversation_request("CH" + "0" * 32))
    assert caught.value.reason == "unknown_conversation"

    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    photo = write(tmp_path, "eta.jpg", samples.jpeg(64, 48))
    # An MCS that takes another secret: the upload is refused with HTTP 401.
    with FakeMcs(API_KEY, "another-secret") as other:
        outbound = group.outbound_with(mcs_base=other.url)
        with pytest.raises(OutboundError) as refused:
            outbound.send(conversation_request(sid, photo, idempotency_key="eta-2"))
    assert refused.value.reason == "mcs_refused"
    assert "TWILIO_API_KEY" in str(refused.value)
    assert mcs.created == []
    (row,) = group.services.outbound_index.in_states(["refused"])
    assert row.to_addr == sid


def test_api_sends_into_a_conversation(group: Running, mcs: FakeMcs, media: MediaServer) -> None:
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    url = media.add("/eta.png", samples.png(40, 30), content_type="image/png")
    body = {"conversation": sid, "author": "business", "body": "On my way", "media": [url]}
    resp = requests.post(f"{group.url}/api/messages", json=body, headers=AUTH, timeout=10)
    assert resp.status_code == 201, resp.text
    data = resp.json()
    assert data["sid"].startswith("IM") and data["media"][0]["media_sid"].startswith("ME")
    assert [f.get("Body") for _, f in mcs.created] == ["On my way"]

    for bad, reason in (
        ({"conversation": "CH123", "body": "x"}, "invalid_conversation"),
        ({"conversation": sid, "to": "+15551230001", "body": "x"}, "invalid_conversation"),
    ):
        resp = requests.post(f"{group.url}/api/messages", json=bad, headers=AUTH, timeout=10)
        assert resp.status_code == 422 and resp.json()["error"] == reason
    assert len(mcs.created) == 1


def test_cli_send_conversation(group: Running, mcs: FakeMcs, tmp_path: Path) -> None:
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    photo = write(tmp_path, "eta.png", samples.png(40, 30))
    args = ["send", "--conversation", sid, "--body", "Technician on the way", "--media", photo]
    result = CliRunner().invoke(main, args, env=group.env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"MMS to {sid}" in result.output
    assert [f["Body"] for _, f in mcs.created] == ["Technician on the way"]
    both = CliRunner().invoke(
        main, ["send", "--conversation", sid, "--to", "+15551230001", "--body", "x"], env=group.env
    )
    assert both.exit_code != 0 and "not both" in both.output


def test_refused_create_is_recorded_and_the_key_may_try_again(group: Running, mcs: FakeMcs) -> None:
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    mcs.create_faults.append(400)
    with pytest.raises(TwilioApiError):
        group.outbound.send(conversation_request(sid, idempotency_key="eta-3"))
    (row,) = group.services.outbound_index.in_states(["rejected"])
    assert row.to_addr == sid and row.sid is None
    # Nothing was created, so the same key may send once the problem is fixed.
    result = group.outbound.send(conversation_request(sid, idempotency_key="eta-3"))
    assert result.sid is not None and not result.duplicate
    assert len(mcs.created) == 1


def created_parts(mcs: FakeMcs, sid: str) -> list[tuple[str | None, str | None, int]]:
    """(Body, MediaSid, part) of each message created in the conversation, in order."""
    out = []
    for conv, form in mcs.created:
        if conv == sid:
            mark = json.loads(form["Attributes"])["mms_receiver"]
            out.append((form.get("Body"), form.get("MediaSid"), mark["part"]))
    return out


@pytest.mark.parametrize(
    ("faults", "in_before"),
    [
        (["drop"], 0),  # cut off before Twilio created anything
        (["drop-after"], 1),  # the first part was created, its answer lost
        (["ok", 503], 1),  # the second part failed with 5xx (not repeated blindly)
        ([500], 0),  # a 5xx on the first part: Twilio may or may not have created it
    ],
)
def test_interrupted_send_is_finished_once_by_the_recovery_path(
    group: Running, mcs: FakeMcs, tmp_path: Path, faults: list[int | str], in_before: int
) -> None:
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    photos = [write(tmp_path, f"p{n}.png", samples.png(40 + n, 30)) for n in range(2)]
    mcs.create_faults.extend(faults)
    request = conversation_request(sid, *photos, idempotency_key="cut-1")
    with pytest.raises(TwilioApiError):
        group.outbound.send(request)
    (row,) = group.services.outbound_index.in_states(["submitting"])
    assert len(created_parts(mcs, sid)) == in_before
    uploads = mcs.count(f"/v1/Services/{SERVICE}/Media")

    # Moments later the outcome of the cut-off create is unknown: nothing is sent yet.
    with pytest.raises(OutboundError) as waiting:
        group.outbound.send(request)
    assert waiting.value.reason == "in_flight"
    assert group.outbound.resolve_unknown() == (0, 1)
    assert len(created_parts(mcs, sid)) == in_before

    # After the grace period the recovery path (`reconcile`) finds the parts that are in
    # by the mark in their Attributes and creates only the missing ones.
    svc = group.services
    later = sender_without_grace(group)
    assert later.resolve_unknown() == (1, 0)
    parts = created_parts(mcs, sid)
    assert [(body is not None, part) for body, _, part in parts] == [(True, 0), (False, 1)]
    assert len({media for _, media, _ in parts}) == 2
    assert mcs.count(f"/v1/Services/{SERVICE}/Media") == uploads  # nothing uploaded again
    done = svc.outbound_index.get(row.id)
    assert done is not None and done.status == "sent"
    assert done.sid == mcs.conversations[sid]["messages"][0]["sid"]
    # And the same key again sends nothing.
    again = later.send(request)
    assert again.duplicate and again.sid == done.sid
    assert len(created_parts(mcs, sid)) == 2


def test_the_same_key_resumes_a_cut_off_send_itself(
    group: Running, mcs: FakeMcs, tmp_path: Path
) -> None:
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    mcs.create_faults.append("drop-after")
    request = conversation_request(sid, idempotency_key="cut-2")
    with pytest.raises(TwilioApiError) as lost:
        group.outbound.send(request)
    assert lost.value.maybe_sent
    later = sender_without_grace(group)
    result = later.send(request)
    # The message was in: adopted, not sent again.
    assert result.duplicate and result.status == "sent"
    assert result.sid == mcs.conversations[sid]["messages"][0]["sid"]
    assert len(mcs.created) == 1


def test_reconcile_reads_each_members_receipts_from_the_receipts_resource(
    group: Running, mcs: FakeMcs
) -> None:
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    result = group.outbound.send(conversation_request(sid, idempotency_key="rcpt-1"))
    assert result.sid is not None
    first, second = mcs.conversations[sid]["participants"][:2]
    mcs.add_receipt(result.sid, first["sid"], "delivered")
    mcs.add_receipt(result.sid, second["sid"], "failed", 30008)
    assert group.outbound.refresh_statuses(timedelta(hours=1)) == 2
    receipts = group.services.conversations.index.receipts([result.sid])[result.sid]
    assert {(r.address, r.status, r.error_code) for r in receipts} == {
        (MEMBERS[0], "delivered", None),
        (MEMBERS[1], "failed", 30008),
    }
    # Nothing new: nothing changes.
    assert group.outbound.refresh_statuses(timedelta(hours=1)) == 0


def test_bulk_csv_sends_conversation_rows_through_the_conversation_core(
    group: Running, mcs: FakeMcs, fake: FakeTwilio, tmp_path: Path
) -> None:
    crew = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    other = mcs.add_conversation("IS" + "d" * 32, ["+15551239999"], BUSINESS)
    photo = write(tmp_path, "eta.png", samples.png(40, 30))
    csv_path = tmp_path / "campaign.csv"
    csv_path.write_text(
        "to,body,media,author\n"
        f"{crew},Technician on the way,{photo},dispatch\n"
        f"{other},See you at 3,,\n"
        f"{RECIPIENT},Your order shipped,,\n",
        encoding="utf-8",
    )
    args = ["send", "--to-file", str(csv_path), "--from", SENDER, "--author", "business"]
    first = CliRunner().invoke(main, args, env=group.env, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "sent 3, already sent 0" in first.output
    created = {conv: form for conv, form in mcs.created}
    assert (
        created[crew]["Author"] == "dispatch" and created[crew]["Body"] == "Technician on the way"
    )
    uploaded = mcs.media_bytes(SERVICE, created[crew]["MediaSid"])
    assert uploaded is not None and uploaded[1] == "image/png"
    assert created[other]["Author"] == "business" and "MediaSid" not in created[other]
    assert [m["to"] for m in fake.outbound()] == [RECIPIENT]
    rows = {r.to_addr: r for r in group.services.outbound_index.in_states(["sent", "queued"])}
    assert {crew, other} <= set(rows)

    # The same campaign again sends nothing.
    again = CliRunner().invoke(main, args, env=group.env, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "sent 0, already sent 3" in again.output
    assert len(mcs.created) == 2 and len(fake.outbound()) == 1


def test_concurrent_resumes_create_a_missing_message_once(group: Running, mcs: FakeMcs) -> None:
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    mcs.create_faults.append("drop")  # cut off before anything was created
    request = conversation_request(sid, idempotency_key="cut-3")
    with pytest.raises(TwilioApiError):
        group.outbound.send(request)
    svc = group.services
    later = sender_without_grace(group)

    def attempt(_: int) -> str:
        try:
            return "sent" if later.send(request).sid else "none"
        except OutboundError as exc:
            return exc.reason

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(attempt, range(4)))
    # One attempt created it; the others adopted it or were told another one is under way.
    assert set(outcomes) <= {"sent", "in_flight"} and "sent" in outcomes
    assert len(mcs.created) == 1
    (row,) = svc.outbound_index.in_states(["sent"])
    assert row.sid == mcs.conversations[sid]["messages"][0]["sid"]


def test_a_send_stopped_after_its_uploads_sends_them_without_uploading_again(
    group: Running, mcs: FakeMcs, tmp_path: Path
) -> None:
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    photos = [write(tmp_path, f"q{n}.png", samples.png(30 + n, 30)) for n in range(2)]
    request = conversation_request(sid, *photos, idempotency_key="auth-1")
    # The files are in MCS, then Twilio refuses the create with 401 (a revoked key):
    # nothing was created, the row is pending again with its media SIDs.
    mcs.create_faults.append(401)
    with pytest.raises(TwilioApiError):
        group.outbound.send(request)
    (row,) = group.services.outbound_index.in_states(["pending"])
    uploaded = [m["media_sid"] for m in row.media]
    assert len(uploaded) == 2 and mcs.created == []
    uploads = mcs.count(f"/v1/Services/{SERVICE}/Media")

    result = group.outbound.send(request)
    assert result.sid is not None and not result.duplicate
    assert [f.get("MediaSid") for _, f in mcs.created] == uploaded
    assert mcs.count(f"/v1/Services/{SERVICE}/Media") == uploads


def test_our_own_message_coming_back_is_not_an_arrival(
    group: Running, mcs: FakeMcs, tmp_path: Path
) -> None:
    """Twilio calls onMessageAdded for the messages we create too: ours carry our mark
    and stay outbound only; a member's message in the same conversation is recorded."""
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    photo = write(tmp_path, "eta.jpg", samples.jpeg(64, 48))
    result = group.outbound.send(conversation_request(sid, photo))
    assert result.sid is not None
    ((_, form),) = [c for c in mcs.created if c[0] == sid]
    url = f"{group.url}/twilio/conversations"

    def added(message_sid: str, author: str, attributes: str) -> int:
        params = [
            ("EventType", "onMessageAdded"),
            ("AccountSid", ACCOUNT_SID),
            ("ConversationSid", sid),
            ("ChatServiceSid", SERVICE),
            ("MessageSid", message_sid),
            ("Author", author),
            ("Body", "Technician on the way"),
            ("Attributes", attributes),
            ("Index", "0"),
            ("RetryCount", "0"),
        ]
        signature = compute_signature(TOKEN, url, params)
        resp = requests.post(url, data=params, headers={"X-Twilio-Signature": signature})
        return resp.status_code

    assert added(result.sid, "business", form["Attributes"]) == 200
    api = f"{group.url}/api/messages"
    assert requests.get(f"{api}/{result.sid}", headers=AUTH).status_code == 404
    events = group.services.index.list_events(type="message.received", limit=100)
    assert all(e.data.get("sid") != result.sid for e in events)
    theirs = new_sid("IM")
    assert added(theirs, MEMBERS[0], "{}") == 200
    assert requests.get(f"{api}/{theirs}", headers=AUTH).status_code == 200


def test_messages_without_an_author_are_from_the_configured_one(
    serve: Callable[[dict[str, str]], Running],
    outbound_env: dict[str, str],
    mcs: FakeMcs,
) -> None:
    running = serve(
        {
            **outbound_env,
            "TWILIO_MCS_BASE": mcs.url,
            "TWILIO_CONVERSATIONS_BASE": mcs.url,
            "RECEIVER_CONVERSATION_AUTHOR": "Acme Support",
        }
    )
    sid = mcs.add_conversation(SERVICE, MEMBERS, BUSINESS)
    unnamed = OutboundRequest(to="", conversation_sid=sid, body="On our way")
    running.outbound.send(unnamed)
    running.outbound.send(conversation_request(sid, author="dispatch", body="ETA 10 min"))
    authors = [form["Author"] for conv, form in mcs.created if conv == sid]
    assert authors == ["Acme Support", "dispatch"]
