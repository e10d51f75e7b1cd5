"""Settings: defaults, dev-mode secrets on disk, and errors that name the variable and fix."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from receiver.errors import ConfigError
from receiver.settings import Settings


def test_embedded_defaults_and_private_dev_secrets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings.from_env({"RECEIVER_DATA_DIR": str(data)})
    assert settings.dev_mode is True
    assert settings.database_url == f"sqlite:///{data / 'receiver.db'}"
    assert settings.storage_url == (data / "media").as_uri()
    assert "127.0.0.1:8765" in settings.media_hosts
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    secrets_file = data / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    stored = json.loads(secrets_file.read_text())
    assert stored["auth_token"] == settings.auth_token
    assert stored["api_token"] == settings.api_token
    # The same credentials on the next start (simulate signs with them).
    again = Settings.from_env({"RECEIVER_DATA_DIR": str(data)})
    assert again.auth_token == settings.auth_token
    assert again.admin_password == settings.admin_password


def test_real_token_ends_dev_mode_and_keeps_allowlist_strict(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "RECEIVER_DATA_DIR": str(tmp_path),
            "TWILIO_AUTH_TOKEN": "t",
            "TWILIO_AUTH_TOKEN_SECONDARY": "u",
        }
    )
    assert settings.dev_mode is False
    assert settings.auth_tokens == ("t", "u")
    assert all(":" not in h for h in settings.media_hosts)


def test_secrets_never_appear_in_repr_or_describe(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "RECEIVER_DATA_DIR": str(tmp_path),
            "TWILIO_AUTH_TOKEN": "supersecret-token",
            "TWILIO_API_KEY": "SK" + "0" * 32,
            "TWILIO_API_SECRET": "supersecret-api",
            "RECEIVER_DATABASE_URL": "postgresql://user:supersecret-db@db/x",
        }
    )
    text = repr(settings) + json.dumps(settings.describe())
    assert "supersecret" not in text
    assert settings.describe()["auth_token"] == "(set)"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("RECEIVER_PROXY_HOPS", "two", "RECEIVER_PROXY_HOPS must be a whole number"),
        ("RECEIVER_PROXY_HOPS", "-1", "RECEIVER_PROXY_HOPS"),
        ("RECEIVER_PUBLIC_URL", "example.com", "RECEIVER_PUBLIC_URL must be an absolute"),
        ("RECEIVER_PUBLIC_URL", "https://x.example/a#frag", "without query or fragment"),
        ("RECEIVER_STORAGE_URL", "ftp://x", "RECEIVER_STORAGE_URL must be"),
        ("RECEIVER_DATABASE_URL", "mysql://x", "RECEIVER_DATABASE_URL must be"),
        ("RECEIVER_MAX_MEDIA_BYTES", "lots", "RECEIVER_MAX_MEDIA_BYTES must be a whole number"),
        ("RECEIVER_MAX_MESSAGE_BYTES", "10", "RECEIVER_MAX_MESSAGE_BYTES must be at least"),
        (
            "RECEIVER_DELETE_REMOTE_MEDIA",
            "maybe",
            "RECEIVER_DELETE_REMOTE_MEDIA must be true or false",
        ),
        ("RECEIVER_INLINE_DEADLINE", "30", "RECEIVER_INLINE_DEADLINE must be between"),
        ("RECEIVER_MEDIA_HOSTS", "https://api.twilio.com/x", "RECEIVER_MEDIA_HOSTS entries"),
        ("TWILIO_ACCOUNT_SID", "AC123", "TWILIO_ACCOUNT_SID must start with AC"),
        ("TWILIO_API_KEY", "AK123", "TWILIO_API_KEY must be an API key SID"),
        ("RECEIVER_LOG_FORMAT", "xml", "RECEIVER_LOG_FORMAT"),
        ("RECEIVER_OCR", "english", "RECEIVER_OCR: 'english' is not a Tesseract language"),
        ("RECEIVER_OCR", "eng+../x", "RECEIVER_OCR"),
        ("RECEIVER_OCR_TIMEOUT", "0", "RECEIVER_OCR_TIMEOUT must be seconds from 0 to 600"),
        ("RECEIVER_OCR_TIMEOUT", "soon", "RECEIVER_OCR_TIMEOUT must be a number"),
        ("RECEIVER_STREAM_MAX", "-1", "RECEIVER_STREAM_MAX must be 0"),
        ("RECEIVER_STREAM_MAX", "many", "RECEIVER_STREAM_MAX must be a whole number"),
        ("RECEIVER_CONVERSATION_AUTHOR", "x" * 257, "RECEIVER_CONVERSATION_AUTHOR must be"),
        ("RECEIVER_CONVERSATION_AUTHOR", "Acme\x07", "RECEIVER_CONVERSATION_AUTHOR must be"),
    ],
)
def test_bad_values_name_the_variable_and_the_fix(
    tmp_path: Path, name: str, value: str, expected: str
) -> None:
    env = {"RECEIVER_DATA_DIR": str(tmp_path), "TWILIO_AUTH_TOKEN": "t", name: value}
    with pytest.raises(ConfigError, match=expected):
        Settings.from_env(env)


def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="RECEIVER_DATA_DIR: cannot create"):
        Settings.from_env({"RECEIVER_DATA_DIR": str(blocker / "data")})


def test_ocr_is_off_unless_languages_are_named(tmp_path: Path) -> None:
    base = {"RECEIVER_DATA_DIR": str(tmp_path), "TWILIO_AUTH_TOKEN": "t"}
    assert Settings.from_env(base).ocr_languages == ()
    assert Settings.from_env({**base, "RECEIVER_OCR": "off"}).ocr_languages == ()
    on = Settings.from_env({**base, "RECEIVER_OCR": "eng+deu+jpn", "RECEIVER_OCR_TIMEOUT": "12"})
    assert on.ocr_languages == ("eng", "deu", "jpn")
    assert on.ocr_timeout == 12.0
    assert on.describe()["ocr_languages"] == "eng,deu,jpn"
