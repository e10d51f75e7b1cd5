"""Replies from the inbox: a thread, text, uploaded and stored files, through the one send core.

A reply becomes an ordinary `OutboundRequest` from our side of the thread to
the customer, with each file saved to a private temporary directory under its
uploaded name, and goes through `Outbound.send` like `send` and
`POST /api/messages`: validation, opt-outs, inspection, scanning, the MMS
policy, fitting, hosting, the idempotent create. What this module adds is
only what a reply has and a send has not: the inbound caps on uploads,
stored files of the thread, a check that our side of the thread is still a
number or Messaging Service of the account, and who sent it.

A reply into a conversation thread is a request with `conversation_sid`: the
same core sends it through `ConversationSender` (files uploaded to MCS, then
the message created), and refuses it when a member opted out, as
`send --conversation` does.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

from receiver.errors import OutboundError
from receiver.index.conversations import ConversationIndex
from receiver.index.inbox import ThreadKey, thread_entries
from receiver.index.replies import Operator, ReplyIndex, StoredFile
from receiver.outbound.conversation import opted_out_message
from receiver.outbound.prepare import PreparedMedia
from receiver.outbound.request import OutboundRequest, validate_request
from receiver.outbound.send import SendResult
from receiver.replies import human_size
from receiver.twilio import sids
from receiver.twilio.rest import TwilioRest, TwilioRestError

if TYPE_CHECKING:
    from receiver.index import MediaIndex
    from receiver.outbound.workflow import Outbound
    from receiver.settings import Settings
    from receiver.storage.base import ObjectStore

#: The form's one-time key: made at render time, sent back with the form.
REPLY_KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: Prefix of a reply's idempotency key on the outbound row (the API's are "api:").
KEY_PREFIX = "reply:"
#: How long a positive "this number is ours" answer is trusted.
OWNERSHIP_TTL = 300.0
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK = 1 << 20


class UploadTooLarge(OutboundError):
    """A file, or the files together, over the inbound caps (RECEIVER_MAX_*_BYTES)."""


@dataclass(frozen=True)
class Upload:
    """A file the operator attached: the name it had on their device, and its bytes."""

    filename: str
    stream: IO[bytes]


@dataclass(frozen=True)
class Reply:
    """What the reply box (or the API) asks to send into a thread."""

    thread: ThreadKey
    body: str = ""
    uploads: tuple[Upload, ...] = ()
    #: Media ids of stored originals of this thread's inbound messages.
    stored: tuple[int, ...] = ()
    #: The form's one-time key (or the API's Idempotency-Key); None: not idempotent.
    key: str | None = None
    operator: Operator | None = None


@dataclass(frozen=True)
class FilePlan:
    """What the core will do with one file: its name, what it becomes, why."""

    name: str
    content_type: str
    size: int
    changes: tuple[str, ...]

    @property
    def summary(self) -> str:
        """ "photo.heic will be sent as JPEG, 1.2 MB"."""
        return (
            f"{self.name} will be sent as {type_label(self.content_type)}, {human_size(self.size)}"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "content_type": self.content_type,
            "size": self.size,
            "changes": list(self.changes),
            "summary": self.summary,
        }


def type_label(content_type: str) -> str:
    """A short name of a media type for people: JPEG, PNG, MP4, VCARD..."""
    sub = content_type.split("/", 1)[-1].split(";", 1)[0]
    return sub.removeprefix("x-").removeprefix("vnd.").upper()


class InboxReplies:
    """Sends replies (and dry-run previews of them) through `outbound`."""

    def __init__(
        self,
        settings: Settings,
        index: MediaIndex,
        replies: ReplyIndex,
        store: ObjectStore,
        outbound: Outbound,
        rest: Callable[[], TwilioRest],
        conversations: ConversationIndex | None = None,
    ) -> None:
        self.settings = settings
        #: Where a conversation thread's members (and their opt-outs) are kept.
        self.conversations = conversations or ConversationIndex(index.engine, begin=index.begin)
        self.index = index
        self.replies = replies
        self.store = store
        self.outbound = outbound
        self.rest = rest
        self._owned: dict[str, float] = {}
        self._owned_lock = threading.Lock()

    def send(self, reply: Reply) -> SendResult:
        """Send the reply once per key; OutboundError (with its reason) when it cannot go."""
        request = self._request(reply)
        self._check_thread(reply.thread)
        self._check_opt_out(reply.thread)
        self._check_ours(reply.thread.ours)
        if reply.key and reply.operator is not None:
            self.replies.record_author(KEY_PREFIX + reply.key, reply.operator, reply.thread)
        with self._files(reply) as files:
            result = self.outbound.send(replace(request, media=tuple(p for _, p in files)))
        return result

    def preview(self, reply: Reply) -> list[FilePlan]:
        """What sending would do to each file (a dry run: nothing is stored or sent)."""
        request = self._request(reply)
        self._check_thread(reply.thread)
        self._check_opt_out(reply.thread)
        with self._files(reply) as files:
            media = tuple(p for _, p in files)
            result = self.outbound.send(replace(request, media=media), dry_run=True)
        prepared = result.prepared
        items: Sequence[PreparedMedia] = prepared.media if prepared else ()
        names = [name for name, _ in files]
        return [
            FilePlan(name, m.content_type, m.size, m.changes)
            for name, m in zip(names, items, strict=True)
        ]

    # -- the steps -----------------------------------------------------------------

    def _request(self, reply: Reply) -> OutboundRequest:
        """The send request of a reply, validated by the core before any file is read."""
        if reply.key is not None and not REPLY_KEY.fullmatch(reply.key):
            raise OutboundError(
                "the reply key must be 16-64 letters, digits, '-' or '_'; reload the page",
                "invalid_key",
            )
        ours = reply.thread.ours
        service = bool(sids.MESSAGING_SERVICE.fullmatch(ours))
        key = KEY_PREFIX + reply.key if reply.key else None
        if reply.thread.conversation:
            request = OutboundRequest(
                to="",
                conversation_sid=reply.thread.conversation,
                body=reply.body,
                idempotency_key=key,
                allow_files=True,
            )
        else:
            request = OutboundRequest(
                to=reply.thread.customer,
                from_=None if service else ours,
                messaging_service_sid=ours if service else None,
                body=reply.body,
                idempotency_key=key,
                allow_files=True,
            )
        count = len(reply.uploads) + len(reply.stored)
        # The core's rules (body length, file count, addresses) on placeholders first.
        validate_request(replace(request, media=tuple(f"file{i}" for i in range(count))))
        return request

    def _check_thread(self, thread: ThreadKey) -> None:
        """A reply answers a thread: a key without messages is not a way to message anyone."""
        if not thread_entries(self.index, thread, limit=1):
            raise OutboundError(
                f"no thread {thread.encode()}: reply from a thread of /inbox, or send a new "
                "message with `send` or POST /api/messages",
                "no_such_thread",
            )

    def opted_out_reason(self, thread: ThreadKey) -> str | None:
        """Why a conversation thread cannot be answered (members opted out), or None."""
        if not thread.conversation:
            return None
        opted = self.conversations.opted_out_members(thread.conversation)
        return opted_out_message(opted) if opted else None

    def _check_opt_out(self, thread: ThreadKey) -> None:
        """Refuse before anything is recorded; the core refuses again at send time."""
        if thread.conversation:
            reason = self.opted_out_reason(thread)
            if reason:
                raise OutboundError(reason, "opted_out")
            return
        if self.index.is_opted_out(thread.customer, [thread.ours]):
            raise OutboundError(
                f"{thread.customer} opted out (replied STOP) of messages from {thread.ours}; "
                "they must text START before you can reply",
                "opted_out",
            )

    def _check_ours(self, ours: str) -> None:
        """Refuse a thread whose number or Messaging Service is no longer the account's.

        Twilio would refuse the create (error 21606,
        https://www.twilio.com/docs/api/errors/21606); asking first keeps uploads
        from being prepared and hosted for nothing. Channel addresses and short
        codes are left to Twilio's own check.
        """
        if not (_E164.fullmatch(ours) or sids.MESSAGING_SERVICE.fullmatch(ours)):
            return
        with self._owned_lock:
            if self._owned.get(ours, 0.0) > time.monotonic():
                return
        rest = self.rest()
        if sids.MESSAGING_SERVICE.fullmatch(ours):
            try:
                rest.fetch_messaging_service(ours)
                owned = True
            except TwilioRestError as exc:
                if exc.status != 404:
                    raise
                owned = False
        else:
            owned = rest.find_incoming_number(ours) is not None
        if not owned:
            raise OutboundError(
                f"{ours} is no longer a number or Messaging Service of this Twilio account, "
                "so this thread cannot be answered from it; reply from one of your numbers "
                "with `send`",
                "not_our_number",
            )
        with self._owned_lock:
            self._owned[ours] = time.monotonic() + OWNERSHIP_TTL

    @contextmanager
    def _files(self, reply: Reply) -> Iterator[list[tuple[str, str]]]:
        """Every file of the reply as (its name, a private local path named like it)."""
        stored = self._stored(reply)
        folder = Path(tempfile.mkdtemp(prefix="reply-"))  # mode 0700
        try:
            files: list[tuple[str, str]] = []
            total = 0
            for n, upload in enumerate(reply.uploads):
                target = self._target(folder, n, upload.filename, f"upload{n + 1}")
                total += self._save(upload.stream, target, upload.filename, total)
                files.append((upload.filename, str(target)))
            for n, item in enumerate(stored, start=len(reply.uploads)):
                target = self._target(folder, n, item.filename, item.filename)
                with self.store.open(item.storage_key) as fp:
                    total += self._save(fp, target, item.filename, total)
                files.append((item.filename, str(target)))
            yield files
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _stored(self, reply: Reply) -> list[StoredFile]:
        if not reply.stored:
            return []
        found = {
            f.media_id: f for f in self.replies.stored_files(reply.thread, ids=set(reply.stored))
        }
        missing = [i for i in reply.stored if i not in found]
        if missing:
            raise OutboundError(
                f"stored file(s) {', '.join(map(str, missing))} are not stored files of this "
                "thread; choose from the thread's list",
                "invalid_stored",
            )
        return [found[i] for i in reply.stored]

    @staticmethod
    def _target(folder: Path, n: int, filename: str, fallback: str) -> Path:
        name = _NAME.sub("_", Path(filename.replace("\\", "/")).name).strip("._")[:80]
        sub = folder / str(n)
        sub.mkdir(mode=0o700)
        return sub / (name or fallback)

    def _save(self, source: IO[bytes], target: Path, name: str, before: int) -> int:
        """Copy one file, enforcing the inbound caps while copying; its size."""
        per_file = self.settings.max_media_bytes
        per_message = self.settings.max_message_bytes
        size = 0
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > per_file:
                    raise UploadTooLarge(
                        f"{name} is over {per_file:,} bytes, the largest file this service "
                        "takes (RECEIVER_MAX_MEDIA_BYTES); send a smaller file",
                        "too_large",
                    )
                if before + size > per_message:
                    raise UploadTooLarge(
                        f"the files total over {per_message:,} bytes, the most one message "
                        "takes (RECEIVER_MAX_MESSAGE_BYTES); send fewer or smaller files",
                        "message_too_large",
                    )
                out.write(chunk)
        return size
