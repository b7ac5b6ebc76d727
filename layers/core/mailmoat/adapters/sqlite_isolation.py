"""SqliteIsolationStore: isolated-file records, portal tokens (hashed), downloads and attempts in SQLite."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mailmoat.adapters.sqlite import SqliteDatabase, utc_text
from mailmoat.context import Verdict
from mailmoat.isolation import (
    DownloadRecord,
    IsolatedFile,
    PortalAccess,
    PortalLink,
    PortalMessage,
)

if TYPE_CHECKING:
    from mailmoat.ppap import OpenedFile, PairableFile

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS portal_messages (
      id TEXT PRIMARY KEY,
      tenant TEXT NOT NULL,
      language TEXT NOT NULL,
      from_header TEXT,
      subject TEXT,
      date TEXT,
      mail_from TEXT,
      route TEXT NOT NULL DEFAULT '[]',
      created_at TEXT NOT NULL,
      expires_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS isolated_files (
      message_id TEXT NOT NULL,
      path TEXT NOT NULL,
      filename TEXT NOT NULL,
      size INTEGER NOT NULL,
      sha256 TEXT NOT NULL,
      declared_type TEXT NOT NULL,
      detected_type TEXT,
      verdict TEXT NOT NULL,
      symbols TEXT NOT NULL DEFAULT '[]',
      members TEXT NOT NULL DEFAULT '[]',
      action TEXT NOT NULL,
      blob_key TEXT,
      expires_at TEXT NOT NULL,
      PRIMARY KEY (message_id, path)
    )""",
    "CREATE INDEX IF NOT EXISTS isolated_files_expiry ON isolated_files(expires_at)",
    # token_sha256 only: the token itself is never written anywhere on our side.
    """CREATE TABLE IF NOT EXISTS portal_tokens (
      token_sha256 TEXT PRIMARY KEY,
      message_id TEXT NOT NULL,
      recipient TEXT NOT NULL,
      created_at TEXT NOT NULL,
      expires_at TEXT NOT NULL,
      UNIQUE (message_id, recipient)
    )""",
    """CREATE TABLE IF NOT EXISTS portal_downloads (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      at TEXT NOT NULL,
      message_id TEXT NOT NULL,
      path TEXT NOT NULL,
      kind TEXT NOT NULL,
      client_ip TEXT,
      recipient TEXT NOT NULL
    )""",
    # PPAP pairing (mailmoat.ppap): held encrypted files a follow-up may open, and what opened.
    # Neither holds a password: only which message's password it was.
    """CREATE TABLE IF NOT EXISTS ppap_pairable (
      message_id TEXT NOT NULL,
      path TEXT NOT NULL,
      tenant TEXT NOT NULL,
      sender_domain TEXT NOT NULL,
      data TEXT NOT NULL,
      expires_at TEXT NOT NULL,
      PRIMARY KEY (message_id, path)
    )""",
    "CREATE INDEX IF NOT EXISTS ppap_pairable_sender ON ppap_pairable(tenant, sender_domain)",
    """CREATE TABLE IF NOT EXISTS ppap_opened (
      message_id TEXT NOT NULL,
      path TEXT NOT NULL,
      data TEXT NOT NULL,
      expires_at TEXT NOT NULL,
      PRIMARY KEY (message_id, path)
    )""",
    # Retro-hunt (mailmoat.retrohunt): the last signature state, who was told about what.
    """CREATE TABLE IF NOT EXISTS retrohunt_markers (
      key TEXT PRIMARY KEY,
      value TEXT NOT NULL,
      expires_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS portal_downloads_at ON portal_downloads(at)",
)

# Columns added after the first schema: a data directory from before them gets them on open.
_ADDED_FILE_COLUMNS = (("sandbox_ticket", "TEXT"), ("sandbox_submitted_at", "TEXT"))


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


class SqliteIsolationStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.create(_SCHEMA)
        with db.transaction() as c:
            present = {row[1] for row in c.execute("PRAGMA table_info(isolated_files)")}
            for column, kind in _ADDED_FILE_COLUMNS:
                if column not in present:  # a data directory from before the sandbox flow
                    c.execute(f"ALTER TABLE isolated_files ADD COLUMN {column} {kind}")
            c.execute("CREATE INDEX IF NOT EXISTS isolated_files_sandbox"
                      " ON isolated_files(sandbox_ticket) WHERE sandbox_ticket IS NOT NULL")

    def save(self, message: PortalMessage, files: list[IsolatedFile]) -> None:
        """Idempotent: a stage re-run rewrites the same rows."""
        with self.db.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO portal_messages(id, tenant, language, from_header, subject,"
                " date, mail_from, route, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (message.id, message.tenant, message.language, message.from_header, message.subject,
                 message.date, message.mail_from, json.dumps(message.route, ensure_ascii=False),
                 utc_text(message.created_at), utc_text(message.expires_at)))
            for f in files:
                _put_file(c, f)

    def update_file(self, file: IsolatedFile) -> None:
        """One file's record rewritten (the sandbox's later verdict)."""
        with self.db.transaction() as c:
            _put_file(c, file)

    def analysing(self, limit: int = 200) -> list[IsolatedFile]:
        rows = self.db.query("SELECT * FROM isolated_files WHERE sandbox_ticket IS NOT NULL"
                             " ORDER BY sandbox_submitted_at LIMIT ?", (max(1, limit),))
        return [_file(r) for r in rows]

    def set_token(self, message_id: str, recipient: str, token_sha256: str,
                  expires_at: datetime) -> None:
        with self.db.transaction() as c:
            c.execute("DELETE FROM portal_tokens WHERE message_id = ? AND recipient = ?",
                      (message_id, recipient))
            c.execute("INSERT INTO portal_tokens(token_sha256, message_id, recipient, created_at,"
                      " expires_at) VALUES (?,?,?,?,?)",
                      (token_sha256, message_id, recipient, utc_text(datetime.now(UTC)),
                       utc_text(expires_at)))

    def has_token(self, message_id: str, recipient: str) -> bool:
        rows = self.db.query("SELECT 1 FROM portal_tokens WHERE message_id = ? AND recipient = ?",
                             (message_id, recipient.lower()))
        return bool(rows)

    def access(self, token_sha256: str, now: datetime) -> PortalAccess | None:
        rows = self.db.query(
            "SELECT message_id, recipient, expires_at FROM portal_tokens"
            " WHERE token_sha256 = ? AND expires_at > ?", (token_sha256, utc_text(now)))
        if not rows:
            return None
        row = rows[0]
        return PortalAccess(row["message_id"], row["recipient"], _dt(row["expires_at"]))

    def message(self, message_id: str) -> PortalMessage | None:
        rows = self.db.query("SELECT * FROM portal_messages WHERE id = ?", (message_id,))
        return _message(rows[0]) if rows else None

    def files(self, message_id: str) -> list[IsolatedFile]:
        rows = self.db.query("SELECT * FROM isolated_files WHERE message_id = ?", (message_id,))
        files = [_file(r) for r in rows]
        # IMAP-like paths sort by their numbers ("2" < "10", "3" < "3.1").
        return sorted(files, key=lambda f: [int(x) if x.isdigit() else 0 for x in f.path.split(".")])

    def record_download(self, record: DownloadRecord) -> None:
        with self.db.transaction() as c:
            c.execute("INSERT INTO portal_downloads(at, message_id, path, kind, client_ip, recipient)"
                      " VALUES (?,?,?,?,?,?)",
                      (utc_text(record.at), record.message_id, record.path, record.kind,
                       record.client_ip, record.recipient))

    def downloads(self, message_id: str) -> list[DownloadRecord]:
        rows = self.db.query("SELECT * FROM portal_downloads WHERE message_id = ? ORDER BY id",
                             (message_id,))
        return [DownloadRecord(_dt(r["at"]), r["message_id"], r["path"], r["kind"], r["client_ip"],
                               r["recipient"]) for r in rows]

    def expired(self, now: datetime) -> list[IsolatedFile]:
        rows = self.db.query("SELECT * FROM isolated_files WHERE expires_at <= ?", (utc_text(now),))
        return [_file(r) for r in rows]

    def delete_expired(self, now: datetime) -> int:
        stamp = utc_text(now)
        with self.db.transaction() as c:
            n = c.execute("DELETE FROM isolated_files WHERE expires_at <= ?", (stamp,)).rowcount
            c.execute("DELETE FROM portal_tokens WHERE expires_at <= ?", (stamp,))
            c.execute("DELETE FROM portal_messages WHERE expires_at <= ?", (stamp,))
            c.execute("DELETE FROM ppap_pairable WHERE expires_at <= ?", (stamp,))
            c.execute("DELETE FROM ppap_opened WHERE expires_at <= ?", (stamp,))
            c.execute("DELETE FROM retrohunt_markers WHERE expires_at <= ?", (stamp,))
        return int(n)

    def add_pairable(self, entry: PairableFile) -> None:
        with self.db.transaction() as c:
            c.execute("INSERT OR REPLACE INTO ppap_pairable(message_id, path, tenant, sender_domain,"
                      " data, expires_at) VALUES (?,?,?,?,?,?)",
                      (entry.message_id, entry.path, entry.tenant, entry.sender_domain,
                       json.dumps(entry.to_dict(), ensure_ascii=False), utc_text(entry.expires_at)))

    def pairable(self, tenant: str, sender_domain: str, now: datetime) -> list[PairableFile]:
        from mailmoat.ppap import PairableFile

        rows = self.db.query("SELECT data FROM ppap_pairable WHERE tenant = ? AND sender_domain = ?"
                             " AND expires_at > ? ORDER BY expires_at LIMIT 200",
                             (tenant, sender_domain, utc_text(now)))
        return [PairableFile.from_dict(json.loads(r["data"])) for r in rows]

    def set_opened(self, opened: OpenedFile, expires_at: datetime) -> None:
        with self.db.transaction() as c:
            c.execute("INSERT OR REPLACE INTO ppap_opened(message_id, path, data, expires_at)"
                      " VALUES (?,?,?,?)",
                      (opened.message_id, opened.path,
                       json.dumps(opened.to_dict(), ensure_ascii=False), utc_text(expires_at)))

    def opened(self, message_id: str, path: str) -> OpenedFile | None:
        from mailmoat.ppap import OpenedFile

        rows = self.db.query("SELECT data FROM ppap_opened WHERE message_id = ? AND path = ?",
                             (message_id, path))
        return OpenedFile.from_dict(json.loads(rows[0]["data"])) if rows else None

    def held_files(self, now: datetime, limit: int) -> list[IsolatedFile]:
        rows = self.db.query("SELECT * FROM isolated_files WHERE blob_key IS NOT NULL"
                             " AND expires_at > ? ORDER BY expires_at DESC LIMIT ?",
                             (utc_text(now), max(1, limit)))
        return [_file(r) for r in rows]

    def downloaded_since(self, since: datetime, limit: int) -> list[DownloadRecord]:
        rows = self.db.query("SELECT * FROM portal_downloads WHERE at >= ? ORDER BY id DESC LIMIT ?",
                             (utc_text(since), max(1, limit)))
        return [DownloadRecord(_dt(r["at"]), r["message_id"], r["path"], r["kind"], r["client_ip"],
                               r["recipient"]) for r in rows]

    def mark_danger(self, message_id: str, path: str, symbols: list[str]) -> bool:
        """The file is danger now and its bytes go: the portal offers it nothing from here on."""
        with self.db.transaction() as c:
            rows = c.execute("SELECT symbols FROM isolated_files WHERE message_id = ? AND path = ?",
                             (message_id, path)).fetchall()
            if not rows:
                return False
            merged = list(dict.fromkeys(json.loads(rows[0][0] or "[]") + list(symbols)))
            c.execute("UPDATE isolated_files SET verdict = ?, symbols = ?, blob_key = NULL"
                      " WHERE message_id = ? AND path = ?",
                      (str(Verdict.DANGER), json.dumps(merged), message_id, path))
        return True

    def get_marker(self, key: str) -> str | None:
        rows = self.db.query("SELECT value, expires_at FROM retrohunt_markers WHERE key = ?", (key,))
        if not rows or (rows[0]["expires_at"] and _dt(rows[0]["expires_at"]) <= datetime.now(UTC)):
            return None
        return str(rows[0]["value"])

    def put_marker(self, key: str, value: str, expires_at: datetime | None) -> None:
        with self.db.transaction() as c:
            c.execute("INSERT OR REPLACE INTO retrohunt_markers(key, value, expires_at) VALUES (?,?,?)",
                      (key, value, utc_text(expires_at) if expires_at else None))

    def tenant_messages(self, tenant: str, limit: int = 50, offset: int = 0) -> list[PortalMessage]:
        rows = self.db.query("SELECT * FROM portal_messages WHERE tenant = ?"
                             " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                             (tenant, max(0, min(limit, 1000)), max(0, offset)))
        return [_message(r) for r in rows]

    def links(self, message_id: str) -> list[PortalLink]:
        rows = self.db.query("SELECT recipient, created_at, expires_at FROM portal_tokens"
                             " WHERE message_id = ? ORDER BY recipient", (message_id,))
        return [PortalLink(message_id, r["recipient"], _dt(r["created_at"]), _dt(r["expires_at"]))
                for r in rows]

    def revoke(self, message_id: str, recipient: str) -> bool:
        """The recipient's link stops working at once; True when there was one."""
        with self.db.transaction() as c:
            n = c.execute("DELETE FROM portal_tokens WHERE message_id = ? AND recipient = ?",
                          (message_id, recipient.lower())).rowcount
        return bool(n)


def _message(r: sqlite3.Row) -> PortalMessage:
    return PortalMessage(id=r["id"], tenant=r["tenant"], language=r["language"],
                         from_header=r["from_header"], subject=r["subject"], date=r["date"],
                         mail_from=r["mail_from"], route=json.loads(r["route"] or "[]"),
                         created_at=_dt(r["created_at"]), expires_at=_dt(r["expires_at"]))


def _put_file(c: sqlite3.Cursor | sqlite3.Connection, f: IsolatedFile) -> None:
    c.execute(
        "INSERT OR REPLACE INTO isolated_files(message_id, path, filename, size, sha256,"
        " declared_type, detected_type, verdict, symbols, members, action, blob_key,"
        " expires_at, sandbox_ticket, sandbox_submitted_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (f.message_id, f.path, f.filename, f.size, f.sha256, f.declared_type,
         f.detected_type, str(f.verdict), json.dumps(f.symbols),
         json.dumps(f.members, ensure_ascii=False), f.action, f.blob_key,
         utc_text(f.expires_at), f.sandbox_ticket,
         utc_text(f.sandbox_submitted_at) if f.sandbox_submitted_at else None))


def _file(r: sqlite3.Row) -> IsolatedFile:
    return IsolatedFile(
        message_id=r["message_id"], path=r["path"], filename=r["filename"], size=r["size"],
        sha256=r["sha256"], declared_type=r["declared_type"], detected_type=r["detected_type"],
        verdict=Verdict(r["verdict"]), symbols=json.loads(r["symbols"] or "[]"),
        action=r["action"], expires_at=_dt(r["expires_at"]), blob_key=r["blob_key"],
        members=json.loads(r["members"] or "[]"), sandbox_ticket=r["sandbox_ticket"],
        sandbox_submitted_at=_dt(r["sandbox_submitted_at"]) if r["sandbox_submitted_at"] else None)
