"""The Twilio REST client against the fake API over real HTTP: parameters, auth, errors, retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from receiver.errors import ConfigError, TwilioApiError
from receiver.settings import Settings
from receiver.twilio.rest import RetryPolicy, TwilioRest, TwilioRestError, messaging_base_for
from tests.conftest import ACCOUNT_SID, base_env
from tests.outbound.conftest import API_KEY, API_SECRET, RECIPIENT, SENDER
from tests.support import samples
from tests.support.fake_twilio import FakeTwilio
from tests.support.mediaserver import MediaServer
from tests.support.services import free_port


class Sleeps(list[float]):
    """Records the backoff delays instead of sleeping them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def rest(fake: FakeTwilio, sleeps: Sleeps) -> Any:
    client = TwilioRest(
        ACCOUNT_SID, (API_KEY, API_SECRET), api_base=fake.url, sleep=sleeps, rng=lambda: 1.0
    )
    yield client
    client.close()


def jpeg_url(media: MediaServer, path: str = "/a.jpg") -> str:
    return media.add(path, samples.jpeg(), content_type="image/jpeg")


# -- requests as Twilio documents them ------------------------------------------------


def test_create_message_sends_repeated_media_urls_and_options(
    rest: TwilioRest, fake: FakeTwilio, media: MediaServer
) -> None:
    urls = [
        jpeg_url(media, "/a.jpg"),
        media.add("/b.gif", samples.gif_animated(), content_type="image/gif"),
    ]
    service = fake.add_service()["sid"]
    message = rest.create_message(
        to=RECIPIENT,
        from_=SENDER,
        messaging_service_sid=service,
        body="hi",
        media_urls=urls,
        status_callback="https://example.com/twilio/status",
        validity_period=600,
    )
    assert message["sid"].startswith("MM") and message["status"] == "queued"
    assert message["num_media"] == "2"
    stored = fake.media[message["sid"]]
    assert sorted(m["content_type"] for m in stored.values()) == ["image/gif", "image/jpeg"]
    # Twilio fetches each URL with HEAD and GET, without credentials.
    assert [m for m, _ in fake.media_fetches] == ["HEAD", "GET", "HEAD", "GET"]
    assert all(r.header("authorization") is None for r in media.requests)


def test_api_key_is_preferred_over_the_auth_token(tmp_path: Any, fake: FakeTwilio) -> None:
    env = base_env(
        tmp_path, TWILIO_API_BASE=fake.url, TWILIO_API_KEY=API_KEY, TWILIO_API_SECRET=API_SECRET
    )
    client = TwilioRest.from_settings(Settings.from_env(env))
    client.fetch_message(fake.add_inbound(from_=RECIPIENT, to=SENDER, body="x"))
    assert fake.auth_users == [API_KEY]
    env.pop("TWILIO_API_KEY")
    env.pop("TWILIO_API_SECRET")
    client = TwilioRest.from_settings(Settings.from_env(env))
    client.list_media(fake.add_inbound(from_=RECIPIENT, to=SENDER, body="y"))
    assert fake.auth_users[-1] == ACCOUNT_SID


def test_missing_credentials_name_the_variables(tmp_path: Any) -> None:
    env = base_env(tmp_path)
    env.pop("TWILIO_ACCOUNT_SID")
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID"):
        TwilioRest.from_settings(Settings.from_env(env))
    dev = base_env(tmp_path / "dev")
    dev.pop("TWILIO_AUTH_TOKEN")  # dev mode: the generated token is not a REST credential
    with pytest.raises(ConfigError, match="TWILIO_API_KEY and TWILIO_API_SECRET"):
        TwilioRest.from_settings(Settings.from_env(dev))


def test_messaging_base_follows_the_rest_base() -> None:
    assert messaging_base_for("https://api.twilio.com") == "https://messaging.twilio.com"
    assert messaging_base_for("https://api.dublin.ie1.twilio.com") == (
        "https://messaging.dublin.ie1.twilio.com"
    )
    assert messaging_base_for("http://127.0.0.1:9000") == "http://127.0.0.1:9000"


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "code", "fix"),
    [
        ({"to": "555-0100"}, 21211, "E.164"),
        ({"body": "x" * 1601}, 21658, "1600"),
        ({"from_": "+15005550000"}, 21606, "Twilio number"),
    ],
)
def test_api_errors_carry_code_status_and_fix(
    rest: TwilioRest, kwargs: dict[str, Any], code: int, fix: str
) -> None:
    args = {"to": RECIPIENT, "from_": SENDER, "body": "hello", **kwargs}
    with pytest.raises(TwilioRestError) as info:
        rest.create_message(**args)
    error = info.value
    assert isinstance(error, TwilioApiError)
    assert (error.code, error.status) == (code, 400)
    assert error.more_info == f"https://www.twilio.com/docs/errors/{code}"
    assert fix in str(error)


def test_eleven_media_urls_are_21623(
    rest: TwilioRest, fake: FakeTwilio, media: MediaServer
) -> None:
    urls = [jpeg_url(media, f"/{i}.jpg") for i in range(11)]
    with pytest.raises(TwilioRestError) as info:
        rest.create_message(to=RECIPIENT, from_=SENDER, media_urls=urls)
    assert info.value.code == 21623
    assert fake.outbound() == [] and fake.media_fetches == []


def test_lying_media_type_is_12300_and_oversize_is_11751(
    rest: TwilioRest, fake: FakeTwilio, media: MediaServer
) -> None:
    liar = media.add("/liar.jpg", b"<html><body>Not found</body></html>", content_type="image/jpeg")
    with pytest.raises(TwilioRestError) as info:
        rest.create_message(to=RECIPIENT, from_=SENDER, media_urls=[liar])
    assert info.value.code == 12300 and "Content-Type" in str(info.value)
    big = media.add("/big.mp4", samples.mp4_header(size=3_000_000), content_type="video/mp4")
    with pytest.raises(TwilioRestError) as info:
        rest.create_message(to=RECIPIENT, from_=SENDER, media_urls=[big, big])
    assert info.value.code == 11751 and "5 MB" in str(info.value)
    assert fake.outbound() == []


def test_opted_out_recipient_is_21610(rest: TwilioRest, fake: FakeTwilio) -> None:
    fake.opted_out.add(RECIPIENT)
    with pytest.raises(TwilioRestError) as info:
        rest.create_message(to=RECIPIENT, from_=SENDER, body="promo")
    assert info.value.code == 21610 and "START" in str(info.value)


def test_wrong_credentials_are_401_with_the_fix(fake: FakeTwilio) -> None:
    client = TwilioRest(ACCOUNT_SID, (API_KEY, "wrong"), api_base=fake.url)
    with pytest.raises(TwilioRestError) as info:
        client.create_message(to=RECIPIENT, from_=SENDER, body="hi")
    assert (info.value.status, info.value.code) == (401, 20003)
    assert "TWILIO_API_KEY" in str(info.value)
    assert not info.value.retryable and fake.outbound() == []


# -- retries ----------------------------------------------------------------------------


def test_429_then_201_retries_after_the_retry_after_delay(
    rest: TwilioRest, fake: FakeTwilio, sleeps: Sleeps
) -> None:
    fake.fail_next(2, 429, 20429, retry_after="2")
    message = rest.create_message(to=RECIPIENT, from_=SENDER, body="hi")
    assert message["status"] == "queued"
    assert len(fake.outbound()) == 1
    assert sleeps == [2.0, 2.0]  # max(Retry-After, jitter): jitter here is 0.5 and 1.0


def test_backoff_is_jittered_and_exponential(fake: FakeTwilio, sleeps: Sleeps) -> None:
    draws = iter([0.5, 0.5, 0.5])
    client = TwilioRest(
        ACCOUNT_SID,
        (API_KEY, API_SECRET),
        api_base=fake.url,
        sleep=sleeps,
        rng=lambda: next(draws),
        retry=RetryPolicy(attempts=4, base=1.0, cap=3),
    )
    fake.fail_next(3, 503)
    client.fetch_message(fake.add_inbound(from_=RECIPIENT, to=SENDER, body="x"))
    assert sleeps == [0.5, 1.0, 1.5]  # 0.5 x min(cap, 1, 2, 4)


def test_retry_after_as_an_http_date_is_waited(
    rest: TwilioRest, fake: FakeTwilio, sleeps: Sleeps
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=20)
    fake.fail_next(1, 429, 20429, retry_after=format_datetime(when, usegmt=True))
    rest.create_message(to=RECIPIENT, from_=SENDER, body="hi")
    assert len(sleeps) == 1
    assert 15 <= sleeps[0] <= 20  # the date, not the 0.5 s jitter


def test_500_is_retried_then_reported_and_nothing_is_created(
    rest: TwilioRest, fake: FakeTwilio, sleeps: Sleeps
) -> None:
    fake.fail_next(10, 500, path="Messages.json")
    with pytest.raises(TwilioRestError) as info:
        rest.create_message(to=RECIPIENT, from_=SENDER, body="hi")
    assert info.value.status == 500 and info.value.attempts == 4
    assert "after 4 attempts" in str(info.value) and "try again" in str(info.value)
    assert len(sleeps) == 3 and fake.outbound() == []


def test_500_then_success(rest: TwilioRest, fake: FakeTwilio) -> None:
    fake.fail_next(1, 500)
    assert rest.create_message(to=RECIPIENT, from_=SENDER, body="hi")["sid"]
    assert len(fake.outbound()) == 1


def test_malformed_json_is_a_clear_error(rest: TwilioRest, fake: FakeTwilio) -> None:
    fake.malformed_next(1, 200)
    with pytest.raises(TwilioRestError) as info:
        rest.fetch_message("SM" + "0" * 32)
    assert "not JSON" in str(info.value) and "<html>" in str(info.value)
    assert not info.value.maybe_sent
    fake.malformed_next(1, 201, path="Messages.json")
    with pytest.raises(TwilioRestError) as info:
        rest.create_message(to=RECIPIENT, from_=SENDER, body="hi")
    assert info.value.maybe_sent and "may have taken effect" in str(info.value)


def test_a_lost_answer_to_a_create_is_not_repeated(rest: TwilioRest, fake: FakeTwilio) -> None:
    fake.lose_answer_next(1)
    with pytest.raises(TwilioRestError) as info:
        rest.create_message(to=RECIPIENT, from_=SENDER, body="hi")
    assert info.value.maybe_sent
    assert len(fake.outbound()) == 1  # it did arrive; it was not sent twice


def test_unreachable_api_is_a_transport_error(sleeps: Sleeps) -> None:
    client = TwilioRest(
        ACCOUNT_SID, (API_KEY, API_SECRET), api_base=f"http://127.0.0.1:{free_port()}", sleep=sleeps
    )
    with pytest.raises(TwilioRestError) as info:
        client.create_message(to=RECIPIENT, from_=SENDER, body="hi")
    assert info.value.status == 0 and "TWILIO_API_BASE" in str(info.value)
    assert not info.value.maybe_sent and len(sleeps) == 3  # never connected: safe to retry


# -- reading ------------------------------------------------------------------------------


def test_list_messages_follows_pages_and_filters(rest: TwilioRest, fake: FakeTwilio) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    fake.add_inbound(from_=RECIPIENT, to=SENDER, body="old", date_sent=old)
    recent = {fake.add_inbound(from_=RECIPIENT, to=SENDER, body=str(i)) for i in range(5)}
    listed = list(
        rest.list_messages(date_sent_after=datetime.now(UTC) - timedelta(days=1), page_size=2)
    )
    assert {m["sid"] for m in listed} == recent
    assert sum(1 for method, path in fake.requests if path.endswith("Messages.json")) == 3
    assert [m["sid"] for m in rest.list_messages(to=SENDER, from_="+15550000000")] == []


def test_media_list_fetch_and_delete(rest: TwilioRest, fake: FakeTwilio) -> None:
    sid = fake.add_inbound(
        from_=RECIPIENT,
        to=SENDER,
        media=[(samples.jpeg(), "image/jpeg"), (samples.vcard(), "text/vcard")],
    )
    items = rest.list_media(sid)
    assert [i["content_type"] for i in items] == ["image/jpeg", "text/vcard"]
    one = rest.fetch_media(sid, items[0]["sid"])
    assert one["parent_sid"] == sid
    assert rest.media_url(sid, one["sid"]).startswith(fake.url + "/2010-04-01/Accounts/")
    assert rest.delete_media(sid, one["sid"]) is True
    assert rest.delete_media(sid, one["sid"]) is False  # already gone (404)


def test_phone_number_lookup_and_update(rest: TwilioRest, fake: FakeTwilio) -> None:
    found = rest.find_incoming_number(SENDER)
    assert found is not None and found["sid"].startswith("PN")
    assert rest.find_incoming_number("+15550009999") is None
    updated = rest.update_incoming_number(
        found["sid"], {"SmsUrl": "https://x.example/t", "SmsMethod": "POST"}
    )
    assert updated["sms_url"] == "https://x.example/t"


def test_messaging_service_fetch_and_update(rest: TwilioRest, fake: FakeTwilio) -> None:
    sid = fake.add_service()["sid"]
    assert rest.fetch_messaging_service(sid)["sid"] == sid
    changed = rest.update_messaging_service(sid, {"InboundRequestUrl": "https://x.example/in"})
    assert changed["inbound_request_url"] == "https://x.example/in"
    assert ("POST", f"/v1/Services/{sid}") in fake.requests


def test_credentials_never_leave_the_configured_origins(rest: TwilioRest) -> None:
    with pytest.raises(TwilioRestError, match="refusing to send Twilio credentials"):
        rest._call("GET", "http://attacker.example/2010-04-01/x.json")
