"""TwiML building: well-formed, escaped, within Twilio's limits, equal to twilio-python's."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from twilio.twiml.messaging_response import MessagingResponse

from receiver.errors import TwiMLError
from receiver.twilio.twiml import Reply, build_response, empty_response, xml_text

DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
PHOTO = "https://example.com/photo.jpg"


def parse(xml: bytes) -> etree._Element:
    return etree.fromstring(xml)


def canonical(element):
    return (
        element.tag,
        tuple(sorted(element.attrib.items())),
        element.text or "",
        tuple(canonical(child) for child in element),
    )


def reference(messages=(), redirect=None, redirect_method=None) -> bytes:
    """The same document built by twilio-python's MessagingResponse."""
    response = MessagingResponse()
    for reply in messages:
        message = response.message(
            to=reply.to,
            from_=reply.from_,
            action=reply.action,
            method=reply.method,
            status_callback=reply.status_callback,
        )
        if reply.body:
            message.body(reply.body)
        for url in reply.media:
            message.media(url)
    if redirect is not None:
        response.redirect(redirect, method=redirect_method)
    return response.to_xml().encode("utf-8")


def assert_equivalent(messages=(), redirect=None, redirect_method=None):
    ours = build_response(messages, redirect, redirect_method)
    theirs = reference(messages, redirect, redirect_method)
    assert ours.startswith(DECLARATION)
    assert canonical(parse(ours)) == canonical(parse(theirs))


def test_empty_response_exact_bytes():
    assert empty_response() == DECLARATION + b"<Response/>"
    assert build_response([]) == empty_response()
    assert_equivalent()


def test_message_with_everything():
    reply = Reply(
        body="Got 2 photos",
        media=(PHOTO, "http://example.com/b.gif?x=1&y=2"),
        to="+15558675310",
        from_="+15017122661",
        action="/twilio/status",
        method="POST",
        status_callback="https://example.com/cb",
    )
    root = parse(
        build_response([reply], redirect="https://example.com/next", redirect_method="GET")
    )
    message = root.find("Message")
    assert dict(message.attrib) == {
        "to": "+15558675310",
        "from": "+15017122661",
        "action": "/twilio/status",
        "method": "POST",
        "statusCallback": "https://example.com/cb",
    }
    assert message.findtext("Body") == "Got 2 photos"
    assert [m.text for m in message.findall("Media")] == [PHOTO, "http://example.com/b.gif?x=1&y=2"]
    assert root[-1].tag == "Redirect" and root[-1].get("method") == "GET"
    assert_equivalent([reply], "https://example.com/next", "GET")


def test_media_only_message_has_no_body():
    message = parse(build_response([Reply(media=(PHOTO,))])).find("Message")
    assert message.find("Body") is None and message.findtext("Media") == PHOTO
    assert message.attrib == {}


def test_several_messages_and_method_normalised():
    replies = [Reply(body="one"), Reply(body="two", action="/a", method="get")]
    root = parse(build_response(replies))
    assert [m.findtext("Body") for m in root] == ["one", "two"]
    assert root[1].get("method") == "GET"


def test_single_reply_accepted():
    assert parse(build_response(Reply(body="hi"))).findtext("Message/Body") == "hi"


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "</Body></Message><Message><Body>injected",
        "]]><![CDATA[x",
        "&amp; &lt; &#x3C; <!-- --> <?pi?>",
        "\"quoted\" and 'single'",
        "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>&e;",
    ],
)
def test_markup_in_body_and_attributes_is_escaped(text):
    reply = Reply(body=text, to=text, action=text, media=(f"https://example.com/?q={text}",))
    xml = build_response([reply])
    root = parse(xml)
    assert len(root) == 1 and root[0].findtext("Body") == text
    assert root[0].get("to") == text and set(root[0].attrib) == {"to", "action"}
    assert root[0].findtext("Media") == f"https://example.com/?q={text}"
    assert b"<script>" not in xml
    assert_equivalent([reply])


def test_control_characters_are_stripped_not_crashing():
    reply = Reply(
        body="a\x00b\x1bc\ufffe\ud800d\te\nf", to="+1\x01555", media=("https://e.com/\x00x",)
    )
    root = parse(build_response([reply], redirect="https://e.com/\x08r"))
    assert root[0].findtext("Body") == "abcd\te\nf"
    assert root[0].get("to") == "+1555"
    assert root[0].findtext("Media") == "https://e.com/x"
    assert root[1].text == "https://e.com/r"


def test_xml_text_keeps_every_allowed_character():
    allowed = "\t\n\r a\u00e9\ud7ff\ue000\ufffd\U0001f600\U0010ffff"
    assert xml_text(allowed) == allowed


def test_body_limit_counts_after_stripping():
    assert (
        parse(build_response([Reply(body="x" * 1600 + "\x00")])).findtext("Message/Body")
        == "x" * 1600
    )


def test_long_body_equivalent():
    assert_equivalent([Reply(body="é" * 1600)])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"messages": [Reply(body="x" * 1601)]}, "1601 characters", id="body-1601"),
        pytest.param({"messages": [Reply(media=(PHOTO,) * 11)]}, "11 media", id="media-11"),
        pytest.param({"messages": [Reply(body="x")] * 11}, "11 messages", id="messages-11"),
        pytest.param(
            {"messages": [Reply(media=("ftp://example.com/a.jpg",))]}, "http", id="ftp-media"
        ),
        pytest.param(
            {"messages": [Reply(media=("javascript:alert(1)",))]}, "http", id="javascript-media"
        ),
        pytest.param({"messages": [Reply(media=("/relative.jpg",))]}, "http", id="relative-media"),
        pytest.param({"messages": [Reply(media=("https://",))]}, "http", id="hostless-media"),
        pytest.param({"messages": [Reply(media=("http://[::1/x",))]}, "http", id="bad-ipv6-media"),
        pytest.param({"messages": [Reply(media=PHOTO)]}, "not one string", id="media-as-string"),
        pytest.param({"messages": [Reply(body="x", method="PUT")]}, "GET or POST", id="method-put"),
        pytest.param({"messages": [Reply()]}, "neither a body nor media", id="empty-message"),
        pytest.param(
            {"messages": [Reply(body="\x00")]}, "neither a body nor media", id="only-control-chars"
        ),
        pytest.param({"messages": ["hello"]}, "not a Reply", id="not-a-reply"),
        pytest.param(
            {"redirect": "https://e.com/r", "redirect_method": "DELETE"},
            "GET or POST",
            id="redirect-method",
        ),
        pytest.param(
            {"redirect_method": "GET"}, "without a redirect", id="method-without-redirect"
        ),
        pytest.param({"redirect": " "}, "empty", id="empty-redirect"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(TwiMLError, match=match):
        build_response(**kwargs)


def test_limits_are_inclusive():
    replies = [Reply(body="x" * 1600, media=(PHOTO,) * 10)] * 10
    root = parse(build_response(replies))
    assert len(root) == 10 and all(len(m.findall("Media")) == 10 for m in root)


# -- equivalence with twilio-python on random input -------------------------------------

# Printable text only: no C0 controls (ElementTree would write them raw, which is not XML),
# no lone surrogates, and no CR (ElementTree writes a raw CR that parsers turn into LF, lxml
# writes &#13; which keeps it: both are correct, they only differ in that way).
# An explicit alphabet keeps generation fast: ASCII markup characters, non-ASCII letters,
# combining marks, zero-width and no-break spaces, private use, astral characters.
ALPHABET = (
    "".join(map(chr, range(0x20, 0x7F))) + "\n\tñé€日本語\u0301\u200b\u00a0\ue000😀\U0010fffd"
)
PRINTABLE = st.sampled_from(ALPHABET)
BODIES = st.text(PRINTABLE, max_size=200)
URL_TEXT = st.text(st.sampled_from([c for c in ALPHABET if not c.isspace()]), max_size=20)
MEDIA_URLS = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(["example.com", "media.example.org:8443", "127.0.0.1", "[::1]"]),
    URL_TEXT,
)
OPTIONAL = st.one_of(st.none(), st.text(PRINTABLE, max_size=30))
REPLIES = st.builds(
    Reply,
    body=BODIES,
    media=st.lists(MEDIA_URLS, max_size=10).map(tuple),
    to=OPTIONAL,
    from_=OPTIONAL,
    action=OPTIONAL,
    method=st.one_of(st.none(), st.sampled_from(["GET", "POST"])),
    status_callback=OPTIONAL,
).filter(lambda r: r.body or r.media)


@settings(max_examples=300, deadline=None)
@given(
    messages=st.lists(REPLIES, max_size=3),
    redirect=st.one_of(st.none(), MEDIA_URLS),
    redirect_method=st.sampled_from([None, "GET", "POST"]),
)
def test_equivalent_to_messaging_response(messages, redirect, redirect_method):
    if redirect is None:
        redirect_method = None
    assert_equivalent(messages, redirect, redirect_method)


@settings(max_examples=300, deadline=None)
@given(body=st.text(max_size=300))
def test_any_text_gives_well_formed_xml(body):
    try:
        xml = build_response([Reply(body=body, media=(PHOTO,))])
    except TwiMLError:
        return
    assert parse(xml).findtext("Message/Body") in (xml_text(body), None)
