"""The admin audit trail: who did what to which tenant's object, when, from where."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from mailmoat.ports import AuditLog

log = logging.getLogger("mailmoat.audit")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    admin: str  # the account's address (or the Cognito user's)
    tenant: str
    action: str  # dotted: login, recipient.edit, policy.update, message.download …
    target: str = ""  # a message id, an address, a file path
    client_ip: str | None = None
    detail: str = ""  # a short summary, never message content or passwords


def audit(trail: AuditLog, entry: AuditEntry) -> None:
    """Store the entry and write it to the process log too (CloudWatch on AWS)."""
    trail.record(entry)
    log.info("admin action", extra={"tenant": entry.tenant, "action": entry.action,
                                    "admin": entry.admin, "target": entry.target,
                                    "client_ip": entry.client_ip})


class LogOnlyAuditLog:
    """Where no audit table exists (AWS until one is added): the process log is the trail."""

    def record(self, entry: AuditEntry) -> None:
        return None

    def entries(self, tenant: str | None, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
        return []
