"""The outbound workflow: prepare media, host it, enforce opt-outs and rate limits, send, track.

request.py   what a caller asks for (`OutboundRequest`) and its validation
prepare.py   fetch, inspect, MMS policy and fit for each attachment (`Preparer`)
hosting.py   storage, signed /m/<token> links (`MediaLinks`), pre-flight (`Hosting`)
send.py      opt-outs, rate limits, the idempotent create (`Sender`)
bulk.py      CSV campaigns (`BulkSender`)
status.py    status callbacks, delivery figures, status refresh (`StatusTracker`)
workflow.py  `Outbound`, the one entry point that wires them

Nothing is sent until every attachment of a message passed pre-flight. This
package never imports Flask. The names below are the ones other modules import.
"""

from receiver.outbound.bulk import (
    BulkSender,
    BulkSummary,
    campaign_name,
    read_campaign,
    row_key,
)
from receiver.outbound.hosting import Hosting, MediaLinks
from receiver.outbound.prepare import (
    FALLBACK_LINK_TTL,
    MAX_FILENAME,
    MMS_LINK_TTL,
    PreparedMedia,
    PreparedMessage,
    Preparer,
    short_filename,
)
from receiver.outbound.request import (
    MAX_BODY,
    OutboundRequest,
    carries_mms,
    parse_since,
    parse_size,
    sms_segments,
    validate_request,
)
from receiver.outbound.send import Sender, SendResult
from receiver.outbound.status import StatusTracker
from receiver.outbound.workflow import Outbound

__all__ = [
    "FALLBACK_LINK_TTL",
    "MAX_BODY",
    "MAX_FILENAME",
    "MMS_LINK_TTL",
    "BulkSender",
    "BulkSummary",
    "Hosting",
    "MediaLinks",
    "Outbound",
    "OutboundRequest",
    "PreparedMedia",
    "PreparedMessage",
    "Preparer",
    "SendResult",
    "Sender",
    "StatusTracker",
    "campaign_name",
    "carries_mms",
    "parse_since",
    "parse_size",
    "read_campaign",
    "row_key",
    "short_filename",
    "sms_segments",
    "validate_request",
]
