"""SqliteKeepMailStore: keep-mail index rows, credentials, one-time codes and sessions in SQLite."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from mailmoat.adapters.sqlite import SqliteDatabase, utc_text
from mailmoat.keepmail import KeptMessage, OneTimeCode

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS keepmail_messages (
      message_id TEXT NOT NULL,
      recipient TEXT NOT NULL,
      tenant TEXT NOT NULL,
      received_at TEXT NOT NULL,
      from_header TEXT,
      subject TEXT,
      outcome TEXT NOT NULL,
      blob_key TEXT NOT NULL,
      kept_until TEXT NOT NULL,
      PRIMARY KEY (message_id, recipient)
    )""",
    "CREATE INDEX IF NOT EXISTS keepmail_by_recipient ON keepmail_messages(recipient, received_at)",
    "CREATE INDEX IF NOT EXISTS keepmail_by_expiry ON keepmail_messages(kept_until)",
    # Hashes only: argon2 for passwords and codes, SHA-256 of the session token.
    """CREATE TABLE IF NOT EXISTS keepmail_users (
      address TEXT PRIMARY KEY,
      password_hash TEXT,
      alternate TEXT,
      updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS keepmail_codes (
      address TEXT PRIMARY KEY,
      code_hash TEXT NOT NULL,
      expires_at TEXT NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      created_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS keepmail_sessions (
      token_sha256 TEXT PRIMARY KEY,
      address TEXT NOT NULL,
      expires_at TEXT NOT NULL
    )""",
)



def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


class SqliteKeepMailStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.create(_SCHEMA)

    # --- kept copies ---------------------------------------------------------------------------
    def put(self, kept: KeptMessage) -> None:
        with self.db.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO keepmail_messages(message_id, recipient, tenant, received_at,"
                " from_header, subject, outcome, blob_key, kept_until) VALUES (?,?,?,?,?,?,?,?,?)",
                (kept.message_id, kept.recipient, kept.tenant, utc_text(kept.received_at),
                 kept.from_header, kept.subject, kept.outcome, kept.blob_key, utc_text(kept.kept_until)))

    def get(self, message_id: str, recipient: str) -> KeptMessage | None:
        rows = self.db.query("SELECT * FROM keepmail_messages WHERE message_id = ? AND recipient = ?",
                             (message_id, recipient))
        return _kept(rows[0]) if rows else None

    def messages(self, recipient: str, since: datetime, limit: int = 500) -> list[KeptMessage]:
        rows = self.db.query(
            "SELECT * FROM keepmail_messages WHERE recipient = ? AND received_at >= ?"
            " ORDER BY received_at DESC LIMIT ?", (recipient, utc_text(since), limit))
        return [_kept(r) for r in rows]

    def expired(self, now: datetime) -> list[KeptMessage]:
        rows = self.db.query("SELECT * FROM keepmail_messages WHERE kept_until <= ?", (utc_text(now),))
        return [_kept(r) for r in rows]

    def delete(self, message_id: str, recipient: str) -> None:
        with self.db.transaction() as c:
            c.execute("DELETE FROM keepmail_messages WHERE message_id = ? AND recipient = ?",
                      (message_id, recipient))

    # --- credentials ---------------------------------------------------------------------------
    def _set_user(self, address: str, column: str, value: str | None) -> None:
        if column not in ("password_hash", "alternate"):
            raise ValueError(column)
        with self.db.transaction() as c:
            c.execute(f"INSERT INTO keepmail_users(address, {column}, updated_at) VALUES (?,?,?)"  # noqa: S608
                      f" ON CONFLICT(address) DO UPDATE SET {column} = excluded.{column},"
                      " updated_at = excluded.updated_at",
                      (address, value, utc_text(datetime.now(UTC))))

    def set_password(self, address: str, password_hash: str | None) -> None:
        self._set_user(address, "password_hash", password_hash)

    def password_hash(self, address: str) -> str | None:
        rows = self.db.query("SELECT password_hash FROM keepmail_users WHERE address = ?", (address,))
        return rows[0]["password_hash"] if rows else None

    def set_alternate(self, address: str, alternate: str | None) -> None:
        self._set_user(address, "alternate", alternate)

    def alternate(self, address: str) -> str | None:
        rows = self.db.query("SELECT alternate FROM keepmail_users WHERE address = ?", (address,))
        return rows[0]["alternate"] if rows else None

    # --- one-time codes ------------------------------------------------------------------------
    def set_code(self, address: str, code: OneTimeCode | None) -> None:
        with self.db.transaction() as c:
            c.execute("DELETE FROM keepmail_codes WHERE address = ?", (address,))
            if code is not None:
                c.execute("INSERT INTO keepmail_codes(address, code_hash, expires_at, attempts, created_at)"
                          " VALUES (?,?,?,?,?)", (address, code.code_sha, utc_text(code.expires_at),
                                                  code.attempts, utc_text(code.created_at)))

    def code(self, address: str) -> OneTimeCode | None:
        rows = self.db.query("SELECT * FROM keepmail_codes WHERE address = ?", (address,))
        if not rows:
            return None
        r = rows[0]
        return OneTimeCode(r["code_hash"], _dt(r["expires_at"]), int(r["attempts"]), _dt(r["created_at"]))

    def count_code_attempt(self, address: str) -> None:
        with self.db.transaction() as c:
            c.execute("UPDATE keepmail_codes SET attempts = attempts + 1 WHERE address = ?", (address,))

    # --- sessions ------------------------------------------------------------------------------
    def add_session(self, token_sha256: str, address: str, expires_at: datetime) -> None:
        with self.db.transaction() as c:
            c.execute("INSERT INTO keepmail_sessions(token_sha256, address, expires_at) VALUES (?,?,?)",
                      (token_sha256, address, utc_text(expires_at)))

    def session(self, token_sha256: str, now: datetime) -> str | None:
        rows = self.db.query("SELECT address FROM keepmail_sessions"
                             " WHERE token_sha256 = ? AND expires_at > ?", (token_sha256, utc_text(now)))
        return str(rows[0]["address"]) if rows else None

    def end_session(self, token_sha256: str) -> None:
        with self.db.transaction() as c:
            c.execute("DELETE FROM keepmail_sessions WHERE token_sha256 = ?", (token_sha256,))

    def purge(self, now: datetime) -> None:
        stamp = utc_text(now)
        with self.db.transaction() as c:
            c.execute("DELETE FROM keepmail_sessions WHERE expires_at <= ?", (stamp,))
            c.execute("DELETE FROM keepmail_codes WHERE expires_at <= ?", (stamp,))


def _kept(r: sqlite3.Row) -> KeptMessage:
    return KeptMessage(message_id=r["message_id"], recipient=r["recipient"], tenant=r["tenant"],
                       received_at=_dt(r["received_at"]), from_header=r["from_header"],
                       subject=r["subject"], outcome=r["outcome"], blob_key=r["blob_key"],
                       kept_until=_dt(r["kept_until"]))
