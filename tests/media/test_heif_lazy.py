"""pillow-heif is loaded only when a file may need it, and HEIC still works the first time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import samples

CHILD = """
import io, json, sys
from pathlib import Path
from receiver.media.inspect import inspect
from receiver.media.transform import make_thumbnail
seen = {"at_import": "pillow_heif" in sys.modules}
jpeg = Path(sys.argv[1]).read_bytes()
seen["jpeg"] = inspect(io.BytesIO(jpeg), "image/jpeg").detected_type
make_thumbnail(io.BytesIO(jpeg))
seen["after_jpeg"] = "pillow_heif" in sys.modules
heic = Path(sys.argv[2]).read_bytes()
info = inspect(io.BytesIO(heic), "image/heic")
seen["heic"] = [info.detected_type, info.width, info.height]
seen["thumb"] = make_thumbnail(io.BytesIO(heic)).width
seen["after_heic"] = "pillow_heif" in sys.modules
print(json.dumps(seen))
"""


def test_heif_opener_loads_with_the_first_heic_and_not_before(tmp_path: Path) -> None:
    jpeg, heic = tmp_path / "a.jpg", tmp_path / "b.heic"
    jpeg.write_bytes(samples.jpeg(64, 48))
    heic.write_bytes(samples.heic(640, 480))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(jpeg), str(heic)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["at_import"] is False
    assert seen["jpeg"] == "image/jpeg"
    assert seen["after_jpeg"] is False
    assert seen["heic"] == ["image/heic", 640, 480]
    assert seen["thumb"] == 320
    assert seen["after_heic"] is True
