"""SqliteSpamStore: held spam copies and per-recipient allowed senders, in the gateway's SQLite file."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from mailmoat.adapters.sqlite import SqliteDatabase, utc_text
from mailmoat.spam.quarantine import HELD, RELEASED, HeldMessage

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS spam_held (
      message_id TEXT NOT NULL,
      recipient TEXT NOT NULL,
      tenant TEXT NOT NULL,
      held_at TEXT NOT NULL,
      expires_at TEXT NOT NULL,
      blob_key TEXT NOT NULL,
      mail_from TEXT,
      from_header TEXT,
      subject TEXT,
      date TEXT,
      score REAL,
      sources TEXT NOT NULL DEFAULT '[]',
      state TEXT NOT NULL,
      digested_at TEXT,
      released_at TEXT,
      released_by TEXT,
      PRIMARY KEY (message_id, recipient)
    )""",
    "CREATE INDEX IF NOT EXISTS spam_held_recipient ON spam_held(recipient, state)",
    "CREATE INDEX IF NOT EXISTS spam_held_expiry ON spam_held(expires_at)",
    """CREATE TABLE IF NOT EXISTS spam_allowed_senders (
      recipient TEXT NOT NULL,
      sender TEXT NOT NULL,
      added_at TEXT NOT NULL,
      PRIMARY KEY (recipient, sender)
    )""",
)



def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class SqliteSpamStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.create(_SCHEMA)

    def save(self, held: HeldMessage) -> None:
        """The first record wins: a pipeline re-run must not forget a release or a digest."""
        with self.db.transaction() as c:
            c.execute(
                "INSERT INTO spam_held(message_id, recipient, tenant, held_at, expires_at, blob_key,"
                " mail_from, from_header, subject, date, score, sources, state)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(message_id, recipient) DO NOTHING",
                (held.message_id, held.recipient.lower(), held.tenant, utc_text(held.held_at),
                 utc_text(held.expires_at), held.blob_key, held.mail_from, held.from_header,
                 held.subject, held.date, held.score, json.dumps(held.sources), held.state))

    def get(self, message_id: str, recipient: str) -> HeldMessage | None:
        rows = self.db.query("SELECT * FROM spam_held WHERE message_id = ? AND recipient = ?",
                             (message_id, recipient.lower()))
        return _held(rows[0]) if rows else None

    def held(self, *, tenant: str | None = None, recipient: str | None = None,
             now: datetime | None = None) -> list[HeldMessage]:
        sql = "SELECT * FROM spam_held WHERE state = ?"
        params: list[object] = [HELD]
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        if recipient is not None:
            sql += " AND recipient = ?"
            params.append(recipient.lower())
        if now is not None:
            sql += " AND expires_at > ?"
            params.append(utc_text(now))
        rows = self.db.query(sql + " ORDER BY recipient, held_at", params)
        return [_held(r) for r in rows]

    def pending_digest(self, now: datetime, tenant: str | None = None) -> list[HeldMessage]:
        sql = ("SELECT * FROM spam_held WHERE state = ? AND digested_at IS NULL AND expires_at > ?")
        params: list[object] = [HELD, utc_text(now)]
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        rows = self.db.query(sql + " ORDER BY recipient, held_at", params)
        return [_held(r) for r in rows]

    def mark_digested(self, keys: list[tuple[str, str]], at: datetime) -> None:
        with self.db.transaction() as c:
            c.executemany("UPDATE spam_held SET digested_at = ? WHERE message_id = ? AND recipient = ?",
                          [(utc_text(at), m, r.lower()) for m, r in keys])

    def mark_released(self, message_id: str, recipient: str, at: datetime, by: str) -> None:
        with self.db.transaction() as c:
            c.execute("UPDATE spam_held SET state = ?, released_at = ?, released_by = ?"
                      " WHERE message_id = ? AND recipient = ? AND state = ?",
                      (RELEASED, utc_text(at), by, message_id, recipient.lower(), HELD))

    def expired(self, now: datetime) -> list[HeldMessage]:
        rows = self.db.query("SELECT * FROM spam_held WHERE expires_at <= ?", (utc_text(now),))
        return [_held(r) for r in rows]

    def delete(self, message_id: str, recipient: str) -> None:
        with self.db.transaction() as c:
            c.execute("DELETE FROM spam_held WHERE message_id = ? AND recipient = ?",
                      (message_id, recipient.lower()))

    def allow_sender(self, recipient: str, sender: str, at: datetime) -> None:
        with self.db.transaction() as c:
            c.execute("INSERT OR IGNORE INTO spam_allowed_senders(recipient, sender, added_at)"
                      " VALUES (?,?,?)", (recipient.lower(), sender.strip().lower(), utc_text(at)))

    def allowed_senders(self, recipient: str) -> list[str]:
        rows = self.db.query("SELECT sender FROM spam_allowed_senders WHERE recipient = ?"
                             " ORDER BY sender", (recipient.lower(),))
        return [str(r["sender"]) for r in rows]


def _held(r: sqlite3.Row) -> HeldMessage:
    held_at = _dt(r["held_at"])
    expires_at = _dt(r["expires_at"])
    assert held_at is not None and expires_at is not None  # NOT NULL columns
    return HeldMessage(
        message_id=r["message_id"], recipient=r["recipient"], tenant=r["tenant"], held_at=held_at,
        expires_at=expires_at, blob_key=r["blob_key"], mail_from=r["mail_from"],
        from_header=r["from_header"], subject=r["subject"], date=r["date"], score=r["score"],
        sources=json.loads(r["sources"] or "[]"), state=r["state"],
        digested_at=_dt(r["digested_at"]), released_at=_dt(r["released_at"]),
        released_by=r["released_by"])
