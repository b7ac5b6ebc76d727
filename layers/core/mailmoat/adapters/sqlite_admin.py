"""SQLite tables of the admin console: accounts, sign-in failures, the audit trail, tenant policy."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mailmoat.adapters.sqlite import SqliteDatabase, utc_text
from mailmoat.admin.accounts import AdminAccount
from mailmoat.admin.audit import AuditEntry
from mailmoat.admin.policy import policy_of
from mailmoat.config import GatewayConfig, TenantConfig

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS admin_accounts (
      email TEXT PRIMARY KEY,
      tenant TEXT NOT NULL,
      password_hash TEXT NOT NULL,
      created_at TEXT NOT NULL,
      disabled INTEGER NOT NULL DEFAULT 0,
      sessions_after_ms INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS admin_audit (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      at TEXT NOT NULL,
      admin TEXT NOT NULL,
      tenant TEXT NOT NULL,
      action TEXT NOT NULL,
      target TEXT NOT NULL DEFAULT '',
      client_ip TEXT,
      detail TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS admin_audit_tenant ON admin_audit(tenant, id)",
    """CREATE TABLE IF NOT EXISTS tenant_policy (
      tenant TEXT PRIMARY KEY,
      policy TEXT NOT NULL,
      updated_at TEXT NOT NULL,
      updated_by TEXT NOT NULL
    )""",
)



class SqliteAdminStore:
    """AccountStore, AuditLog and PolicyStore on the gateway's one SQLite database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.create(_SCHEMA)

    # --- accounts ---------------------------------------------------------------------------
    def account(self, email: str) -> AdminAccount | None:
        rows = self.db.query("SELECT * FROM admin_accounts WHERE email = ?", (email.lower(),))
        return _account(rows[0]) if rows else None

    def accounts(self) -> list[AdminAccount]:
        return [_account(r) for r in self.db.query("SELECT * FROM admin_accounts ORDER BY email")]

    def create_account(self, account: AdminAccount) -> bool:
        with self.db.transaction() as c:
            n = c.execute("INSERT OR IGNORE INTO admin_accounts(email, tenant, password_hash,"
                          " created_at, disabled) VALUES (?,?,?,?,?)",
                          (account.email, account.tenant, account.password_hash,
                           utc_text(account.created_at), int(account.disabled))).rowcount
        return bool(n)

    def set_password_hash(self, email: str, password_hash: str) -> None:
        with self.db.transaction() as c:
            c.execute("UPDATE admin_accounts SET password_hash = ? WHERE email = ?",
                      (password_hash, email.lower()))

    def end_sessions(self, email: str, at_ms: int) -> None:
        with self.db.transaction() as c:
            c.execute("UPDATE admin_accounts SET sessions_after_ms = MAX(sessions_after_ms, ?)"
                      " WHERE email = ?", (at_ms, email.lower()))

    def set_disabled(self, email: str, disabled: bool) -> bool:
        with self.db.transaction() as c:
            n = c.execute("UPDATE admin_accounts SET disabled = ? WHERE email = ?",
                          (int(disabled), email.lower())).rowcount
        return bool(n)

    # --- audit ------------------------------------------------------------------------------
    def record(self, entry: AuditEntry) -> None:
        with self.db.transaction() as c:
            c.execute("INSERT INTO admin_audit(at, admin, tenant, action, target, client_ip, detail)"
                      " VALUES (?,?,?,?,?,?,?)",
                      (utc_text(entry.at), entry.admin, entry.tenant, entry.action, entry.target[:500],
                       entry.client_ip, entry.detail[:1000]))

    def entries(self, tenant: str | None, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
        bounds = (max(0, min(limit, 1000)), max(0, offset))
        if tenant is None:
            rows = self.db.query("SELECT * FROM admin_audit ORDER BY id DESC LIMIT ? OFFSET ?", bounds)
        else:
            rows = self.db.query("SELECT * FROM admin_audit WHERE tenant = ? ORDER BY id DESC"
                                 " LIMIT ? OFFSET ?", (tenant, *bounds))
        return [AuditEntry(at=datetime.fromisoformat(r["at"]), admin=r["admin"], tenant=r["tenant"],
                           action=r["action"], target=r["target"], client_ip=r["client_ip"],
                           detail=r["detail"]) for r in rows]

    # --- tenant policy ------------------------------------------------------------------------
    def overrides(self) -> dict[str, dict[str, Any]]:
        rows = self.db.query("SELECT tenant, policy FROM tenant_policy")
        return {r["tenant"]: json.loads(r["policy"]) for r in rows}

    def save(self, tenant: TenantConfig, admin: str) -> None:
        with self.db.transaction() as c:
            c.execute("INSERT OR REPLACE INTO tenant_policy(tenant, policy, updated_at, updated_by)"
                      " VALUES (?,?,?,?)",
                      (tenant.name, json.dumps(policy_of(tenant), ensure_ascii=False),
                       utc_text(datetime.now(UTC)), admin))


def _account(r: Any) -> AdminAccount:
    return AdminAccount(email=r["email"], tenant=r["tenant"], password_hash=r["password_hash"],
                        created_at=datetime.fromisoformat(r["created_at"]), disabled=bool(r["disabled"]),
                        sessions_after_ms=int(r["sessions_after_ms"]))


def stored_policy(db: SqliteDatabase, config: GatewayConfig) -> GatewayConfig:
    """bootstrap(): the TOML configuration with the console's saved policy laid over it."""
    from mailmoat.admin.policy import apply_overrides

    return apply_overrides(config, SqliteAdminStore(db).overrides())
