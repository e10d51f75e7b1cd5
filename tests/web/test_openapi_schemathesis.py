"""The OpenAPI document matches the routes, and the live API keeps every promise it makes.

schemathesis generates requests from /api/openapi.json (valid and invalid
ones) and checks each answer against the document: status codes, content
types, JSON schemas, that authentication is enforced, and that nothing
answers 5xx. It runs against a real HTTP server on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import AUTH
from tests.support.conformance import conformance_failures, documented_operations
from tests.support.loopback import serving
from tests.web.seed import Item, Seeder

MAX_EXAMPLES = 20


def openapi_path(rule: str) -> str:
    """A Flask rule (`/api/messages/<sid>`) as an OpenAPI path (`/api/messages/{sid}`)."""
    out = rule
    while "<" in out:
        start, end = out.index("<"), out.index(">")
        name = out[start + 1 : end].split(":")[-1]
        out = out[:start] + "{" + name + "}" + out[end + 1 :]
    return out


def test_document_matches_the_routes(app: Any, client: Any) -> None:
    doc = client.get("/api/openapi.json", headers=AUTH).get_json()
    assert doc["openapi"].startswith("3.")
    documented = {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    routed = {
        (openapi_path(rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routed - documented == set(), "routes missing from receiver/openapi.json"
    assert documented - routed == set(), "documented operations that do not exist"


@pytest.fixture
def live_api(app: Any) -> Iterator[str]:
    seed = Seeder(app)
    seed.message(
        body="hello",
        items=[Item(), Item(kind="video", detected_type="video/mp4", ext="mp4", data=b"\0" * 4096)],
    )
    seed.message(
        from_addr="+15550000002",
        body="card",
        items=[
            Item(
                kind="contact",
                detected_type="text/vcard",
                ext="vcf",
                contact={"name": "Pat", "phones": ["+1555"], "emails": []},
            )
        ],
    )
    lost = seed.message(body="lost", items=[Item(), Item(state="rejected", reason="type_mismatch")])
    for _ in range(5):
        seed.message(body="filler")
    store = app.extensions["receiver"].store
    store.delete(seed.media_rows(lost)[0]["storage_key"])
    with serving(app) as url:
        yield url


def test_live_api_conforms_to_its_document(live_api: str) -> None:
    # The routes described by receiver/openapi.json; feature blueprints test their own.
    operations = documented_operations(
        live_api, AUTH, r"^/api/(messages|media|openapi)", method="GET"
    )
    assert sorted(op.label for op in operations) == [
        "GET /api/media/{media_id}/content",
        "GET /api/media/{media_id}/playable",
        "GET /api/media/{media_id}/similar",
        "GET /api/media/{media_id}/thumbnail",
        "GET /api/messages",
        "GET /api/messages/{sid}",
        "GET /api/openapi.json",
    ]
    failures = conformance_failures(
        operations,
        live_api,
        AUTH,
        max_examples=MAX_EXAMPLES,
        positive_only={"GET /api/openapi.json"},  # no parameters: nothing to make invalid
    )
    assert not failures, "\n\n".join(failures)


def test_document_needs_credentials(live_api: str) -> None:
    assert requests.get(f"{live_api}/api/openapi.json", timeout=5).status_code == 401
