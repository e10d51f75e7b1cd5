"""`serve` checks the index and storage in a child process, so gunicorn's master stays small."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from receiver.cli import main
from receiver.inbound.pipeline import message_row
from receiver.index import MediaIndex
from receiver.twilio.webhook import parse_inbound
from tests.conftest import base_env
from tests.support.webhooks import inbound_params

CHILD = """
import json, sys
from receiver.cli import _startup_check
from receiver.commands.common import load_settings
backlog = _startup_check(load_settings())
heavy = sorted(m for m in ("sqlalchemy", "PIL.Image", "magic", "lxml.etree", "receiver.index")
               if m in sys.modules)
print(json.dumps({"backlog": backlog, "heavy": heavy}))
"""


def test_the_check_reports_the_backlog_and_leaves_the_master_without_the_stack(
    tmp_path: Path,
) -> None:
    env = base_env(tmp_path)
    data = Path(env["RECEIVER_DATA_DIR"])
    data.mkdir(mode=0o700)
    index = MediaIndex.open(f"sqlite:///{data / 'receiver.db'}")
    msg = parse_inbound(inbound_params(media=[("https://api.twilio.com/m/1", "image/jpeg")] * 2))
    rows = [{"idx": i, "url": r.url, "media_sid": r.media_sid} for i, r in enumerate(msg.media)]
    index.insert_message(message_row(msg, None), rows)
    index.engine.dispose()

    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = json.loads(out)
    assert report["backlog"] == {"pending": 2}
    assert report["heavy"] == []


def test_a_storage_failure_in_the_check_stops_serve_with_its_reason(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    env = base_env(tmp_path, RECEIVER_STORAGE_URL=not_a_directory.as_uri())
    result = CliRunner().invoke(main, ["serve", "--port", "1"], env=env)
    assert result.exit_code == 1
    assert str(not_a_directory) in result.output, result.output
    assert "Traceback" not in result.output


def test_malloc_arenas_are_capped_where_glibc_allows_it() -> None:
    import platform

    probe = "from receiver.server import limit_malloc_arenas; print(limit_malloc_arenas(2))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    # glibc's mallopt accepts the cap; elsewhere the call changes nothing and says so.
    assert out == ("True" if platform.libc_ver()[0] == "glibc" else "False")
