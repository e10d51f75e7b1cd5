"""Reads a Twilio webhook from the Flask request and verifies its signature."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from flask import Request
from werkzeug.exceptions import BadRequest, Forbidden, UnsupportedMediaType

from receiver.errors import SignatureError
from receiver.services import Services
from receiver.twilio.signature import rebuild_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifiedRequest:
    """A webhook whose signature verified: its parameters and the URL that matched."""

    params: tuple[tuple[str, str], ...]
    url: str


def _raw_path_and_query(req: Request) -> tuple[str, str]:
    raw = req.environ.get("RAW_URI") or req.environ.get("REQUEST_URI")
    if raw and raw.startswith("/"):
        path, _, query = raw.partition("?")
        path = path.split("#", 1)[0]
        return req.environ.get("SCRIPT_NAME", "") + path, query.split("#", 1)[0]
    return quote(req.script_root + req.path), req.query_string.decode("latin-1")


def signed_url(req: Request, svc: Services) -> str:
    """The URL Twilio signed, rebuilt from configuration, trusted proxy headers or the request."""
    path, query = _raw_path_and_query(req)
    return rebuild_url(
        public_url=svc.settings.public_url,
        proxy_hops=svc.settings.proxy_hops,
        scheme=req.scheme,
        host=req.host,
        raw_path=path,
        query=query,
        headers=req.headers,
    )


def read_verified(req: Request, svc: Services) -> VerifiedRequest:
    """Verify X-Twilio-Signature, then parse the body or query; 403/400 otherwise.

    A JSON body is verified over its raw bytes (`bodySHA256`) before it is
    parsed at all, so an unsigned body never reaches the JSON parser. A form
    body is signed through its parameters, so it is parsed first, which is
    linear in its size and bounded by MAX_CONTENT_LENGTH.
    """
    matched, params, body, is_json = _verify(req, svc)
    if is_json:
        params = _json_params(body)
    return VerifiedRequest(params=params, url=matched)


def read_verified_json(req: Request, svc: Services) -> Any:
    """Verify a signed JSON body (`bodySHA256`), then parse it: any JSON value
    (Event Streams posts arrays); 403 unsigned, 415 not JSON, 400 malformed.

    The signature is checked first: an unsigned request learns nothing, not
    even which content type would have been accepted."""
    _, _, body, is_json = _verify(req, svc)
    if not is_json:
        raise UnsupportedMediaType("the body must be application/json (CloudEvents)")
    return _json_value(body)


def _verify(req: Request, svc: Services) -> tuple[str, tuple[tuple[str, str], ...], bytes, bool]:
    body = req.get_data(cache=True)  # 413 past MAX_CONTENT_LENGTH
    url = signed_url(req, svc)
    _, _, query = url.partition("?")
    ctype = (req.mimetype or "").lower()
    is_json = req.method != "GET" and ctype == "application/json"
    try:
        query_params = tuple(parse_qsl(query, keep_blank_values=True, errors="strict"))
        if req.method == "GET":
            params: tuple[tuple[str, str], ...] = query_params
            signed_params: tuple[tuple[str, str], ...] = ()
        elif is_json:
            params = signed_params = ()
        else:
            params = tuple(parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict"))
            signed_params = params
    except UnicodeDecodeError:
        raise BadRequest("the request body or query is not valid UTF-8") from None
    except ValueError as exc:
        raise BadRequest(f"the request body cannot be parsed: {exc}") from None
    signature = req.headers.get("X-Twilio-Signature")
    try:
        matched = svc.verifier.verify(url, signed_params, signature, body=body if is_json else None)
    except SignatureError as exc:
        # Say which URL was checked (never the token) so users behind ngrok
        # or a proxy can see why; the caller learns nothing beyond 403.
        log.warning(
            "rejected %s %s: %s; checked URL %s (set RECEIVER_PUBLIC_URL to the exact URL "
            "configured in Twilio, or RECEIVER_PROXY_HOPS behind a proxy)",
            req.method,
            req.path,
            exc,
            url,
        )
        raise Forbidden("invalid or missing X-Twilio-Signature") from None
    return matched, params, body, is_json


#: Twilio's JSON webhooks are a few levels deep; anything deeper is refused
#: before Python's recursive parser could hit its recursion limit.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in `body` (brackets inside strings do not count)."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _json_value(body: bytes) -> Any:
    if json_depth(body) > MAX_JSON_DEPTH:
        raise BadRequest(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("the JSON body is not valid UTF-8 JSON") from None


def _json_params(body: bytes) -> tuple[tuple[str, str], ...]:
    data = _json_value(body)
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object")
    try:
        return tuple((str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in data.items())
    except (ValueError, RecursionError):  # e.g. an integer too long to print again
        raise BadRequest("the JSON body has a value that cannot be read") from None
