"""`mms-receiver scan`: stored files scanned again with today's signatures.

A stored file that now matches leaves normal storage (its objects are deleted
first, then the item is recorded as rejected for `malware`), so a crash in
between leaves a row whose file is missing, never a servable infected file.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from receiver.index import MediaIndex
from receiver.media.scan import Scanner
from receiver.storage.base import ObjectStore

__all__ = ["RescanReport", "rescan"]

log = logging.getLogger(__name__)

PAGE = 100


@dataclass
class RescanReport:
    """What a rescan found: files by verdict (clean, unscanned, missing) and the matches."""

    counts: Counter[str] = field(default_factory=Counter)
    #: (media id, signature) of every file that now matches.
    malware: list[tuple[int, str]] = field(default_factory=list)

    @property
    def scanned(self) -> int:
        return self.counts["clean"] + self.counts["unscanned"] + len(self.malware)

    def summary(self) -> str:
        return (
            f"scanned {self.scanned}: {self.counts['clean']} clean, {len(self.malware)} malware, "
            f"{self.counts['unscanned']} unscanned (over the stream limit), "
            f"{self.counts['missing']} missing"
        )


def rescan(
    index: MediaIndex,
    store: ObjectStore,
    scanner: Scanner,
    since: datetime,
    *,
    progress: Callable[[int], None] | None = None,
) -> RescanReport:
    """Scan every item stored since `since`; raises ScanUnavailable when clamd goes away
    (what was recorded stays recorded, and running it again continues)."""
    report = RescanReport()
    after = 0
    while rows := index.stored_since(since, after_id=after, limit=PAGE):
        for row in rows:
            after = row.id
            if not row.storage_key:
                continue
            try:
                with store.open(row.storage_key) as fp:
                    result = scanner.client.scan(fp, row.size_bytes)
            except FileNotFoundError:
                report.counts["missing"] += 1
                continue
            facts = _facts(row.facts)
            if result.verdict == "malware":
                signature = result.signature or "unknown"
                # Derivatives too: a playable copy carries the same content.
                copy = index.playable(row.id)
                for key in (row.storage_key, row.thumbnail_key, copy and copy.storage_key):
                    if key:
                        store.delete(key)
                facts["scan"] = "malware"
                index.record_rescan(
                    row.id,
                    json.dumps(facts, sort_keys=True),
                    malware=f"clamd found {signature} (rescan)",
                )
                report.malware.append((row.id, signature))
                log.warning("rescan: media %s matches %s; removed", row.id, signature)
            else:
                state = "clean" if result.clean else "unscanned"
                report.counts[state] += 1
                if facts.get("scan") != state:
                    facts["scan"] = state
                    index.record_rescan(row.id, json.dumps(facts, sort_keys=True))
            if progress is not None:
                progress(1)
    return report


def _facts(raw: str | None) -> dict[str, object]:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
