"""AttemptStore on the gateway's SQLite database: one row per sign-in counter (mailmoat.attempts).

A transition is one BEGIN IMMEDIATE transaction (the database's writer lock serialises the portal's
threads and every other process on the file), so a counter is read and written as one step.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from mailmoat.adapters.sqlite import SqliteDatabase, utc_text
from mailmoat.ports import AttemptState

T = TypeVar("T")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS signin_attempts (
      key TEXT PRIMARY KEY,
      count INTEGER NOT NULL,
      last_at TEXT,
      next_at TEXT,
      expires_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS signin_attempts_expiry ON signin_attempts(expires_at)",
    # The per-feature failure rows these counters replace (read, then written after the hash).
    "DROP TABLE IF EXISTS admin_login_failures",
    "DROP TABLE IF EXISTS keepmail_failures",
    "DROP TABLE IF EXISTS portal_attempts",
)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class SqliteAttemptStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.create(_SCHEMA)

    def transition(self, key: str, step: Callable[[AttemptState | None], tuple[T, AttemptState | None]],
                   expires_at: datetime) -> T:
        # Not durable: after a power loss a counter may be a few attempts short, never wrong.
        with self.db.transaction(durable=False) as c:
            row = c.execute("SELECT count, last_at, next_at FROM signin_attempts WHERE key = ?",
                            (key,)).fetchone()
            state = AttemptState(int(row["count"]), _time(row["last_at"]), _time(row["next_at"])) \
                if row else None
            answer, new = step(state)
            if new is None:
                c.execute("DELETE FROM signin_attempts WHERE key = ?", (key,))
            else:
                c.execute("INSERT INTO signin_attempts(key, count, last_at, next_at, expires_at)"
                          " VALUES (?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET count = excluded.count,"
                          " last_at = excluded.last_at, next_at = excluded.next_at,"
                          " expires_at = excluded.expires_at",
                          (key, new.count, utc_text(new.last_at) if new.last_at else None,
                           utc_text(new.next_at) if new.next_at else None, utc_text(expires_at)))
            if new is not None and new.last_at is not None:
                # Rows that expired before this counter's last attempt are over (the step's
                # times are the caller's clock, so none is deleted early); the table stays small.
                c.execute("DELETE FROM signin_attempts WHERE expires_at < ?", (utc_text(new.last_at),))
        return answer
