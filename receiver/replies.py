"""Reply texts rendered from Jinja templates in templates/replies/, then built into TwiML."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    select_autoescape,
)

from receiver.errors import TwiMLError
from receiver.index.records import MessageRecord
from receiver.index.serialize import message_json
from receiver.twilio.twiml import Reply, build_response, empty_response

log = logging.getLogger(__name__)

KIND_NOUNS = {
    "image": ("photo", "photos"),
    "video": ("video", "videos"),
    "audio": ("audio clip", "audio clips"),
    "contact": ("contact card", "contact cards"),
    "document": ("document", "documents"),
    "other": ("file", "files"),
}


def templates_dir() -> Path:
    """Where the packaged templates are: inside the wheel, or at the top of a checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "templates"
    return packaged if packaged.is_dir() else here.parent / "templates"


def human_size(n: int | None) -> str:
    """A size as people write it: 980 B, 14 KB, 1.4 MB."""
    if not n:
        return "0 B"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def media_summary(media: Sequence[dict[str, Any]]) -> str:
    """'2 photos and a contact card, 1.4 MB' for the stored items of a message."""
    stored = [m for m in media if m.get("state") == "stored"]
    counts: dict[str, int] = {}
    for m in stored:
        kind = m.get("kind") or "other"
        counts[kind] = counts.get(kind, 0) + 1
    parts = []
    for kind, (one, many) in KIND_NOUNS.items():
        n = counts.get(kind, 0)
        if n == 1:
            parts.append(("an " if one[0] in "aeiou" else "a ") + one)
        elif n > 1:
            parts.append(f"{n} {many}")
    if not parts:
        return ""
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    total = sum(int(m.get("size_bytes") or 0) for m in stored)
    return f"{text}, {human_size(total)}"


class ReplyRenderer:
    """Renders reply templates (user overrides first) and wraps them in TwiML."""

    def __init__(self, override_dir: Path | None = None) -> None:
        loaders = []
        if override_dir is not None and override_dir.is_dir():
            loaders.append(FileSystemLoader(str(override_dir)))
        loaders.append(FileSystemLoader(str(templates_dir() / "replies")))
        # Plain text: escaping for XML is lxml's job when the TwiML is built.
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=(), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["human_size"] = human_size

    def render_text(self, name: str, **context: Any) -> str:
        """The reply text of template `name` (e.g. 'message.txt'), stripped."""
        return self.env.get_template(name).render(**context).strip()

    def twiml(self, name: str, **context: Any) -> bytes:
        """TwiML answering with the template's text, or an empty <Response/> if it is blank.

        A broken template must not cost the message (it is already stored):
        the error is logged and Twilio gets an empty answer.
        """
        try:
            text = self.render_text(name, **context)
            if not text:
                return empty_response()
            return build_response([Reply(body=text[:1600])])
        except (TemplateError, TwiMLError) as exc:
            log.error(
                "reply template %s failed: %s; answering with an empty <Response/>", name, exc
            )
            return empty_response()

    def context(self, message: MessageRecord | None) -> dict[str, Any]:
        """Template context: the message and its media (API shape), and a ready-made summary."""
        shaped = message_json(message, include_params=False) if message is not None else {}
        # A carrier's SMIL layout is no attachment the sender chose: never counted in replies.
        media = [m for m in shaped.get("media", []) if m.get("kind") != "presentation"]
        return {
            "message": shaped,
            "media": media,
            "summary": media_summary(media),
            "stored": [m for m in media if m.get("state") == "stored"],
            "rejected": [m for m in media if m.get("state") == "rejected"],
            "pending": [m for m in media if m.get("state") in ("pending", "failed")],
        }
