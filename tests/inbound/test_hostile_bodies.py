"""Unsigned webhook bodies are never parsed as JSON, and no body of any kind gives a 500."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from receiver.twilio.signature import body_sha256, compute_signature
from receiver.web.twilio_request import MAX_JSON_DEPTH, json_depth
from tests.reliability.security import check_hostile_bodies
from tests.support.webhooks import TOKEN

BASE = "http://localhost"


def post_json(client: Any, body: bytes, *, signed: bool) -> Any:
    path = f"/twilio/messaging?bodySHA256={body_sha256(body)}"
    headers = {"Content-Type": "application/json"}
    if signed:
        headers["X-Twilio-Signature"] = compute_signature(TOKEN, BASE + path)
    return client.post(path, data=body, headers=headers)


@pytest.mark.parametrize(
    "body",
    [b"[" * 30_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000, b"9" * 60_000, b"1e999999"],
    ids=["deep-arrays", "deep-objects", "huge-integer", "huge-exponent"],
)
def test_hostile_json_unsigned_is_403_and_signed_is_400(
    client: Any, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert post_json(client, body, signed=False).status_code == 403
        assert post_json(client, body, signed=True).status_code == 400
    assert "Traceback" not in caplog.text
    assert "RecursionError" not in caplog.text


def test_unsigned_json_is_never_parsed(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("json.loads ran before the signature was checked")

    monkeypatch.setattr("receiver.web.twilio_request.json.loads", refuse)
    assert post_json(client, b'{"MessageSid": "x"}', signed=False).status_code == 403


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth(b'{"Body": "[[[[[[[[", "x": [1, [2]]}') == 3
    assert json_depth(b'["\\"[[[", {}]') == 2
    nested = json.dumps({"a": [[[]]]}).encode()
    assert json_depth(nested) == 4
    assert json_depth(b"[" * (MAX_JSON_DEPTH + 1)) == MAX_JSON_DEPTH + 1


def test_hostile_bodies_never_answer_5xx(tmp_path: Path) -> None:
    check = check_hostile_bodies(tmp_path, count=600)
    assert check.attempts == 600
    assert check.accepted == 0, check.details
