"""Build Messaging TwiML with lxml, so every text and attribute is escaped by construction."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from lxml import etree

from receiver.errors import TwiMLError

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
MAX_BODY_CHARS = 1600
MAX_MEDIA = 10
MAX_MESSAGES = 10
METHODS = ("GET", "POST")

# Everything outside XML 1.0's Char production (C0 controls, lone surrogates, U+FFFE/F).
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Reply:
    """One outgoing `<Message>`: text, media URLs and its optional attributes."""

    body: str = ""
    media: tuple[str, ...] = ()
    to: str | None = None
    from_: str | None = None
    action: str | None = None
    method: str | None = None
    status_callback: str | None = None


def xml_text(value: str) -> str:
    """`value` without the characters XML 1.0 cannot carry (lxml would refuse them)."""
    return _NOT_XML_CHAR.sub("", value)


def build_response(
    messages: Sequence[Reply] = (),
    redirect: str | None = None,
    redirect_method: str | None = None,
) -> bytes:
    """A complete TwiML document: one `<Message>` per reply, then an optional `<Redirect>`."""
    replies = (messages,) if isinstance(messages, Reply) else tuple(messages)
    if len(replies) > MAX_MESSAGES:
        raise TwiMLError(
            f"{len(replies)} messages in one answer; Twilio allows at most {MAX_MESSAGES}"
        )
    root = etree.Element("Response")
    for number, reply in enumerate(replies):
        _add_message(root, reply, number)
    if redirect is not None:
        if not xml_text(redirect).strip():
            raise TwiMLError("redirect URL is empty")
        element = etree.SubElement(root, "Redirect")
        if redirect_method is not None:
            element.set("method", _method(redirect_method, "Redirect method"))
        element.text = xml_text(redirect)
    elif redirect_method is not None:
        raise TwiMLError("redirect_method was given without a redirect URL")
    return XML_DECLARATION + etree.tostring(root, encoding="UTF-8", xml_declaration=False)


def empty_response() -> bytes:
    """`<Response/>`: acknowledge the webhook without replying."""
    return build_response()


def _add_message(root: etree._Element, reply: Reply, number: int) -> None:
    where = f"message {number}"
    if not isinstance(reply, Reply):
        raise TwiMLError(f"{where} is a {type(reply).__name__}, not a Reply")
    if isinstance(reply.media, str):
        raise TwiMLError(f"{where}: media must be a sequence of URLs, not one string")
    body = xml_text(reply.body)
    media = [xml_text(url) for url in reply.media]
    if len(body) > MAX_BODY_CHARS:
        raise TwiMLError(
            f"{where}: body has {len(body)} characters; Twilio allows at most {MAX_BODY_CHARS}"
        )
    if len(media) > MAX_MEDIA:
        raise TwiMLError(f"{where}: {len(media)} media; Twilio allows at most {MAX_MEDIA}")
    if not body and not media:
        raise TwiMLError(f"{where} has neither a body nor media; Twilio would refuse it")
    for url in media:
        _check_media_url(url, where)

    element = etree.SubElement(root, "Message")
    attributes = (
        ("to", reply.to),
        ("from", reply.from_),
        ("action", reply.action),
        ("method", _method(reply.method, f"{where} method") if reply.method else None),
        ("statusCallback", reply.status_callback),
    )
    for name, value in attributes:
        if value is not None:
            element.set(name, xml_text(value))
    if body:
        etree.SubElement(element, "Body").text = body
    for url in media:
        etree.SubElement(element, "Media").text = url


def _method(value: str, what: str) -> str:
    method = value.strip().upper()
    if method not in METHODS:
        raise TwiMLError(f"{what} must be GET or POST (got {value!r})")
    return method


def _check_media_url(url: str, where: str) -> None:
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise TwiMLError(f"{where}: media URL {url!r} is not an absolute http(s) URL")
