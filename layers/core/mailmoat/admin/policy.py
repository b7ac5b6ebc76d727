"""Tenant policy edited in the console: which fields, how they are validated, how they apply.

The TOML (or the AWS directory row) stays the base; the console's changes are stored as
overrides of the policy fields only and laid over the base at startup and at every save, so
the next message is processed under the new policy without a restart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mailmoat.config import GatewayConfig, TenantConfig

# DESIGN §9's policy fields; domains and delivery stay with the operator's configuration.
POLICY_FIELDS = ("isolation", "zip_is_archive_type", "defang_all_links", "html_to_text",
                 "spam_action", "retention_days", "allowed_senders", "blocked_senders", "rules",
                 "original_from_ips")
MAX_RETENTION_DAYS = 3650
MAX_LIST_ENTRIES = 1000
MAX_RULES = 100
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_SENDER = re.compile(rf"^(?:[^@\s,;]+@|@)?{_LABEL}(?:\.{_LABEL})+$")  # address, @domain or domain
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class PolicyError(ValueError):
    """A policy the console refuses, with the problems in plain words."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def policy_of(tenant: TenantConfig) -> dict[str, Any]:
    return tenant.model_dump(mode="json", include=set(POLICY_FIELDS))


def with_policy(tenant: TenantConfig, policy: Mapping[str, Any]) -> TenantConfig:
    """The tenant with these policy values, validated by the TenantConfig/RuleConfig models
    plus the console's own bounds. Raises PolicyError listing every problem."""
    from pydantic import ValidationError

    unknown = sorted(set(policy) - set(POLICY_FIELDS))
    if unknown:
        raise PolicyError([f"not a policy field: {name}" for name in unknown])
    data = tenant.model_dump(mode="json")
    data.update(policy)
    try:
        updated = TenantConfig.model_validate(data)
    except ValidationError as exc:
        raise PolicyError([f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                           for e in exc.errors()]) from None
    problems: list[str] = []
    if not 1 <= updated.retention_days <= MAX_RETENTION_DAYS:
        problems.append(f"retention_days: between 1 and {MAX_RETENTION_DAYS}")
    for name in ("allowed_senders", "blocked_senders"):
        entries: list[str] = getattr(updated, name)
        if len(entries) > MAX_LIST_ENTRIES:
            problems.append(f"{name}: at most {MAX_LIST_ENTRIES} entries")
        problems += [f"{name}: not an address or domain: {e!r}" for e in entries
                     if not _SENDER.match(e.lower())]
    if len(updated.original_from_ips) > MAX_LIST_ENTRIES:
        problems.append(f"original_from_ips: at most {MAX_LIST_ENTRIES} networks")
    if len(updated.rules) > MAX_RULES:
        problems.append(f"rules: at most {MAX_RULES}")
    for i, rule in enumerate(updated.rules, start=1):
        if not rule.name.strip():
            problems.append(f"rule {i}: a name is required")
        problems += [f"rule {i}: not an address or domain: {s!r}" for s in rule.sender
                     if not _SENDER.match(s.lower())]
        problems += [f"rule {i}: not a two-letter country code: {c!r}" for c in rule.countries
                     if not _COUNTRY.match(c)]
        for bound in (rule.min_size, rule.max_size):
            if bound is not None and bound < 0:
                problems.append(f"rule {i}: sizes cannot be negative")
        if rule.min_size is not None and rule.max_size is not None and rule.min_size > rule.max_size:
            problems.append(f"rule {i}: the minimum size is above the maximum")
    if problems:
        raise PolicyError(problems)
    return updated


def apply_overrides(config: GatewayConfig, overrides: Mapping[str, Mapping[str, Any]]) -> GatewayConfig:
    """The configuration with stored policy laid over it. An override that no longer
    validates (the model changed) is skipped, never a failed start: the base policy holds."""
    import logging

    tenants: list[TenantConfig] = []
    for tenant in config.tenants:
        stored = overrides.get(tenant.name)
        if stored:
            try:
                tenant = with_policy(tenant, {k: v for k, v in stored.items() if k in POLICY_FIELDS})
            except PolicyError as exc:
                logging.getLogger("mailmoat.admin").error(
                    "stored tenant policy ignored", extra={"tenant": tenant.name, "detail": str(exc)})
        tenants.append(tenant)
    return config.model_copy(update={"tenants": tenants})


def replace_tenant(config: GatewayConfig, tenant: TenantConfig) -> GatewayConfig:
    """A new configuration object (never mutated in place: stages running now keep theirs)."""
    return config.model_copy(update={"tenants": [tenant if t.name == tenant.name else t
                                                 for t in config.tenants]})


class DirectoryPolicyStore:
    """AWS: the tenant row in the directory table is the whole configuration, so a save writes
    the merged tenant there (DynamoDirectory.put_tenant_config) and there is nothing to lay over."""

    def __init__(self, directory: Any) -> None:
        self.directory = directory

    def overrides(self) -> dict[str, dict[str, Any]]:
        return {}

    def save(self, tenant: TenantConfig, admin: str) -> None:
        self.directory.put_tenant_config(tenant)
