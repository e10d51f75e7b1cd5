"""Fixtures of the media tests: real media servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.mediaserver import MediaServer


@pytest.fixture
def server() -> Iterator[MediaServer]:
    with MediaServer() as media:
        yield media


@pytest.fixture
def other() -> Iterator[MediaServer]:
    """A second server: another port on loopback, so another origin."""
    with MediaServer() as media:
        yield media
