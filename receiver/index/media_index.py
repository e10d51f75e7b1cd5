"""`MediaIndex`: the one object the service holds for the metadata index.

It is the sum of the index's parts, each a module with one job (see
docs/design.md, "Index"); every part shares one `IndexCore`.
"""

from __future__ import annotations

from receiver.index.event_queue import EventQueue
from receiver.index.events import EventOutbox
from receiver.index.media_queue import MediaQueue
from receiver.index.messages import Messages
from receiver.index.optouts import OptOuts
from receiver.index.playable import PlayableIndex
from receiver.index.similar import Similar
from receiver.index.texts import MediaTexts


class MediaIndex(
    Messages, MediaQueue, OptOuts, Similar, PlayableIndex, MediaTexts, EventOutbox, EventQueue
):
    """Reads and writes of messages, the media work queue, opt-outs, image hashes,
    playable copies, text read from images, the events outbox and its delivery queue
    against one database."""
