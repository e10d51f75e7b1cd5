"""Fixtures shared by the web tests: rows seeded straight into the app's index and store."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.seed import Seeder


@pytest.fixture
def seed(app: Any) -> Seeder:
    """Writes messages and media for `app` the way the pipeline leaves them."""
    return Seeder(app)
