"""Opt-outs: who asked not to get messages from which sender.

`set_opt_out` is the only statement that writes them. The workflows that
learn of an opt-out (an inbound STOP or START, Twilio refusing a send with
error 21610) say what they learnt through `record_keyword` and
`record_refusal`, which call it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from receiver.index.core import IndexCore
from receiver.index.errors import translate_db_errors
from receiver.index.events import NewEvent, write_events
from receiver.index.schema import opt_outs, utcnow

#: Twilio's error for a send to a recipient who replied STOP
#: (https://www.twilio.com/docs/api/errors/21610).
UNSUBSCRIBED_RECIPIENT = 21610


class OptOuts(IndexCore):
    """The opt-out list, per recipient address and sender."""

    @translate_db_errors
    def set_opt_out(
        self,
        address: str,
        sender: str,
        *,
        opted_out: bool,
        keyword: str,
        source: str,
        message_sid: str | None = None,
    ) -> None:
        """Record that `address` opted out of (or back in to) messages from `sender`."""
        now = utcnow()
        values = {
            "address": address,
            "sender": sender,
            "opted_out": opted_out,
            "keyword": keyword,
            "source": source,
            "message_sid": message_sid,
            "updated_at": now,
        }
        stmt = self._insert(opt_outs).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["address", "sender"],
            set_={
                k: stmt.excluded[k]
                for k in ("opted_out", "keyword", "source", "message_sid", "updated_at")
            },
        )
        data = {k: v for k, v in values.items() if k != "updated_at"}
        event = NewEvent("optout.changed", data, message_sid)
        with self.begin() as conn:
            conn.execute(stmt)
            due = write_events(conn, [event], now)
        self.notify_events(due)

    def record_keyword(self, address: str, sender: str, keyword: str, message_sid: str) -> None:
        """An inbound STOP (opted out) or START (back in) from `address` to `sender`."""
        if keyword not in ("STOP", "START"):
            raise ValueError(f"only STOP and START change the opt-out list (got {keyword!r})")
        self.set_opt_out(
            address,
            sender,
            opted_out=keyword == "STOP",
            keyword=keyword,
            source="inbound",
            message_sid=message_sid,
        )

    def record_refusal(self, address: str, sender: str, message_sid: str | None = None) -> None:
        """Twilio refused a send to `address` from `sender` with error 21610 (opted out)."""
        self.set_opt_out(
            address,
            sender,
            opted_out=True,
            keyword="STOP",
            source=f"twilio-{UNSUBSCRIBED_RECIPIENT}",
            message_sid=message_sid,
        )

    @translate_db_errors
    def is_opted_out(self, address: str, senders: Iterable[str]) -> bool:
        """Whether `address` opted out of any of `senders` (or of every sender, "*")."""
        names = [*senders, "*"]
        with self.engine.connect() as conn:
            row = conn.execute(
                select(opt_outs.c.opted_out)
                .where(opt_outs.c.address == address, opt_outs.c.sender.in_(names))
                .order_by(opt_outs.c.updated_at.desc())
                .limit(1)
            ).first()
        return bool(row and row[0])

    @translate_db_errors
    def opt_out_rows(self, address: str) -> list[dict[str, Any]]:
        """Every opt-out record of one address."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(select(opt_outs).where(opt_outs.c.address == address)).mappings().all()
            )
        return [dict(r) for r in rows]
