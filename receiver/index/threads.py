"""The thread summary: one row per inbox thread, kept in step with every message write.

The inbox list reads `thread_summary` (last activity, the last message's
reference, counts per direction) through the index on (last_at, key), so a
page costs the same at 100 messages and at 100k (docs/design.md, "Inbox
threads"). Each write path adds ONE upsert in its own transaction:
`touch_inbound` (ingest, Conversations messages included: they are ingested
like any inbound message) and `touch_outbound` (an outbound row created).
A status change moves neither the last activity nor a count, and the row
shows the last message read by reference, so its status is always current.
`rebuild` fills the table from the messages (start-up backfill of an older
index); `refresh` recomputes one thread after a message is erased.

A Conversations conversation is one thread keyed by its `CH…` SID (no "~", so
it never collides with a `<ours>~<customer>` key): its inbound messages are
stored with the conversation as their recipient (`to_channel`
"conversations"), and a send into it keeps the SID as the outbound row's
`to_addr`. Neither makes a `<ours>~<customer>` thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from receiver.index.schema import (
    conversation_messages,
    messages,
    meta,
    outbound_messages,
    thread_summary,
)
from receiver.twilio import sids

SEPARATOR = "~"
#: receiver_meta key set once the table has been filled from older messages. Renamed
#: when conversations became threads of their own, so an index keyed the old way
#: (a conversation message under "<ours>~<author>") is rebuilt once more.
BACKFILLED = "thread_summary_backfilled_conversations"
#: The `to_channel` of an inbound Conversations message (its `to_addr` is the CH… SID).
CONVERSATION_CHANNEL = "conversations"


def is_conversation_key(key: str) -> bool:
    """Whether a thread key names a Conversations conversation."""
    return bool(sids.CONVERSATION.fullmatch(key))


def _address(channel: Any, address: Any) -> Any:
    # Inbound rows keep the channel apart ("whatsapp", "+1555..."); outbound rows keep
    # Twilio's form ("whatsapp:+1555..."); SMS addresses have no prefix.
    return case((channel == "sms", address), else_=channel + ":" + address)


def customer_in() -> Any:
    """The customer of an inbound row, in the form outbound rows store."""
    return _address(messages.c.from_channel, messages.c.from_addr)


def ours_in() -> Any:
    """Our side of an inbound row: its Messaging Service, else our address."""
    return func.coalesce(
        messages.c.messaging_service_sid, _address(messages.c.to_channel, messages.c.to_addr)
    )


def ours_out() -> Any:
    """Our side of an outbound row: its Messaging Service, else its sender."""
    return func.coalesce(outbound_messages.c.messaging_service_sid, outbound_messages.c.from_addr)


def key_in() -> Any:
    """The thread key of an inbound row, in SQL (the rule of `inbound_key`)."""
    return case(
        (messages.c.to_channel == CONVERSATION_CHANNEL, messages.c.to_addr),
        else_=ours_in() + SEPARATOR + customer_in(),
    )


def _conversation_out() -> Any:
    # Customer addresses start with "+" or a channel prefix, never with "CH".
    return outbound_messages.c.to_addr.like("CH%")


def key_out() -> Any:
    """The thread key of an outbound row, in SQL (the rule of `outbound_key`)."""
    return case(
        (_conversation_out(), outbound_messages.c.to_addr),
        else_=ours_out() + SEPARATOR + outbound_messages.c.to_addr,
    )


def _py_address(channel: str, address: str) -> str:
    return address if channel == "sms" else f"{channel}:{address}"


def inbound_key(row: Mapping[Any, Any]) -> str:
    """The thread key of an inbound message row (the rule of `ours_in`/`customer_in`)."""
    if row["to_channel"] == CONVERSATION_CHANNEL:
        return str(row["to_addr"])
    ours = row.get("messaging_service_sid") or _py_address(row["to_channel"], row["to_addr"])
    return f"{ours}{SEPARATOR}{_py_address(row['from_channel'], row['from_addr'])}"


def outbound_key(row: Mapping[str, Any]) -> str | None:
    """The thread key of an outbound row, or None when it names no sender of ours."""
    if sids.CONVERSATION.fullmatch(row["to_addr"] or ""):
        return str(row["to_addr"])
    ours = row.get("messaging_service_sid") or row.get("from_addr")
    return f"{ours}{SEPARATOR}{row['to_addr']}" if ours else None


_UPSERTS: dict[str, Any] = {}


def _upsert(dialect: str) -> Any:
    # Built once per dialect: the write path then only binds values.
    if dialect not in _UPSERTS:
        ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(thread_summary)
        t, new = thread_summary.c, ins.excluded
        # Ties go to the later write, as the thread page orders equal times.
        newer = new.last_at >= t.last_at
        _UPSERTS[dialect] = ins.on_conflict_do_update(
            index_elements=[t.key],
            set_={
                "last_at": case((newer, new.last_at), else_=t.last_at),
                "last_sid": case((newer, new.last_sid), else_=t.last_sid),
                "last_outbound_id": case((newer, new.last_outbound_id), else_=t.last_outbound_id),
                "inbound": t.inbound + new.inbound,
                "outbound": t.outbound + new.outbound,
            },
        )
    return _UPSERTS[dialect]


def touch_inbound(conn: Connection, row: Mapping[str, Any]) -> None:
    """Count a newly recorded inbound message in its thread (one statement)."""
    conn.execute(
        _upsert(conn.dialect.name),
        {
            "key": inbound_key(row),
            "last_at": row["received_at"],
            "last_sid": row["sid"],
            "last_outbound_id": None,
            "inbound": 1,
            "outbound": 0,
        },
    )


def touch_outbound(conn: Connection, row: Mapping[str, Any], row_id: int) -> None:
    """Count a newly created outbound row in its thread (one statement; none without a sender)."""
    key = outbound_key(row)
    if key is None:
        return
    conn.execute(
        _upsert(conn.dialect.name),
        {
            "key": key,
            "last_at": row["created_at"],
            "last_sid": None,
            "last_outbound_id": row_id,
            "inbound": 0,
            "outbound": 1,
        },
    )


def _summaries(inbound_where: list[Any], outbound_where: list[Any]) -> Any:
    """SELECT of summary rows (one per thread) computed from the messages themselves."""
    activity = union_all(
        select(
            key_in().label("key"),
            messages.c.received_at.label("at"),
            messages.c.sid.label("sid"),
            cast(null(), Integer).label("oid"),
            literal(1).label("n_in"),
            literal(0).label("n_out"),
        ).where(*inbound_where),
        select(
            key_out().label("key"),
            outbound_messages.c.created_at.label("at"),
            cast(null(), String).label("sid"),
            outbound_messages.c.id.label("oid"),
            literal(0).label("n_in"),
            literal(1).label("n_out"),
        ).where(or_(ours_out().is_not(None), _conversation_out()), *outbound_where),
    ).subquery("activity")
    ranked = select(
        activity.c.key,
        activity.c.at,
        activity.c.sid,
        activity.c.oid,
        func.sum(activity.c.n_in).over(partition_by=activity.c.key).label("n_in"),
        func.sum(activity.c.n_out).over(partition_by=activity.c.key).label("n_out"),
        func.row_number()
        .over(
            partition_by=activity.c.key,
            # Outbound first on a tie, like the upsert's later write; NULLs never compared.
            order_by=(
                activity.c.at.desc(),
                activity.c.n_out.desc(),
                activity.c.oid.desc(),
                activity.c.sid.desc(),
            ),
        )
        .label("rn"),
    ).subquery("ranked")
    return select(
        ranked.c.key, ranked.c.at, ranked.c.sid, ranked.c.oid, ranked.c.n_in, ranked.c.n_out
    ).where(ranked.c.rn == 1)


_COLUMNS = ["key", "last_at", "last_sid", "last_outbound_id", "inbound", "outbound"]


def rebuild(conn: Connection) -> int:
    """Refill the whole table from the messages; the number of threads."""
    conn.execute(delete(thread_summary))
    conn.execute(insert(thread_summary).from_select(_COLUMNS, _summaries([], [])))
    return int(conn.execute(select(func.count()).select_from(thread_summary)).scalar_one())


def backfill_once(conn: Connection) -> None:
    """At start-up: fill the table once for an index whose messages predate it."""
    if conn.execute(select(meta.c.value).where(meta.c.key == BACKFILLED)).first() is None:
        rebuild(conn)
        conn.execute(meta.insert().values(key=BACKFILLED, value="1"))


def inbound_where(ours: str, customer: str) -> list[Any]:
    """Conditions selecting a thread's inbound rows (`customer` "": conversation `ours`)."""
    if not customer:
        # Through `ix_conversation_messages_idx`: `messages` has no index on the recipient.
        return [
            messages.c.sid.in_(
                select(conversation_messages.c.message_sid).where(
                    conversation_messages.c.conversation_sid == ours
                )
            ),
            messages.c.to_channel == CONVERSATION_CHANNEL,
        ]
    return inbound_match(customer.rpartition(":")[2], customer, ours)


def inbound_match(bare: Any, customer: Any, ours: Any) -> list[Any]:
    """A customer thread's inbound rows, from values or bound parameters (statements built
    once)."""
    # The bare sender address first: `ix_messages_from_received` finds the thread's rows.
    return [
        messages.c.from_addr == bare,
        customer_in() == customer,
        ours_in() == ours,
        # A conversation's messages belong to its own thread only.
        messages.c.to_channel != CONVERSATION_CHANNEL,
    ]


def outbound_where(ours: str, customer: str) -> list[Any]:
    """Conditions selecting a thread's outbound rows (through `ix_outbound_to_created`)."""
    if not customer:
        return [outbound_messages.c.to_addr == ours]
    return [outbound_messages.c.to_addr == customer, ours_out() == ours]


def refresh(conn: Connection, key: str) -> None:
    """Recompute thread `key` from its messages (after one was erased)."""
    ours, _, customer = (key, "", "") if is_conversation_key(key) else key.partition(SEPARATOR)
    conn.execute(delete(thread_summary).where(thread_summary.c.key == key))
    conn.execute(
        insert(thread_summary).from_select(
            _COLUMNS,
            _summaries(inbound_where(ours, customer), outbound_where(ours, customer)),
        )
    )
