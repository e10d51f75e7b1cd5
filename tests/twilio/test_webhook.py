"""Inbound-message and status-callback parsing: real captures, channels, every malformed case."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.errors import WebhookError
from receiver.twilio.webhook import (
    Address,
    InboundMessage,
    MediaRef,
    StatusCallback,
    inbound_from_rest,
    parse_address,
    parse_inbound,
    parse_status,
)

# A real inbound MMS as captured and published in the Go project github.com/sgryczan/photoGallery,
# byte for byte, except that the capture's elided ids ("MM0ab8…", "AC5106…", "+1888…") are
# completed to full-length values. Twilio documents the parameters at
# https://www.twilio.com/docs/messaging/guides/webhook-request.
MESSAGE_SID = "MM0ab8c1d2e3f40516273849a0b1c2d3e4"
ACCOUNT_SID = "AC5106f1e2d3c4b5a69788796a5b4c3d2e"
MEDIA_SID = "ME0123456789abcdef0123456789abcdef"
MEDIA_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{MESSAGE_SID}/Media/{MEDIA_SID}"
CAPTURED = (
    f"ToCountry=US&MediaContentType0=image%2Fjpeg&ToState=CO&SmsMessageSid={MESSAGE_SID}&NumMedia=1"
    f"&ToCity=&FromZip=80204&SmsSid={MESSAGE_SID}&FromState=CO&SmsStatus=received&FromCity=DENVER"
    f"&Body=Test&FromCountry=US&To=%2B18885550100&ToZip=&NumSegments=1&MessageSid={MESSAGE_SID}"
    f"&AccountSid={ACCOUNT_SID}&From=%2B17205550123"
    f"&MediaUrl0=https%3A%2F%2Fapi.twilio.com%2F2010-04-01%2FAccounts%2F{ACCOUNT_SID}%2FMessages"
    f"%2F{MESSAGE_SID}%2FMedia%2F{MEDIA_SID}&ApiVersion=2010-04-01"
)
CAPTURED_PARAMS = parse_qsl(CAPTURED, keep_blank_values=True)

SM_SID = "SM" + "a" * 32
STATUS_CAPTURE = (
    f"RawDlrDoneDate=2303222338&SmsSid={SM_SID}&SmsStatus=delivered&MessageStatus=delivered"
    f"&To=%2B15558675310&MessageSid={SM_SID}&AccountSid={ACCOUNT_SID}&From=%2B15017122661"
    "&ApiVersion=2010-04-01"
)


def minimal(**overrides):
    params = {
        "MessageSid": SM_SID,
        "AccountSid": ACCOUNT_SID,
        "From": "+15558675310",
        "To": "+15017122661",
        "Body": "hello",
        "NumMedia": "0",
    }
    params.update(overrides)
    return [(k, v) for k, v in params.items() if v is not None]


def test_captured_mms_parses():
    msg = parse_inbound(CAPTURED_PARAMS)
    assert isinstance(msg, InboundMessage)
    assert msg.message_sid == MESSAGE_SID
    assert msg.account_sid == ACCOUNT_SID
    assert msg.messaging_service_sid is None
    assert msg.from_ == Address(raw="+17205550123", channel="sms", address="+17205550123")
    assert msg.to.address == "+18885550100"
    assert msg.channel == "sms"
    assert msg.body == "Test"
    assert msg.num_media == 1 and msg.num_segments == 1
    assert msg.media == (MediaRef(index=0, url=MEDIA_URL, content_type="image/jpeg"),)
    assert msg.media[0].media_sid == MEDIA_SID
    assert (msg.from_city, msg.from_state, msg.from_zip, msg.from_country) == (
        "DENVER",
        "CO",
        "80204",
        "US",
    )
    assert (msg.to_city, msg.to_state, msg.to_zip, msg.to_country) == (None, "CO", None, "US")
    assert msg.api_version == "2010-04-01" and msg.sms_status == "received"
    assert msg.opt_out_type is None and msg.profile_name is None and msg.wa_id is None
    assert msg.params == tuple(CAPTURED_PARAMS)
    assert msg.param("SmsSid") == MESSAGE_SID and msg.param("Nope") is None


def test_message_is_immutable():
    msg = parse_inbound(minimal())
    with pytest.raises(AttributeError):
        msg.body = "changed"


def test_plain_sms_and_empty_body():
    msg = parse_inbound(minimal(Body=None, NumMedia=None))
    assert msg.body == "" and msg.num_media == 0 and msg.media == () and msg.num_segments is None


def test_body_kept_exactly():
    body = "  <b>hi</b> & 'bye'\n😀  "
    assert parse_inbound(minimal(Body=body)).body == body


def test_ten_media_with_and_without_sids():
    extra = {}
    for i in range(10):
        extra[f"MediaUrl{i}"] = (
            f"http://127.0.0.1:8000/files/{i}.jpg" if i % 2 else f"{MEDIA_URL[:-2]}{i:02d}"
        )
        extra[f"MediaContentType{i}"] = "image/png" if i != 3 else ""
    msg = parse_inbound(minimal(NumMedia="10", **extra))
    assert [m.index for m in msg.media] == list(range(10))
    assert msg.media[0].media_sid == MEDIA_SID[:-2] + "00"
    assert msg.media[1].media_sid is None
    assert msg.media[3].content_type is None


@pytest.mark.parametrize(
    ("raw", "channel", "address"),
    [
        ("+15558675310", "sms", "+15558675310"),
        ("whatsapp:+15558675310", "whatsapp", "+15558675310"),
        ("WhatsApp:+15558675310", "whatsapp", "+15558675310"),
        ("messenger:1234567890", "messenger", "1234567890"),
        ("rcs:+15558675310", "rcs", "+15558675310"),
        ("rcs:acme_agent", "rcs", "acme_agent"),
        ("Acme", "sms", "Acme"),
        ("12345", "sms", "12345"),
    ],
)
def test_parse_address_channels(raw, channel, address):
    assert parse_address(raw) == Address(raw=raw, channel=channel, address=address)


@pytest.mark.parametrize("raw", ["", " ", "whatsapp:", "rcs: "])
def test_parse_address_empty(raw):
    with pytest.raises(WebhookError):
        parse_address(raw)


def test_whatsapp_message():
    msg = parse_inbound(
        minimal(
            From="whatsapp:+15558675310",
            To="whatsapp:+14155238886",
            ProfileName="Ada",
            WaId="15558675310",
            MessagingServiceSid="MG" + "b" * 32,
        )
    )
    assert msg.channel == "whatsapp" and msg.to.channel == "whatsapp"
    assert msg.profile_name == "Ada" and msg.wa_id == "15558675310"
    assert msg.messaging_service_sid == "MG" + "b" * 32


def test_unknown_and_repeated_params_kept_in_order():
    params = [
        *minimal(),
        ("AddOns", '{"status":"successful"}'),
        ("Latitude", "40.1"),
        ("X", "1"),
        ("X", "2"),
    ]
    msg = parse_inbound(params)
    assert msg.params == tuple(params)
    assert msg.to_params_dict()["X"] == ["1", "2"]
    assert msg.to_params_dict()["AddOns"] == ['{"status":"successful"}']


def test_core_field_repeated_with_same_value_is_fine():
    msg = parse_inbound([*minimal(), ("MessageSid", SM_SID), ("From", "+15558675310")])
    assert msg.message_sid == SM_SID


def test_opt_out_type_kept():
    assert parse_inbound(minimal(Body="stop", OptOutType="STOP")).opt_out_type == "STOP"


def without(name):
    return [(k, v) for k, v in minimal() if k != name]


MALFORMED = [
    pytest.param(without("MessageSid"), "MessageSid", id="missing-MessageSid"),
    pytest.param(
        [*without("MessageSid"), ("SmsMessageSid", SM_SID), ("SmsSid", SM_SID)],
        "MessageSid",
        id="only-SmsSid-aliases",
    ),
    pytest.param(minimal(MessageSid=""), "MessageSid", id="empty-MessageSid"),
    pytest.param(minimal(MessageSid="SM123"), "MessageSid", id="short-MessageSid"),
    pytest.param(minimal(MessageSid="XX" + "a" * 32), "MessageSid", id="wrong-prefix-MessageSid"),
    pytest.param(minimal(MessageSid="SM" + "a" * 33), "MessageSid", id="long-MessageSid"),
    pytest.param(
        minimal(MessageSid="SM../../../../etc/passwd" + "a" * 10),
        "MessageSid",
        id="path-MessageSid",
    ),
    pytest.param(minimal(MessageSid="SM" + "é" * 32), "MessageSid", id="non-ascii-MessageSid"),
    # Twilio's SIDs are 32 hexadecimal digits after the prefix, nothing else.
    pytest.param(minimal(MessageSid="SM" + "z" * 32), "MessageSid", id="non-hex-MessageSid"),
    pytest.param(minimal(MessageSid="SM" + "a" * 32 + "\n"), "MessageSid", id="newline-MessageSid"),
    pytest.param(without("AccountSid"), "AccountSid", id="missing-AccountSid"),
    pytest.param(minimal(AccountSid="AC/" + "a" * 31), "AccountSid", id="bad-AccountSid"),
    pytest.param(
        minimal(MessagingServiceSid="MG1"), "MessagingServiceSid", id="bad-MessagingServiceSid"
    ),
    pytest.param(without("From"), "From", id="missing-From"),
    pytest.param(minimal(From=""), "From", id="empty-From"),
    pytest.param(minimal(From="whatsapp:"), "From", id="prefix-only-From"),
    pytest.param(without("To"), "To", id="missing-To"),
    pytest.param(minimal(NumMedia="abc"), "NumMedia", id="NumMedia-text"),
    pytest.param(minimal(NumMedia="-1"), "NumMedia", id="NumMedia-negative"),
    pytest.param(minimal(NumMedia="1.0"), "NumMedia", id="NumMedia-float"),
    pytest.param(minimal(NumMedia="+1"), "NumMedia", id="NumMedia-plus"),
    pytest.param(minimal(NumMedia=" 1"), "NumMedia", id="NumMedia-space"),
    pytest.param(minimal(NumMedia="١"), "NumMedia", id="NumMedia-arabic-digit"),
    pytest.param(minimal(NumMedia="11"), "NumMedia", id="NumMedia-11"),
    pytest.param(minimal(NumMedia="9" * 5000), "NumMedia", id="NumMedia-huge"),
    pytest.param(minimal(NumMedia="1"), "MediaUrl0", id="missing-MediaUrl0"),
    pytest.param(minimal(NumMedia="1", MediaUrl0=""), "MediaUrl0", id="empty-MediaUrl0"),
    pytest.param(minimal(NumMedia="2", MediaUrl0=MEDIA_URL), "MediaUrl1", id="missing-MediaUrl1"),
    pytest.param(minimal(NumMedia="2", MediaUrl1=MEDIA_URL), "MediaUrl0", id="gap-MediaUrl0"),
    pytest.param(
        minimal(NumMedia="1", MediaUrl0="ftp://api.twilio.com/x"), "MediaUrl0", id="ftp-MediaUrl0"
    ),
    pytest.param(
        minimal(NumMedia="1", MediaUrl0="file:///etc/passwd"), "MediaUrl0", id="file-MediaUrl0"
    ),
    pytest.param(
        minimal(NumMedia="1", MediaUrl0="javascript:alert(1)"),
        "MediaUrl0",
        id="javascript-MediaUrl0",
    ),
    pytest.param(
        minimal(NumMedia="1", MediaUrl0="/2010-04-01/Media/x"), "MediaUrl0", id="relative-MediaUrl0"
    ),
    pytest.param(minimal(NumMedia="1", MediaUrl0="https://"), "MediaUrl0", id="no-host-MediaUrl0"),
    pytest.param(
        minimal(NumMedia="1", MediaUrl0="https://api.twilio.com:99999/x"),
        "MediaUrl0",
        id="bad-port-MediaUrl0",
    ),
    pytest.param(
        minimal(NumMedia="1", MediaUrl0="http://[::1/x"), "MediaUrl0", id="bad-ipv6-MediaUrl0"
    ),
    pytest.param(
        minimal(NumMedia="1", MediaUrl0="https://api.twilio.com/a b"),
        "MediaUrl0",
        id="space-MediaUrl0",
    ),
    pytest.param(
        minimal(NumMedia="1", MediaUrl0="https://api.twilio.com/x\r\nHost: evil"),
        "MediaUrl0",
        id="crlf-MediaUrl0",
    ),
    pytest.param(
        minimal(NumMedia="1", MediaUrl0="https://api.twilio.com/Media/ME..%2F..%2Fx"),
        "MediaUrl0",
        id="bad-MediaSid",
    ),
    pytest.param(
        minimal(NumMedia="1", MediaUrl0=MEDIA_URL, MediaUrl1=MEDIA_URL),
        "MediaUrl1",
        id="extra-MediaUrl1",
    ),
    pytest.param(
        minimal(NumMedia=None, MediaUrl0=MEDIA_URL), "MediaUrl0", id="MediaUrl0-without-NumMedia"
    ),
    pytest.param(minimal(NumSegments="two"), "NumSegments", id="NumSegments-text"),
    pytest.param(
        [*minimal(), ("MessageSid", "SM" + "b" * 32)], "MessageSid", id="repeated-MessageSid"
    ),
    pytest.param([*minimal(), ("From", "+15550000000")], "From", id="repeated-From"),
    pytest.param([*minimal(), ("NumMedia", "1")], "NumMedia", id="repeated-NumMedia"),
    pytest.param(
        [*minimal(NumMedia="1", MediaUrl0=MEDIA_URL), ("MediaUrl0", MEDIA_URL + "x")],
        "MediaUrl0",
        id="repeated-MediaUrl0",
    ),
    pytest.param(minimal(Body="a\x00b"), "Body", id="nul-in-Body"),
    pytest.param(minimal(Body="\ud800"), "Body", id="surrogate-in-Body"),
    pytest.param([*minimal(), ("X\x00", "1")], "X", id="nul-in-name"),
]


@pytest.mark.parametrize(("params", "name"), MALFORMED)
def test_malformed_inbound(params, name):
    with pytest.raises(WebhookError) as info:
        parse_inbound(params)
    assert name in str(info.value)


def test_error_message_is_bounded():
    with pytest.raises(WebhookError) as info:
        parse_inbound(minimal(MessageSid="SM" + "x" * 100_000))
    assert len(str(info.value)) < 200


def test_non_text_params_are_webhook_errors():
    with pytest.raises(WebhookError):
        parse_inbound([("MessageSid", 5)])
    with pytest.raises(WebhookError):
        parse_inbound([("MessageSid",)])


# -- status callbacks ------------------------------------------------------------------


def test_captured_status_callback():
    cb = parse_status(parse_qsl(STATUS_CAPTURE, keep_blank_values=True))
    assert isinstance(cb, StatusCallback)
    assert cb.message_sid == SM_SID and cb.account_sid == ACCOUNT_SID
    assert cb.status == "delivered" and cb.error_code is None
    assert cb.raw_dlr_done_date == "2303222338"
    assert cb.to == parse_address("+15558675310") and cb.from_ == parse_address("+15017122661")
    assert cb.params == tuple(parse_qsl(STATUS_CAPTURE, keep_blank_values=True))
    assert cb.to_params_dict()["SmsStatus"] == ["delivered"]


def test_status_with_error_code_and_case():
    cb = parse_status(
        [("MessageSid", SM_SID), ("MessageStatus", "Undelivered"), ("ErrorCode", "30003")]
    )
    assert cb.status == "undelivered" and cb.error_code == 30003
    assert cb.account_sid is None and cb.to is None and cb.from_ is None


def test_status_blank_error_code():
    cb = parse_status([("MessageSid", SM_SID), ("MessageStatus", "sent"), ("ErrorCode", "")])
    assert cb.error_code is None


@pytest.mark.parametrize(
    ("params", "name"),
    [
        pytest.param([("MessageStatus", "sent")], "MessageSid", id="missing-MessageSid"),
        pytest.param(
            [("MessageSid", "SM1"), ("MessageStatus", "sent")], "MessageSid", id="bad-MessageSid"
        ),
        pytest.param([("MessageSid", SM_SID)], "MessageStatus", id="missing-MessageStatus"),
        pytest.param(
            [("MessageSid", SM_SID), ("MessageStatus", "")],
            "MessageStatus",
            id="empty-MessageStatus",
        ),
        pytest.param(
            [("MessageSid", SM_SID), ("MessageStatus", "de livered")],
            "MessageStatus",
            id="bad-MessageStatus",
        ),
        pytest.param(
            [("MessageSid", SM_SID), ("MessageStatus", "failed"), ("ErrorCode", "30003.5")],
            "ErrorCode",
            id="float-ErrorCode",
        ),
        pytest.param(
            [("MessageSid", SM_SID), ("MessageStatus", "failed"), ("ErrorCode", "abc")],
            "ErrorCode",
            id="text-ErrorCode",
        ),
        pytest.param(
            [("MessageSid", SM_SID), ("MessageStatus", "failed"), ("ErrorCode", "-1")],
            "ErrorCode",
            id="negative-ErrorCode",
        ),
        pytest.param(
            [("MessageSid", SM_SID), ("MessageStatus", "sent"), ("MessageStatus", "delivered")],
            "MessageStatus",
            id="repeated-MessageStatus",
        ),
        pytest.param(
            [("MessageSid", SM_SID), ("MessageStatus", "sent"), ("AccountSid", "AC1")],
            "AccountSid",
            id="bad-AccountSid",
        ),
    ],
)
def test_malformed_status(params, name):
    with pytest.raises(WebhookError) as info:
        parse_status(params)
    assert name in str(info.value)


# -- fuzz: only WebhookError ever escapes ----------------------------------------------

KNOWN = [
    "MessageSid", "SmsMessageSid", "AccountSid", "MessagingServiceSid", "From", "To", "Body",
    "NumMedia", "NumSegments", "MediaUrl0", "MediaUrl1", "MediaUrl10", "MediaContentType0",
    "OptOutType", "ToCity", "FromZip", "ProfileName", "WaId", "MessageStatus", "ErrorCode",
    "RawDlrDoneDate",
]  # fmt: skip
INTERESTING = [
    SM_SID, "MM" + "0" * 32, ACCOUNT_SID, "MG" + "c" * 32, "0", "1", "2", "10", "11", "-1", "",
    "whatsapp:", "whatsapp:+1555", MEDIA_URL, "http://[::1", "https://h:0/ME", "ftp://x/y",
]  # fmt: skip
NAMES = st.one_of(st.sampled_from(KNOWN), st.text(max_size=12))
VALUES = st.one_of(st.sampled_from(INTERESTING), st.text(max_size=40))
BASE = minimal(NumMedia="1", MediaUrl0=MEDIA_URL)


@st.composite
def fuzzed_params(draw):
    params = list(BASE) if draw(st.integers(0, 3)) else []
    for _ in range(draw(st.integers(0, 6))):
        pair = (draw(NAMES), draw(VALUES))
        if params and draw(st.booleans()):
            params[draw(st.integers(0, len(params) - 1))] = pair
        else:
            params.insert(draw(st.integers(0, len(params))), pair)
    return params


@settings(max_examples=300, deadline=None)
@given(fuzzed_params())
def test_fuzz_parse_inbound_only_raises_webhook_error(params):
    try:
        msg = parse_inbound(params)
    except WebhookError:
        return
    assert re.fullmatch(r"(SM|MM)[A-Za-z0-9]{32}", msg.message_sid)
    assert re.fullmatch(r"AC[A-Za-z0-9]{32}", msg.account_sid)
    assert 0 <= msg.num_media <= 10 and len(msg.media) == msg.num_media
    assert all(m.url.startswith(("http://", "https://")) for m in msg.media)
    assert all(
        m.media_sid is None or re.fullmatch(r"ME[A-Za-z0-9]{32}", m.media_sid) for m in msg.media
    )
    assert msg.params == tuple(params)


@settings(max_examples=200, deadline=None)
@given(fuzzed_params())
def test_fuzz_parse_status_only_raises_webhook_error(params):
    try:
        cb = parse_status(params)
    except WebhookError:
        return
    assert cb.error_code is None or cb.error_code >= 0


# --- REST Message resources (reconciliation) --------------------------------------------

REST_MESSAGE = {
    "sid": MESSAGE_SID,
    "account_sid": ACCOUNT_SID,
    "api_version": "2010-04-01",
    "body": "Test",
    "direction": "inbound",
    "error_code": None,
    "from": "+17205550123",
    "messaging_service_sid": None,
    "num_media": "1",
    "num_segments": "1",
    "status": "received",
    "subresource_uris": {"media": "/2010-04-01/.../Media.json"},
    "to": "+18885550100",
}
REST_MEDIA = [{"sid": MEDIA_SID, "content_type": "image/jpeg", "parent_sid": MESSAGE_SID}]


def rest_media_url(message_sid: str, media_sid: str) -> str:
    return f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}/Media/{media_sid}"


def test_rest_message_gives_the_webhooks_message():
    from_rest = inbound_from_rest(REST_MESSAGE, REST_MEDIA, rest_media_url)
    from_hook = parse_inbound(CAPTURED_PARAMS)
    for name in (
        "message_sid",
        "account_sid",
        "messaging_service_sid",
        "from_",
        "to",
        "body",
        "num_media",
        "num_segments",
        "media",
        "api_version",
        "sms_status",
    ):
        assert getattr(from_rest, name) == getattr(from_hook, name), name


def test_rest_params_are_the_resources_own_fields():
    msg = inbound_from_rest(REST_MESSAGE, REST_MEDIA, rest_media_url)
    names = [name for name, _ in msg.params]
    # Nothing made up: no webhook names, only what the REST resource said (set, plain values).
    assert not {"MessageSid", "SmsStatus", "MediaUrl0", "NumMedia"} & set(names)
    assert msg.param("sid") == MESSAGE_SID and msg.param("direction") == "inbound"
    assert msg.param("error_code") is None and msg.param("subresource_uris") is None
    assert msg.param("media.0.sid") == MEDIA_SID
    assert msg.param("media.0.content_type") == "image/jpeg"


def test_rest_sms_with_a_messaging_service():
    service = "MG" + "c" * 32
    msg = inbound_from_rest(
        {**REST_MESSAGE, "num_media": "0", "body": "STOP", "messaging_service_sid": service},
        [],
        rest_media_url,
    )
    assert (msg.body, msg.num_media, msg.media) == ("STOP", 0, ())
    assert msg.messaging_service_sid == service


@pytest.mark.parametrize(
    ("message", "media", "needle"),
    [
        ({**REST_MESSAGE, "sid": "XX1"}, REST_MEDIA, "sid"),
        ({k: v for k, v in REST_MESSAGE.items() if k != "account_sid"}, REST_MEDIA, "account_sid"),
        ({**REST_MESSAGE, "from": ""}, REST_MEDIA, "from"),
        (REST_MESSAGE, [{"sid": "nope"}], "Media SID"),
        (REST_MESSAGE, REST_MEDIA * 11, "at most 10"),
        ({**REST_MESSAGE, "body": "a\x00b"}, REST_MEDIA, "NUL"),
    ],
)
def test_malformed_rest_message(message, media, needle):
    with pytest.raises(WebhookError, match=needle):
        inbound_from_rest(message, media, rest_media_url)
