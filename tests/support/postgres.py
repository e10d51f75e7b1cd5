"""Throwaway databases on the local PostgreSQL server (TEST_PG_HOST/PORT/USER, trust auth)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

from tests.support.services import port_open

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
ADMIN_URL = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"


def pg_available() -> bool:
    """Whether the local PostgreSQL accepts connections."""
    return port_open(PG_HOST, PG_PORT)


@contextlib.contextmanager
def fresh_database(admin_url: str = ADMIN_URL, prefix: str = "mmsr_test_") -> Iterator[str]:
    """A new empty database on the server of `admin_url`, dropped (even if in use) afterwards."""
    import psycopg

    name = prefix + secrets.token_hex(6)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
