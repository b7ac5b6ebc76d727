"""SQLite adapters for the directory and the message log (local runtime).

One database file under the data directory, in WAL mode. A transaction is durable (synchronous
=FULL: on disk at COMMIT) unless its caller says it need not be: the row written before the
SMTP `250`, delivery claims and outcomes are; a stage's progress marks (attempt counts, state
`processing`) are not — they survive a killed process (the OS has them) and are on disk with
the next durable commit (WAL order), and after a power loss the worst is a stage run again.

Several processes may open it (`mailmoat serve` with worker processes, the CLI beside a running
gateway): every write is one BEGIN IMMEDIATE transaction, taken under an exclusive lock on
`<database>.writer` so that writers of several processes queue in the kernel and each wakes
the moment the one before commits (SQLite's own busy handler polls, sleeping up to 100 ms a
time); busy_timeout stays as the backstop for writers that do not take that lock (the sqlite3
shell, an older build).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailmoat.ports import MessageRecord, Recipient, TraceQuery
from mailmoat.states import FINAL_STATES, MessageState, Outcome

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
  name TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS tenant_domains (
  domain TEXT PRIMARY KEY,
  tenant TEXT NOT NULL REFERENCES tenants(name)
);
CREATE TABLE IF NOT EXISTS recipients (
  address TEXT PRIMARY KEY,
  tenant TEXT NOT NULL REFERENCES tenants(name),
  name TEXT NOT NULL DEFAULT '',
  organisation TEXT NOT NULL DEFAULT '',
  department TEXT NOT NULL DEFAULT '',
  title TEXT NOT NULL DEFAULT '',
  memo TEXT NOT NULL DEFAULT '',
  spam_filter INTEGER NOT NULL DEFAULT 1,
  kind TEXT NOT NULL DEFAULT 'user',
  source TEXT NOT NULL DEFAULT 'manual',
  external_id TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS recipient_aliases (
  alias TEXT PRIMARY KEY,
  address TEXT NOT NULL REFERENCES recipients(address) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS recipient_aliases_address ON recipient_aliases(address);
CREATE TABLE IF NOT EXISTS directory_sync_state (
  tenant TEXT NOT NULL,
  provider TEXT NOT NULL,
  state TEXT NOT NULL DEFAULT '{}',
  updated_at TEXT NOT NULL,
  PRIMARY KEY (tenant, provider)
);
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY,
  received_at TEXT NOT NULL,
  updated_at TEXT,
  state TEXT NOT NULL,
  mail_from TEXT,
  rcpt_to TEXT NOT NULL DEFAULT '[]',
  client_ip TEXT,
  helo TEXT,
  message_id TEXT,
  subject TEXT,
  tenant TEXT,
  disposition TEXT,
  size INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT,
  timings TEXT NOT NULL DEFAULT '{}',
  report TEXT,
  error TEXT,
  raw_key TEXT,
  stage TEXT,
  tls TEXT
);
CREATE INDEX IF NOT EXISTS messages_state ON messages(state);
CREATE INDEX IF NOT EXISTS messages_received ON messages(received_at);
CREATE TABLE IF NOT EXISTS deliveries (
  message_id TEXT NOT NULL,
  recipient TEXT NOT NULL,
  outcome TEXT,
  released INTEGER NOT NULL DEFAULT 0,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (message_id, recipient)
);
"""


BUSY_TIMEOUT_SECONDS = 30.0


def utc_text(value: datetime) -> str:
    """How every adapter on this database stores a time: UTC, one format, so that text order
    in SQL is time order. A naive value is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def _now() -> str:
    return utc_text(datetime.now(UTC))


class SqliteDatabase:
    """One connection shared across threads behind a lock (the SMTP loop and the worker); one
    per process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=BUSY_TIMEOUT_SECONDS)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._writer = os.open(path.with_name(path.name + ".writer"), os.O_RDWR | os.O_CREAT, 0o600)
        with self._lock:
            self._conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._durable = True
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
            columns = {r["name"] for r in self._conn.execute("PRAGMA table_info(deliveries)")}
            if "released" not in columns:  # a data directory from before delivery claims
                self._conn.execute("ALTER TABLE deliveries ADD COLUMN released INTEGER NOT NULL DEFAULT 0")
            columns = {r["name"] for r in self._conn.execute("PRAGMA table_info(recipients)")}
            for column in ("source TEXT NOT NULL DEFAULT 'manual'",  # from before directory sync
                           "external_id TEXT NOT NULL DEFAULT ''"):
                if column.split()[0] not in columns:
                    self._conn.execute(f"ALTER TABLE recipients ADD COLUMN {column}")

    def create(self, statements: Iterable[str]) -> None:
        """A feature store's tables and indexes (CREATE … IF NOT EXISTS), in one transaction."""
        with self.transaction() as c:
            for statement in statements:
                c.execute(statement)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            fcntl.flock(self._writer, fcntl.LOCK_EX)
            try:
                if durable != self._durable:  # per connection; cannot change inside a transaction
                    self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                    self._durable = durable
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            finally:
                fcntl.flock(self._writer, fcntl.LOCK_UN)

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, tuple(params)))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            os.close(self._writer)


class SqliteDirectory:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def ensure_tenant(self, tenant: str, domains: Iterable[str]) -> bool:
        """Create the tenant if needed and (re)assign its domains; True when it is new."""
        with self.db.transaction() as c:
            created = c.execute("INSERT OR IGNORE INTO tenants(name) VALUES (?)",
                                (tenant,)).rowcount == 1
            for domain in domains:
                c.execute("INSERT OR REPLACE INTO tenant_domains(domain, tenant) VALUES (?, ?)",
                          (domain.lower(), tenant))
        return created

    def tenant_for_domain(self, domain: str) -> str | None:
        rows = self.db.query("SELECT tenant FROM tenant_domains WHERE domain = ?",
                             (domain.lower().rstrip("."),))
        return str(rows[0]["tenant"]) if rows else None

    def recipient(self, address: str) -> Recipient | None:
        """The recipient whose address or one of whose aliases this is (the RCPT-time gate)."""
        address = address.lower()
        rows = self.db.query("SELECT * FROM recipients WHERE address = ?", (address,))
        if not rows:
            rows = self.db.query("SELECT r.* FROM recipient_aliases a JOIN recipients r"
                                 " ON r.address = a.address WHERE a.alias = ?", (address,))
        if not rows:
            return None
        aliases = [a["alias"] for a in self.db.query(
            "SELECT alias FROM recipient_aliases WHERE address = ? ORDER BY alias", (rows[0]["address"],))]
        return _recipient(rows[0], aliases)

    def recipients(self, tenant: str | None = None) -> list[Recipient]:
        if tenant is None:
            rows = self.db.query("SELECT * FROM recipients ORDER BY address")
            alias_rows = self.db.query("SELECT alias, address FROM recipient_aliases ORDER BY alias")
        else:
            rows = self.db.query("SELECT * FROM recipients WHERE tenant = ? ORDER BY address", (tenant,))
            alias_rows = self.db.query(
                "SELECT a.alias, a.address FROM recipient_aliases a JOIN recipients r"
                " ON r.address = a.address WHERE r.tenant = ? ORDER BY a.alias", (tenant,))
        aliases: dict[str, list[str]] = {}
        for a in alias_rows:
            aliases.setdefault(a["address"], []).append(a["alias"])
        return [_recipient(r, aliases.get(r["address"], [])) for r in rows]

    def upsert_recipients(self, recipients: Iterable[Recipient]) -> None:
        with self.db.transaction() as c:
            for r in recipients:
                _upsert(c, r)

    def replace_recipients(self, tenant: str, recipients: Iterable[Recipient]) -> None:
        with self.db.transaction() as c:
            c.execute("DELETE FROM recipient_aliases WHERE address IN"
                      " (SELECT address FROM recipients WHERE tenant = ?)", (tenant,))
            c.execute("DELETE FROM recipients WHERE tenant = ?", (tenant,))
            for r in recipients:
                _upsert(c, r)

    def remove_recipients(self, tenant: str, addresses: Iterable[str]) -> None:
        """Remove these recipients (and their aliases) of this tenant; others are left alone."""
        with self.db.transaction() as c:
            for address in addresses:
                key = (address.lower(), tenant)
                c.execute("DELETE FROM recipient_aliases WHERE address IN"
                          " (SELECT address FROM recipients WHERE address = ? AND tenant = ?)", key)
                c.execute("DELETE FROM recipients WHERE address = ? AND tenant = ?", key)

    def sync_state(self, tenant: str, provider: str) -> dict[str, str]:
        rows = self.db.query("SELECT state FROM directory_sync_state WHERE tenant = ? AND provider = ?",
                             (tenant, provider))
        if not rows:
            return {}
        state = json.loads(rows[0]["state"])
        return {str(k): str(v) for k, v in state.items()} if isinstance(state, dict) else {}

    def set_sync_state(self, tenant: str, provider: str, state: dict[str, str]) -> None:
        with self.db.transaction() as c:
            c.execute("INSERT OR REPLACE INTO directory_sync_state(tenant, provider, state, updated_at)"
                      " VALUES (?, ?, ?, ?)", (tenant, provider, json.dumps(state), _now()))


def _upsert(c: sqlite3.Connection, r: Recipient) -> None:
    address = r.address.lower()
    c.execute(
        "INSERT INTO recipients(address, tenant, name, organisation, department, title, memo,"
        " spam_filter, kind, source, external_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT(address) DO UPDATE SET tenant = excluded.tenant, name = excluded.name,"
        " organisation = excluded.organisation, department = excluded.department,"
        " title = excluded.title, memo = excluded.memo, spam_filter = excluded.spam_filter,"
        " kind = excluded.kind, source = excluded.source, external_id = excluded.external_id",
        (address, r.tenant, r.name, r.organisation, r.department, r.title, r.memo,
         int(r.spam_filter), r.kind, r.source, r.external_id),
    )
    c.execute("DELETE FROM recipient_aliases WHERE address = ?", (address,))
    for alias in dict.fromkeys(a.lower() for a in r.aliases):
        if alias != address:
            # An alias belongs to one recipient: the latest writer takes it over.
            c.execute("INSERT OR REPLACE INTO recipient_aliases(alias, address) VALUES (?, ?)",
                      (alias, address))


def _recipient(row: sqlite3.Row, aliases: list[str]) -> Recipient:
    return Recipient(address=row["address"], tenant=row["tenant"], name=row["name"],
                     organisation=row["organisation"], department=row["department"],
                     title=row["title"], memo=row["memo"], spam_filter=bool(row["spam_filter"]),
                     kind=row["kind"], aliases=aliases, source=row["source"],
                     external_id=row["external_id"])


_RECORD_COLUMNS = ("received_at", "updated_at", "state", "mail_from", "rcpt_to", "client_ip",
                   "helo", "message_id", "subject", "tenant", "disposition", "size", "attempts",
                   "next_attempt_at", "timings", "report", "error", "raw_key", "stage", "tls")
# Columns later versions added to the messages table: added to an older database on open.
_ADDED_COLUMNS = (("raw_key", "TEXT"), ("stage", "TEXT"), ("tls", "TEXT"))
_JSON_COLUMNS = frozenset({"rcpt_to", "timings", "report"})
# States a stage writes on its way (the next durable commit puts them on disk).
_PROGRESS = frozenset({str(MessageState.PROCESSING)})


class SqliteMessageLog:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        with db.transaction() as c:
            # The console's trace lists one tenant's messages newest first.
            c.execute("CREATE INDEX IF NOT EXISTS messages_tenant_received"
                      " ON messages(tenant, received_at)")
            present = {row[1] for row in c.execute("PRAGMA table_info(messages)")}
            for column, kind in _ADDED_COLUMNS:
                if column not in present:
                    c.execute(f"ALTER TABLE messages ADD COLUMN {column} {kind}")

    def accept(self, record: MessageRecord) -> None:
        with self.db.transaction() as c:
            c.execute(
                "INSERT INTO messages(id, received_at, updated_at, state, mail_from, rcpt_to,"
                " client_ip, helo, message_id, subject, tenant, size, raw_key, tls)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (record.id, record.received_at.isoformat(timespec="milliseconds"), _now(),
                 str(record.state), record.mail_from, json.dumps(record.rcpt_to), record.client_ip,
                 record.helo, record.message_id, record.subject, record.tenant, record.size,
                 record.raw_key, record.tls),
            )

    def update(self, record_id: str, /, **fields: Any) -> None:
        unknown = set(fields) - set(_RECORD_COLUMNS)
        if unknown:
            raise ValueError(f"unknown message log fields: {sorted(unknown)}")
        fields["updated_at"] = _now()
        values = [json.dumps(v, ensure_ascii=False) if k in _JSON_COLUMNS else
                  str(v) if k == "state" else v for k, v in fields.items()]
        assignments = ", ".join(f"{k} = ?" for k in fields)  # keys checked against the whitelist
        # A final state is kept durably; progress between stages need not be (module docstring).
        durable = not (fields.get("state") is not None and str(fields["state"]) in _PROGRESS)
        with self.db.transaction(durable=durable) as c:
            c.execute(f"UPDATE messages SET {assignments} WHERE id = ?",  # noqa: S608
                      (*values, record_id))

    def begin_attempt(self, record_id: str, stage: str) -> int:
        """One more attempt of `stage` (the count starts again at a new stage), atomically.
        Not durable: after a power loss a stage may run once more than counted."""
        with self.db.transaction(durable=False) as c:
            c.execute("UPDATE messages SET attempts = CASE WHEN stage IS ? THEN attempts + 1 ELSE 1"
                      " END, stage = ?, state = ?, updated_at = ? WHERE id = ?",
                      (stage, stage, str(MessageState.PROCESSING), _now(), record_id))
            row = c.execute("SELECT attempts FROM messages WHERE id = ?", (record_id,)).fetchone()
        return int(row[0]) if row else 1

    def get(self, message_id: str) -> MessageRecord | None:
        rows = self.db.query("SELECT * FROM messages WHERE id = ?", (message_id,))
        return _record(rows[0]) if rows else None

    def unfinished(self) -> list[MessageRecord]:
        placeholders = ",".join("?" for _ in FINAL_STATES)
        rows = self.db.query(
            f"SELECT * FROM messages WHERE state NOT IN ({placeholders}) ORDER BY received_at",  # noqa: S608
            sorted(FINAL_STATES))
        return [_record(r) for r in rows]

    def state_counts(self) -> dict[str, int]:
        """Messages per state (the metrics' queue depth and held gauges; the state index)."""
        rows = self.db.query("SELECT state, COUNT(*) AS n FROM messages GROUP BY state")
        return {str(r["state"]): int(r["n"]) for r in rows}

    def recent(self, limit: int = 50) -> list[MessageRecord]:
        rows = self.db.query("SELECT * FROM messages ORDER BY received_at DESC LIMIT ?", (limit,))
        return [_record(r) for r in rows]

    def search(self, query: TraceQuery) -> list[MessageRecord]:
        """The admin console's message trace, newest first. Parameterised SQL only; text
        criteria are LIKE substrings with the wildcards in the user's text escaped."""
        where: list[str] = []
        params: list[Any] = []
        if query.tenant is not None:
            where.append("tenant = ?")
            params.append(query.tenant)
        if query.sender:
            where.append("(mail_from LIKE ? ESCAPE '\\' OR json_extract(report, '$.from') LIKE ?"
                         " ESCAPE '\\')")
            params += [_like(query.sender)] * 2
        if query.recipient:
            where.append("rcpt_to LIKE ? ESCAPE '\\'")
            params.append(_like(query.recipient.lower()))
        if query.subject:
            where.append("subject LIKE ? ESCAPE '\\'")
            params.append(_like(query.subject))
        if query.since is not None:
            where.append("received_at >= ?")
            params.append(utc_text(query.since))
        if query.until is not None:
            where.append("received_at < ?")
            params.append(utc_text(query.until))
        if query.state:
            where.append("state = ?")
            params.append(query.state)
        if query.disposition:
            where.append("disposition = ?")
            params.append(query.disposition)
        if query.verdict:
            where.append("EXISTS (SELECT 1 FROM json_each(report, '$.attachments') a"
                         " WHERE json_extract(a.value, '$.verdict') = ?)")
            params.append(query.verdict)
        if query.symbol:
            where.append("(EXISTS (SELECT 1 FROM json_each(report, '$.findings') f"
                         " WHERE json_extract(f.value, '$.symbol') = ?)"
                         " OR EXISTS (SELECT 1 FROM json_each(report, '$.attachments') a,"
                         " json_each(a.value, '$.symbols') s WHERE s.value = ?))")
            params += [query.symbol] * 2
        sql = "SELECT * FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)  # fixed fragments; values are parameters
        sql += " ORDER BY received_at DESC, id DESC LIMIT ? OFFSET ?"
        params += [max(0, min(query.limit, 1000)), max(0, query.offset)]
        return [_record(r) for r in self.db.query(sql, params)]

    def received_between(self, tenant: str | None, since: datetime, until: datetime,
                         limit: int) -> list[MessageRecord]:
        """The dashboard's window, on the (tenant, received_at) or received_at index."""
        sql = "SELECT * FROM messages WHERE received_at >= ? AND received_at < ?"
        params: list[Any] = [utc_text(since), utc_text(until)]
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        sql += " ORDER BY received_at DESC, id DESC LIMIT ?"
        params.append(max(0, limit))
        return [_record(r) for r in self.db.query(sql, params)]

    def next_attempt_at(self, message_id: str) -> str | None:
        rows = self.db.query("SELECT next_attempt_at FROM messages WHERE id = ?", (message_id,))
        return rows[0]["next_attempt_at"] if rows else None

    def claim_delivery(self, message_id: str, recipient: str) -> bool:
        """Won when nobody claimed it yet, or the last claim was released (nothing was sent)."""
        with self.db.transaction() as c:
            cur = c.execute(
                "INSERT INTO deliveries(message_id, recipient, outcome, released, updated_at)"
                " VALUES (?,?,NULL,0,?) ON CONFLICT(message_id, recipient) DO UPDATE SET"
                " released = 0, outcome = NULL, updated_at = excluded.updated_at"
                " WHERE deliveries.released = 1 AND deliveries.outcome IS NULL",
                (message_id, recipient.lower(), _now()))
            return cur.rowcount == 1

    def release_delivery(self, message_id: str, recipient: str) -> None:
        """Give the claim back after a delivery that certainly did not happen."""
        with self.db.transaction() as c:
            c.execute("UPDATE deliveries SET released = 1, outcome = NULL, updated_at = ?"
                      " WHERE message_id = ? AND recipient = ? AND (outcome IS NULL OR outcome LIKE"
                      " 'held:%')", (_now(), message_id, recipient.lower()))

    def claim_is_stale(self, message_id: str, recipient: str) -> bool:
        """Locally one message is never processed twice at once (one worker owns it: the
        worker thread, or the worker process of its partition, mailmoat.local.workers), so
        a claim without an outcome found by a new run was left by an interrupted one; a
        `held:` outcome is one in doubt, waiting for `redrive --resend`."""
        rows = self.db.query("SELECT outcome, released FROM deliveries WHERE message_id = ? AND"
                             " recipient = ?", (message_id, recipient.lower()))
        if not rows:
            return False
        outcome = rows[0]["outcome"]
        return (outcome is None and not rows[0]["released"]) or Outcome.of(outcome) is Outcome.HELD

    def finish_delivery(self, message_id: str, recipient: str, outcome: str) -> None:
        with self.db.transaction() as c:
            c.execute(
                "INSERT INTO deliveries(message_id, recipient, outcome, updated_at) VALUES (?,?,?,?)"
                " ON CONFLICT(message_id, recipient) DO UPDATE SET outcome = excluded.outcome,"
                " updated_at = excluded.updated_at",
                (message_id, recipient.lower(), outcome, _now()))

    def delivery_outcome(self, message_id: str, recipient: str) -> str | None:
        rows = self.db.query("SELECT outcome FROM deliveries WHERE message_id = ? AND recipient = ?",
                             (message_id, recipient.lower()))
        return rows[0]["outcome"] if rows and rows[0]["outcome"] else None


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own % _ and \\ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _record(row: sqlite3.Row) -> MessageRecord:
    return MessageRecord(
        id=row["id"],
        received_at=datetime.fromisoformat(row["received_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]) if row["updated_at"] else None,
        state=row["state"],
        mail_from=row["mail_from"],
        rcpt_to=json.loads(row["rcpt_to"] or "[]"),
        client_ip=row["client_ip"],
        helo=row["helo"],
        message_id=row["message_id"],
        subject=row["subject"],
        tenant=row["tenant"],
        disposition=row["disposition"],
        size=row["size"],
        attempts=row["attempts"],
        timings=json.loads(row["timings"] or "{}"),
        report=json.loads(row["report"]) if row["report"] else None,
        error=row["error"],
        raw_key=row["raw_key"],
        stage=row["stage"],
        next_attempt_at=row["next_attempt_at"],
        tls=row["tls"],
    )
