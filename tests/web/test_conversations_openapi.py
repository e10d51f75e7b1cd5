"""The Conversations routes keep the promises of receiver/openapi.json (schemathesis, live)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import AUTH
from tests.inbound.test_conversation_receipts import receipt_params
from tests.inbound.test_conversations import PATH, message_params, participant_params
from tests.support.conformance import conformance_failures, documented_operations
from tests.support.loopback import serving
from tests.support.webhooks import WebhookPoster, new_sid


@pytest.fixture
def live_api(app: Any) -> Iterator[str]:
    post = WebhookPoster(app.test_client())
    conversation = new_sid("CH")
    participant = new_sid("MB")
    member = participant_params(conversation, participant, "+15550001")
    assert post.post(member, path=PATH).status_code == 200
    sids = [new_sid("IM") for _ in range(3)]
    for n, sid in enumerate(sids):
        params = message_params(sid, conversation, index=n, body=f"m{n}")
        assert post.post(params, path=PATH).status_code == 200
    # A delivery receipt, so the document's `receipts` items are checked too.
    receipt = receipt_params(conversation, sids[0], participant, "undelivered", error="30003")
    assert post.post(receipt, path=PATH).status_code == 200
    with serving(app) as url:
        yield url


def test_conversation_routes_conform_to_the_document(live_api: str) -> None:
    operations = documented_operations(live_api, AUTH, r"^/api/conversations", method="GET")
    assert sorted(op.label for op in operations) == [
        "GET /api/conversations",
        "GET /api/conversations/{sid}",
    ]
    session = requests.Session()
    listed = session.get(f"{live_api}/api/conversations", headers=AUTH, timeout=5).json()
    (known,) = [c["sid"] for c in listed["conversations"]]
    failures = conformance_failures(operations, live_api, AUTH, max_examples=15, session=session)
    # The known conversation validates too (generated SIDs are all unknown: 404).
    one = operations[1].Case(path_parameters={"sid": known})
    one.call_and_validate(base_url=live_api, session=session, headers=AUTH)
    assert not failures, "\n\n".join(failures)
