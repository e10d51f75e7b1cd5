"""The Conversations routes keep the promises of receiver/openapi.json (schemathesis, live)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.conftest import AUTH
from tests.inbound.test_conversation_receipts import receipt_params
from tests.inbound.test_conversations import PATH, message_params, participant_params
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
    schema = schemathesis.openapi.from_url(f"{live_api}/api/openapi.json", headers=AUTH)
    schema = schema.include(method="GET", path_regex=r"^/api/conversations")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert sorted(op.label for op in operations) == [
        "GET /api/conversations",
        "GET /api/conversations/{sid}",
    ]
    session = requests.Session()
    listed = session.get(f"{live_api}/api/conversations", headers=AUTH, timeout=5).json()
    (known,) = [c["sid"] for c in listed["conversations"]]
    failures: list[str] = []
    for operation, mode in itertools.product(
        operations, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ):

        @settings(
            max_examples=15,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            case.call_and_validate(base_url=live_api, session=session, headers=AUTH)

        try:
            run()
        except Exception as exc:  # collect every operation's problem, then fail once
            failures.append(f"{operation.label} ({mode.value}): {exc}")
    # The known conversation validates too (generated SIDs are all unknown: 404).
    one = operations[1].Case(path_parameters={"sid": known})
    one.call_and_validate(base_url=live_api, session=session, headers=AUTH)
    assert not failures, "\n\n".join(failures)
