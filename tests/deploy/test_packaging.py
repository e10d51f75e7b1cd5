"""The wheel ships the package, the console script and the templates."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_templates_and_entry_point(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mms_receiver-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "mms-receiver = receiver.cli:main" in zf.read(entry_points).decode()
    assert "receiver/templates/replies/message.txt" in names
    assert "receiver/templates/replies/help.txt" in names
    assert "receiver/cli.py" in names
    assert "receiver/commands/outbound.py" in names
    assert "receiver/templates/messages.html" in names
    assert "receiver/templates/_reply.html" in names
    assert "receiver/templates/static/reply.js" in names
    assert "receiver/templates/static/app.css" in names
    assert "receiver/templates/static/live.js" in names
    assert "receiver/__main__.py" in names


def test_python_dash_m_receiver_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "receiver", "--help"], check=True, capture_output=True, text=True
    ).stdout
    commands = (
        "serve",
        "simulate",
        "worker",
        "retry",
        "check",
        "send",
        "configure-number",
        "reconcile",
        "purge",
        "export",
    )
    for command in commands:
        assert command in out
