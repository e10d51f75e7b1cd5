"""Failed logins and API-token failures, limited through the index for every worker and host.

Each client address may fail `failures` times per `window` seconds; then it
is locked until its oldest counted failure leaves the window. Locking is by
address only, so an attacker cannot lock the operator out: the operator at
another address is still checked. When one account sees more than
`account_failures` failures in a window from all addresses together, every
address is slowed to one failure per window (the global backoff), which
bounds a spread-out guessing attack without refusing a first attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, select, text

from receiver.index.errors import translate_db_errors
from receiver.index.schema import auth_failures

FAILURES = 5
WINDOW = 60.0
ACCOUNT_FAILURES = 20


class AuthThrottle:
    """Counts failures per (account, address) in the index; see the module docstring."""

    def __init__(
        self,
        index: Any,
        *,
        failures: int = FAILURES,
        window: float = WINDOW,
        account_failures: int = ACCOUNT_FAILURES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = index
        self.engine = index.engine
        self.failures = failures
        self.window = window
        self.account_failures = account_failures
        self.clock = clock

    def retry_after(self, address: str, account: str = "admin", now: float | None = None) -> int:
        """Seconds until `address` may try again (0: it may try now)."""
        now = self.clock() if now is None else now
        with translate_db_errors(), self.engine.connect() as conn:
            return self._wait(conn, account, address[:128], now)

    def reserve(self, address: str, account: str = "admin", now: float | None = None) -> int:
        """Atomically: 0 and one failure counted in advance, or the seconds to wait.

        Counting before the check keeps the limit exact when workers check at
        once; `succeeded` takes the failure back.
        """
        now = self.clock() if now is None else now
        address = address[:128]
        with translate_db_errors(), self.index.begin() as conn:
            self._serialise(conn)
            wait = self._wait(conn, account, address, now)
            if not wait:
                self._insert(conn, account, address, now)
            return wait

    def failed(self, address: str, account: str = "admin", now: float | None = None) -> None:
        """Count one failure of `address`."""
        now = self.clock() if now is None else now
        with translate_db_errors(), self.index.begin() as conn:
            self._insert(conn, account, address[:128], now)

    def succeeded(self, address: str, account: str = "admin") -> None:
        """Forget the failures of an address that proved itself."""
        with translate_db_errors(), self.index.begin() as conn:
            conn.execute(
                delete(auth_failures).where(
                    auth_failures.c.account == account, auth_failures.c.address == address[:128]
                )
            )

    def count(self) -> int:
        """How many failures are held (all accounts and addresses)."""
        with translate_db_errors(), self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(auth_failures)).scalar_one())

    def _allowed(self, conn: Any, account: str, now: float) -> int:
        """Failures an address may have in the window: fewer while the account is attacked."""
        total = conn.execute(
            select(func.count())
            .select_from(auth_failures)
            .where(auth_failures.c.account == account, auth_failures.c.at > now - self.window)
        ).scalar_one()
        return 1 if total >= self.account_failures else self.failures

    def _wait(self, conn: Any, account: str, address: str, now: float) -> int:
        allowed = self._allowed(conn, account, now)
        times = (
            conn.execute(
                select(auth_failures.c.at)
                .where(
                    auth_failures.c.account == account,
                    auth_failures.c.address == address,
                    auth_failures.c.at > now - self.window,
                )
                .order_by(auth_failures.c.at.desc())
                .limit(allowed)
            )
            .scalars()
            .all()
        )
        if len(times) < allowed:
            return 0
        return max(1, int(times[-1] + self.window - now + 0.999))

    def _insert(self, conn: Any, account: str, address: str, now: float) -> None:
        # Old failures go as new ones come: the table holds one window's worth.
        conn.execute(delete(auth_failures).where(auth_failures.c.at <= now - self.window))
        conn.execute(auth_failures.insert().values(account=account, address=address, at=now))

    @staticmethod
    def _serialise(conn: Any) -> None:
        # SQLite writers already queue on the index's writer lock; PostgreSQL
        # needs its own lock so two workers cannot both count 4 and check.
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
