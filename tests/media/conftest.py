"""Fixtures of the media tests: real media servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.mediaserver import MediaServer


@pytest.fixture
def server(media_server: MediaServer) -> MediaServer:
    """The real media server of tests/conftest.py, by the short name these tests use."""
    return media_server


@pytest.fixture
def other() -> Iterator[MediaServer]:
    """A second server: another port on loopback, so another origin."""
    with MediaServer() as media:
        yield media
