"""One tenant's directory sync: fetch from the provider, reconcile with what we hold, guard
against mass deletion, then apply — or change nothing at all.

`sync_tenant` is the entry point for the CLI and for the scheduled function on AWS:

    result = sync_tenant(runtime.services.directory, tenant_config)   # raises DirectorySyncError
    if result.refused: ...                                           # deletion guard, nothing applied

Rules:
- A provider owns the rows it created (`source` = "m365" / "google"); rows from CSV, the
  config or an admin are never removed by a sync. When the provider lists an address we
  already hold from another source, the provider takes that row over (its spam-filter flag and
  memo stay): from then on the provider keeps it current.
- Only addresses (and aliases) in the tenant's domains are registered; the others are reported
  as skipped. An alias that is someone else's address or alias is dropped and reported.
- A run that would remove more than `directory.max_delete_share` of the tenant's recipients is
  refused unless `confirm_deletes`: an empty or partial answer must not empty the gate.
- Provider state (Graph delta links) is stored only after the changes are applied, so a failed or
  refused run is simply repeated from the same point next time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from mailmoat.config import TenantConfig
from mailmoat.directory.model import (
    DirectoryObject,
    DirectorySyncError,
    ProviderChanges,
    scope_of,
)
from mailmoat.directory.transport import Sleep
from mailmoat.ports import Directory, DirectoryProvider, Recipient

log = logging.getLogger("mailmoat.directory")

PROVIDERS = ("m365", "google")
_SKIPPED_SHOWN = 20  # summary lines name this many skipped addresses; the counts cover all


@dataclass(slots=True)
class SyncResult:
    tenant: str
    provider: str
    dry_run: bool
    complete: bool  # everything was listed (first run, Google, expired delta); else a delta
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)  # taken over from csv / config / manual rows
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # "address: reason"
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    refused: str | None = None  # why nothing was applied
    applied: bool = False
    finished_at: datetime | None = None

    def count(self, kind: str, what: str) -> None:
        counts = self.by_kind.setdefault(kind, {"added": 0, "changed": 0, "removed": 0, "skipped": 0})
        counts[what] += 1

    def summary(self) -> str:
        mode = "dry run" if self.dry_run else ("refused" if self.refused else "applied")
        listing = "full listing" if self.complete else "delta"
        lines = [f"{self.tenant} ({self.provider}, {listing}, {mode}): {len(self.added)} added, "
                 f"{len(self.changed)} changed, {len(self.removed)} removed, {len(self.skipped)} skipped, "
                 f"{self.unchanged} unchanged"]
        for kind, counts in sorted(self.by_kind.items()):
            lines.append(f"  {kind:<7} " + ", ".join(f"{counts[k]} {k}" for k in
                                                     ("added", "changed", "removed", "skipped")))
        if self.adopted:
            lines.append(f"  taken over from other sources: {', '.join(self.adopted[:_SKIPPED_SHOWN])}")
        for line in self.skipped[:_SKIPPED_SHOWN]:
            lines.append(f"  skipped {line}")
        if len(self.skipped) > _SKIPPED_SHOWN:
            lines.append(f"  … and {len(self.skipped) - _SKIPPED_SHOWN} more skipped")
        if self.refused:
            lines.append(f"  REFUSED: {self.refused}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return data


@dataclass(slots=True)
class _Plan:
    upserts: list[Recipient]
    removals: list[str]


def _in_domains(address: str, domains: set[str]) -> bool:
    return address.rpartition("@")[2] in domains


def _build(obj: DirectoryObject, base: Recipient | None, tenant: str, provider: str) -> Recipient | None:
    """The row for a provider object, fields it left out taken from what we hold."""
    address = obj.address if obj.address is not None else (base.address if base else None)
    if not address:
        return None

    def pick(value: str | None, attr: str) -> str:
        return value if value is not None else (str(getattr(base, attr)) if base else "")

    return Recipient(
        address=address.lower(), tenant=tenant, name=pick(obj.name, "name"),
        organisation=pick(obj.organisation, "organisation"), department=pick(obj.department, "department"),
        title=pick(obj.title, "title"), memo=base.memo if base else "",
        spam_filter=base.spam_filter if base else True,
        kind=obj.kind or (base.kind if base else ("group" if obj.scope == "groups" else "user")),
        aliases=sorted(obj.aliases if obj.aliases is not None else (base.aliases if base else [])),
        source=provider, external_id=obj.external_id)


def reconcile(existing: list[Recipient], changes: ProviderChanges, *, tenant: str, domains: set[str],
              provider: str, result: SyncResult) -> _Plan:
    """Turn the provider's answer into the rows to write and remove; fills in `result`."""
    ours = [r for r in existing if r.source == provider]
    others = {r.address: r for r in existing if r.source != provider}
    target = _wanted_rows(ours, changes, tenant=tenant, provider=provider, result=result)
    final = _claim_addresses(target, others, domains, result)
    return _plan(final, {r.address: r for r in ours}, others, result)


def _wanted_rows(ours: list[Recipient], changes: ProviderChanges, *, tenant: str, provider: str,
                 result: SyncResult) -> dict[str, Recipient]:
    """External id → the row wanted after this run, before any address is checked."""
    ours_by_id = {r.external_id: r for r in ours if r.external_id}
    target: dict[str, Recipient] = {}
    for r in ours:
        if r.external_id and scope_of(r.kind) not in changes.complete_scopes:
            # A delta run keeps what it does not mention (a copy: `before` must stay as stored).
            target[r.external_id] = dataclasses.replace(r, aliases=list(r.aliases))
    for obj in changes.objects:
        target.pop(obj.external_id, None)
        base = ours_by_id.get(obj.external_id)
        row = _build(obj, base, tenant, provider) if obj.receives_mail else None
        if row is None:
            if base is None and obj.address:
                result.skipped.append(f"{obj.address}: no mailbox (disabled, suspended or not mail-enabled)")
                result.count(obj.kind or "user", "skipped")
            continue
        target[obj.external_id] = row
    for removed_id in changes.removed_ids:
        target.pop(removed_id, None)
    return target


def _claim_addresses(target: dict[str, Recipient], others: dict[str, Recipient], domains: set[str],
                     result: SyncResult) -> dict[str, Recipient]:
    """Address → row, for the wanted rows whose address (and aliases) are in the tenant's
    domains and nobody else's. A row another source holds and the provider lists is taken over."""
    wanted_addresses = {row.address for row in target.values()}
    claimed: dict[str, str] = {}  # address or alias → the address that holds it
    for r in others.values():
        if r.address in wanted_addresses:
            continue
        for address in (r.address, *r.aliases):
            claimed.setdefault(address, r.address)
    final: dict[str, Recipient] = {}
    for row in sorted(target.values(), key=lambda r: (r.address, r.external_id)):
        if not _in_domains(row.address, domains):
            result.skipped.append(f"{row.address}: not in the tenant's domains")
            result.count(row.kind, "skipped")
            continue
        holder = claimed.get(row.address)
        if holder is not None:
            why = ("listed twice by the provider" if holder == row.address
                   else f"already an alias of {holder}")
            result.skipped.append(f"{row.address}: {why}")
            result.count(row.kind, "skipped")
            continue
        claimed[row.address] = row.address
        adopted = others.get(row.address)
        if adopted is not None:
            row.memo, row.spam_filter = adopted.memo, adopted.spam_filter
        row.aliases = _claim_aliases(row, claimed, domains, result)
        final[row.address] = row
    return final


def _claim_aliases(row: Recipient, claimed: dict[str, str], domains: set[str],
                   result: SyncResult) -> list[str]:
    """The row's aliases it may keep, claimed for it; the others reported as skipped."""
    kept: list[str] = []
    for alias in row.aliases:
        if not _in_domains(alias, domains):
            result.skipped.append(f"{alias} (alias of {row.address}): not in the tenant's domains")
        elif claimed.get(alias, row.address) != row.address:
            result.skipped.append(f"{alias} (alias of {row.address}): already used by {claimed[alias]}")
        else:
            claimed[alias] = row.address
            kept.append(alias)
    return kept


def _plan(final: dict[str, Recipient], before: dict[str, Recipient], others: dict[str, Recipient],
          result: SyncResult) -> _Plan:
    """What to write and remove to get from `before` (this provider's rows) to `final`."""
    upserts: list[Recipient] = []
    for address, row in final.items():
        old = before.get(address)
        if old is None:
            if address in others:
                result.adopted.append(address)
                result.changed.append(address)
                result.count(row.kind, "changed")
            else:
                result.added.append(address)
                result.count(row.kind, "added")
            upserts.append(row)
        elif old != row:
            result.changed.append(address)
            result.count(row.kind, "changed")
            upserts.append(row)
        else:
            result.unchanged += 1
    removals = sorted(a for a in before if a not in final)
    for address in removals:
        result.removed.append(address)
        result.count(before[address].kind, "removed")
    return _Plan(upserts=upserts, removals=removals)


def make_provider(tenant: TenantConfig, name: str, *, http: requests.Session, sleep: Sleep,
                  read_secret: Callable[[str], str | None]) -> DirectoryProvider:
    if name == "m365":
        from mailmoat.directory.m365 import GraphDirectory

        if tenant.directory.m365 is None:
            raise DirectorySyncError(f"tenant {tenant.name}: no [tenant.directory.m365] settings")
        return GraphDirectory.from_config(tenant.directory.m365, http=http, sleep=sleep,
                                          read_secret=read_secret)
    if name == "google":
        from mailmoat.directory.google import GoogleDirectory

        if tenant.directory.google is None:
            raise DirectorySyncError(f"tenant {tenant.name}: no [tenant.directory.google] settings")
        return GoogleDirectory.from_config(tenant.directory.google, http=http, sleep=sleep,
                                           read_secret=read_secret)
    raise DirectorySyncError(f"unknown directory provider {name!r} (expected one of {', '.join(PROVIDERS)})")


def sync_tenant(directory: Directory, tenant: TenantConfig, *, provider: str | None = None,
                http: requests.Session | None = None, confirm_deletes: bool = False, dry_run: bool = False,
                now: Callable[[], datetime] = lambda: datetime.now(UTC), sleep: Sleep = time.sleep,
                read_secret: Callable[[str], str | None] = os.environ.get) -> SyncResult:
    """Bring one tenant's provider-managed recipients in line with its directory provider.

    provider: "m365" or "google"; default the tenant's `directory.provider`.
    http: the requests session for token and API calls (tests pass one under `responses`).
    confirm_deletes: allow removing more than `directory.max_delete_share` of the recipients.
    dry_run: fetch and compare, write nothing (not even the delta cursor).
    read_secret: looks up the env var names in the config (on AWS: a Secrets Manager reader).

    Returns the SyncResult (`refused` set when the deletion guard stopped it; nothing was
    written then). Raises DirectorySyncError when the provider or the config fails; nothing was
    written then either.
    """
    name = provider or tenant.directory.provider
    if name is None:
        raise DirectorySyncError(f"tenant {tenant.name}: no directory provider configured")
    session = http or requests.Session()
    source = make_provider(tenant, name, http=session, sleep=sleep, read_secret=read_secret)
    changes = source.fetch(directory.sync_state(tenant.name, name))
    existing = directory.recipients(tenant.name)
    result = SyncResult(tenant=tenant.name, provider=name, dry_run=dry_run,
                        complete=changes.complete_scopes >= {"users", "groups"})
    plan = reconcile(existing, changes, tenant=tenant.name, domains=set(tenant.domains),
                     provider=name, result=result)
    limit = math.floor(tenant.directory.max_delete_share * len(existing))
    if len(plan.removals) > limit and not confirm_deletes:
        result.refused = (f"it would remove {len(plan.removals)} of {len(existing)} recipients, more than "
                          f"{tenant.directory.max_delete_share:.0%} (max {limit}); check the provider, "
                          f"then run again with --confirm-deletes")
    if not dry_run and result.refused is None:
        directory.ensure_tenant(tenant.name, tenant.domains)
        directory.upsert_recipients(plan.upserts)
        directory.remove_recipients(tenant.name, plan.removals)
        directory.set_sync_state(tenant.name, name, changes.state)  # last: a crash repeats the run
        result.applied = True
    result.finished_at = now()
    log.info("directory sync", extra={"tenant": tenant.name, "action": "applied" if result.applied else
                                      ("refused" if result.refused else "dry-run"),
                                      "added": len(result.added), "changed": len(result.changed),
                                      "removed": len(result.removed), "skipped": len(result.skipped)})
    return result


@dataclass(slots=True)
class TenantOutcome:
    tenant: str
    result: SyncResult | None = None
    error: str | None = None  # the run failed and changed nothing


def sync_tenants(directory: Directory, tenants: Iterable[TenantConfig], *, provider: str | None = None,
                 **options: Any) -> list[TenantOutcome]:
    """Sync every tenant that has a provider (or all given ones when `provider` is set); one
    tenant's failure is recorded and the others still run. Options go to sync_tenant. The
    scheduled function calls this with the tenants of the directory table."""
    outcomes: list[TenantOutcome] = []
    for tenant in tenants:
        if provider is None and tenant.directory.provider is None:
            continue
        try:
            outcomes.append(TenantOutcome(tenant.name, sync_tenant(directory, tenant, provider=provider,
                                                                   **options)))
        except DirectorySyncError as exc:
            log.error("directory sync failed", extra={"tenant": tenant.name, "error": str(exc)})
            outcomes.append(TenantOutcome(tenant.name, error=str(exc)))
    return outcomes
