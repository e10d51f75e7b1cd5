"""schemathesis against a live server: each documented operation, valid and invalid requests.

Every answer is checked against receiver/openapi.json (status codes, content
types, JSON schemas, authentication, no 5xx). Failures are collected per
operation and mode, so one run names every broken promise at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode


def documented_operations(
    base_url: str, headers: Mapping[str, str], path_regex: str, method: str | None = None
) -> list[Any]:
    """The operations of the served document whose path matches `path_regex` (and `method`)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json", headers=dict(headers))
    schema = schema.include(method=method, path_regex=path_regex)
    return [result.ok() for result in schema.get_all_operations()]


def conformance_failures(
    operations: list[Any],
    base_url: str,
    headers: Mapping[str, str],
    *,
    max_examples: int,
    session: requests.Session | None = None,
    positive_only: Collection[str] = (),
) -> list[str]:
    """Each operation's problem under generated valid and invalid requests ([] when none).

    `positive_only` names operations (`GET /api/openapi.json`) without parameters to make
    invalid. Examples are derandomised, so a failure repeats.
    """
    session = session or requests.Session()
    failures: list[str] = []
    for operation, mode in itertools.product(
        operations, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ):
        if mode == GenerationMode.NEGATIVE and operation.label in positive_only:
            continue

        @settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            case.call_and_validate(base_url=base_url, session=session, headers=dict(headers))

        try:
            run()
        except Exception as exc:  # collect every operation's problem, then fail once
            failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures
