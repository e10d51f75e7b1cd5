"""Structured logs: one JSON object per event, MessageSid as correlation id, nothing secret."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from receiver.logs import (
    GunicornLogger,
    JsonFormatter,
    RedactionFilter,
    TextFormatter,
    bind_message_sid,
    configure_logging,
)
from receiver.settings import Settings
from tests.conftest import ACCOUNT_SID, TOKEN, base_env
from tests.support.services import free_port

SID = "MM" + "a1" * 16
TOKEN_SECONDARY = "secondary-token-abcdef0123456789"


def make_logger(
    *, log_bodies: bool = False, json_format: bool = True
) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    handler.addFilter(
        RedactionFilter([TOKEN, TOKEN_SECONDARY, "hunter2-admin"], log_bodies=log_bodies)
    )
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    return [json.loads(line) for line in lines]


def test_each_event_is_one_json_line_with_its_message_sid() -> None:
    logger, stream = make_logger()
    logger.info("media stored\nsecond line", extra={"message_sid": SID, "media_index": 2})
    logger.warning("plain event")
    out = events(stream)
    assert len(out) == 2 == len(stream.getvalue().splitlines())
    assert out[0]["event"] == "media stored\nsecond line"
    assert out[0]["message_sid"] == SID
    assert out[0]["media_index"] == 2
    assert out[0]["level"] == "info" and out[0]["logger"].startswith("test.logs.")
    assert "message_sid" not in out[1]


def test_message_sid_comes_from_arguments_or_the_bound_context() -> None:
    logger, stream = make_logger()
    logger.info("inbound %s from %s: recorded", SID, "sms")
    other = "SM" + "b2" * 16
    with bind_message_sid(other):
        logger.info("no sid in the text")
    logger.info("outside the block")
    out = events(stream)
    assert out[0]["message_sid"] == SID
    assert out[1]["message_sid"] == other
    assert "message_sid" not in out[2]


def test_configured_secrets_and_credentials_never_reach_the_log() -> None:
    logger, stream = make_logger()
    logger.info("verifying with %s and %s", TOKEN, TOKEN_SECONDARY)
    logger.info("headers {'Authorization': 'Basic QUM6c2VjcmV0', 'X-Twilio-Signature': 'abc+/='}")
    logger.info("fetch https://SK123:apisecretvalue@api.twilio.com/x?token=t0ps3cret&page=2")
    logger.info("upstream said", extra={"api_token": "tok-123456", "password": "hunter2-admin"})
    logger.info("calling with bearer abcdefghijklmnop")
    text = stream.getvalue()
    for secret in (
        TOKEN,
        TOKEN_SECONDARY,
        "QUM6c2VjcmV0",
        "abc+/=",
        "apisecretvalue",
        "t0ps3cret",
        "tok-123456",
        "hunter2-admin",
        "abcdefghijklmnop",
    ):
        assert secret not in text, secret
    out = events(stream)
    assert out[2]["event"] == "fetch https://SK123:***@api.twilio.com/x?token=***&page=2"
    assert out[3]["api_token"] == "***" and out[3]["password"] == "***"


def test_tracebacks_are_redacted_too() -> None:
    logger, stream = make_logger()
    try:
        raise RuntimeError(f"connect failed with token {TOKEN}")
    except RuntimeError:
        logger.exception("fetch failed for %s", SID)
    (event,) = events(stream)
    assert "RuntimeError" in event["exc"]
    assert TOKEN not in stream.getvalue()
    assert event["message_sid"] == SID


def test_message_bodies_are_dropped_unless_enabled() -> None:
    logger, stream = make_logger()
    logger.info("inbound", extra={"body": "my card is 4111 1111", "message_sid": SID})
    logger.info("raw form Body=my+card+is+4111&From=%2B1555")
    out = events(stream)
    assert out[0]["body"] == "[20 chars not logged]"
    assert "4111" not in stream.getvalue()
    assert out[1]["event"] == "raw form Body=***&From=%2B1555"

    logger, stream = make_logger(log_bodies=True)
    logger.info("inbound", extra={"body": "hello there"})
    assert events(stream)[0]["body"] == "hello there"


def test_text_format_tags_lines_with_the_message_sid() -> None:
    logger, stream = make_logger(json_format=False)
    logger.info("media 0 stored", extra={"message_sid": SID})
    assert stream.getvalue().rstrip().endswith(f"media 0 stored [{SID}]")


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    root.handlers[:], level = saved
    root.setLevel(level)


def test_configure_logging_masks_every_secret_in_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_root_logging: None
) -> None:
    env = base_env(
        tmp_path,
        RECEIVER_LOG_FORMAT="json",
        TWILIO_API_KEY="SK" + "0" * 32,
        TWILIO_API_SECRET="api-secret-value-123",
    )
    settings = Settings.from_env(env)
    configure_logging(settings)
    logging.getLogger("receiver.test").info(
        "dump %s %s %s %s",
        settings.auth_token,
        settings.api_secret,
        settings.api_token,
        settings.admin_password,
        extra={"message_sid": SID},
    )
    err = capsys.readouterr().err
    (event,) = [json.loads(line) for line in err.splitlines()]
    assert event["event"] == "dump *** *** *** ***"
    assert event["message_sid"] == SID


def test_gunicorn_access_log_is_a_structured_event(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, restore_root_logging: None
) -> None:
    from datetime import timedelta

    from gunicorn.config import Config

    configure_logging(Settings.from_env(base_env(tmp_path, RECEIVER_LOG_FORMAT="json")))
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("errorlog", "-")
    glog = GunicornLogger(cfg)

    class Resp:
        status = "403 FORBIDDEN"
        status_code = 403
        sent = 0
        headers: list[tuple[str, str]] = []

    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/twilio/messaging",
        "REMOTE_ADDR": "127.0.0.1",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    glog.access(Resp(), None, environ, timedelta(milliseconds=12))
    glog.error_log.info("Booting worker with token %s", TOKEN)
    out = capsys.readouterr()
    lines = (out.out + out.err).splitlines()
    parsed = [json.loads(line) for line in lines]
    access = next(e for e in parsed if e.get("http_path") == "/twilio/messaging")
    assert access["http_status"] == 403 and access["http_method"] == "POST"
    assert access["duration_ms"] == 12.0
    assert TOKEN not in out.out + out.err


def test_live_service_logs_json_with_correlation_and_no_body_or_token(tmp_path: Path) -> None:
    """A real `serve` in JSON mode: the webhook's events carry its MessageSid, never its body."""
    from receiver.simulate import inbound_params, post_signed

    env = base_env(tmp_path, RECEIVER_LOG_FORMAT="json")
    port = free_port()
    err_path = tmp_path / "stderr.log"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "receiver", "serve", "--port", str(port), "--workers", "1"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    requests.get(url + "/healthz", timeout=1)
                    break
                except requests.RequestException:
                    time.sleep(0.1)
            body = "please-do-not-log-this-body"
            params = inbound_params(
                message_sid=SID,
                account_sid=ACCOUNT_SID,
                from_="+15550001111",
                to="+15550002222",
                body=body,
                media=[],
            )
            assert post_signed(url + "/twilio/messaging", params, TOKEN).status_code == 200
            forged = requests.post(
                url + "/twilio/messaging",
                data=params,
                headers={"X-Twilio-Signature": "forged"},
                timeout=10,
            )
            assert forged.status_code == 403
        finally:
            proc.terminate()
            proc.wait(20)
    text = err_path.read_text()
    assert body not in text
    assert TOKEN not in text
    receiver_events = []
    for line in text.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event["logger"].startswith("receiver."):
                receiver_events.append(event)
    inbound = [e for e in receiver_events if e["logger"] == "receiver.web.hooks"]
    assert inbound and all(e.get("message_sid") == SID for e in inbound)
    rejected = [e for e in receiver_events if "rejected POST" in e["event"]]
    assert rejected and rejected[0]["level"] == "warning"
