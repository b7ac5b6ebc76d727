"""The SES receipt rules whose recipient conditions equal the registered addresses (a plan, no I/O).

SES refuses a recipient during the SMTP session when no rule of the active rule set matches
it, so the rules' `Recipients` are the directory's addresses. Limits (SES quotas, fixed):
100 recipients per rule and 200 rules per rule set, so about 20,000 addresses in all
(docs/deploy.md says what to do beyond: SES Mail Manager address lists).

Layout:
- the stack's own rule (`<stack>-store`, CloudFormation's) holds the actions (S3), TLS and
  scanning settings; it keeps the `Domains` parameter's entries whose tenant has nothing
  published yet, and is disabled once every such domain is published per address;
- each tenant gets rules `<stack>-store-<slug>-<hash>-<nnn>` with up to 100 addresses each,
  copying the stack rule's settings. An address keeps its rule across runs (new addresses fill
  free room first), so a change touches only the rules whose addresses changed and no address
  is ever briefly absent while rules are rewritten one call at a time;
- a tenant that does not fit the rule budget is published by domain instead (its domains as
  the recipients: every address accepted, unknown ones dropped and logged by the pipeline),
  and reported so the alarm fires. A registered address is never refused for lack of room.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_RECIPIENTS_PER_RULE = 100
MAX_RULES_PER_RULE_SET = 200
MAX_RULE_NAME = 64
_INDEX_DIGITS = 3
_HASH_CHARS = 8
# What the rules copy from the stack's rule; the recipients and the name are their own.
_COPIED = ("Actions", "ScanEnabled", "TlsPolicy")


class RecipientRulesError(RuntimeError):
    """The rules cannot be made to cover the directory at all (the stack rule is missing, or
    there are more tenants than rules): nothing is changed, the run fails and is alarmed."""


@dataclass(frozen=True, slots=True)
class TenantAddresses:
    tenant: str
    domains: tuple[str, ...]
    addresses: frozenset[str]


@dataclass(slots=True)
class RulePlan:
    """Calls to make, in this order: create (with the rule to insert after), update, delete."""

    create: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    update: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    by_domain: list[str] = field(default_factory=list)  # tenants over the ceiling
    rules_used: int = 0
    addresses: int = 0

    @property
    def changes(self) -> int:
        return len(self.create) + len(self.update) + len(self.delete)


def rule_prefix(base: str, tenant: str) -> str:
    """Deterministic and within SES's name rules (letters, digits, `-`, 64 characters): a
    readable slug of the tenant plus a hash, so two tenants never share a prefix."""
    digest = hashlib.sha256(tenant.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    room = MAX_RULE_NAME - len(base) - len(digest) - _INDEX_DIGITS - 3
    if room < 1:
        raise RecipientRulesError(f"receipt rule name {base!r} leaves no room for tenant rule names")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", tenant).strip("-")[:room].strip("-") or "t"
    return f"{base}-{slug}-{digest}"


def _managed_pattern(base: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(base)}-[A-Za-z0-9-]+-[0-9a-f]{{{_HASH_CHARS}}}-(\d{{{_INDEX_DIGITS}}})$")


def normalise(addresses: Iterable[str]) -> frozenset[str]:
    """Lower-case addresses with a local part and a domain; anything else is not an address."""
    found = set()
    for value in addresses:
        address = value.strip().lower()
        local, at, domain = address.rpartition("@")
        if at and local and domain and not any(c.isspace() for c in address):
            found.add(address)
    return frozenset(found)


def _domain(entry: str) -> str:
    return entry.rpartition("@")[2].lower().rstrip(".")


def _stable_layout(current: Mapping[int, set[str]], wanted: frozenset[str]) -> dict[int, set[str]]:
    """Keep every address where it is, put new ones into free room, then into new rules."""
    layout = {i: set(recipients) & wanted for i, recipients in current.items()}
    placed = set().union(*layout.values()) if layout else set()
    pending = sorted(wanted - placed)
    for index in sorted(layout):
        room = MAX_RECIPIENTS_PER_RULE - len(layout[index])
        if room > 0 and pending:
            layout[index] |= set(pending[:room])
            pending = pending[room:]
    index = 0
    while pending:
        if index not in layout or not layout[index]:
            layout[index] = set(pending[:MAX_RECIPIENTS_PER_RULE])
            pending = pending[MAX_RECIPIENTS_PER_RULE:]
        index += 1
    return {i: r for i, r in layout.items() if r}


def _packed_layout(wanted: frozenset[str]) -> dict[int, set[str]]:
    ordered = sorted(wanted)
    return {i: set(ordered[start:start + MAX_RECIPIENTS_PER_RULE])
            for i, start in enumerate(range(0, len(ordered), MAX_RECIPIENTS_PER_RULE))}


def plan_recipient_rules(rules: Sequence[Mapping[str, Any]], *, base: str, base_domains: Sequence[str],
                         tenants: Iterable[TenantAddresses],
                         max_rules: int = MAX_RULES_PER_RULE_SET) -> RulePlan:
    """From the rule set as it is (`rules`, in SES order) to the plan that makes its recipient
    conditions equal the tenants' addresses. Running it again on the result plans nothing."""
    by_name = {str(r["Name"]): r for r in rules}
    if base not in by_name:
        raise RecipientRulesError(f"receipt rule {base!r} (the stack's) is missing from the rule set")
    settings = {k: by_name[base][k] for k in _COPIED if k in by_name[base]}
    pattern = _managed_pattern(base)
    managed = {name for name in by_name if pattern.match(name)}
    unmanaged = len(by_name) - len(managed)  # the stack's rule and anything an admin added
    budget = max_rules - unmanaged

    tenant_list = sorted(tenants, key=lambda t: t.tenant)
    prefixes = {t.tenant: rule_prefix(base, t.tenant) for t in tenant_list}
    current: dict[str, dict[int, set[str]]] = {t.tenant: {} for t in tenant_list}
    for name in managed:
        prefix, _, suffix = name.rpartition("-")
        owner = next((t for t, p in prefixes.items() if p == prefix), None)
        if owner is not None:
            current[owner][int(suffix)] = {str(r).lower() for r in by_name[name].get("Recipients", [])}

    active = [t for t in tenant_list if t.addresses]
    layouts = {t.tenant: _stable_layout(current[t.tenant], t.addresses) for t in active}
    domain_rules: dict[str, dict[int, set[str]]] = {}

    def used() -> int:
        return sum(len(v) for v in layouts.values()) + sum(len(v) for v in domain_rules.values())

    if used() > budget:  # close the gaps removals left before giving anyone up
        for t in active:
            if len(layouts[t.tenant]) > math.ceil(len(t.addresses) / MAX_RECIPIENTS_PER_RULE):
                layouts[t.tenant] = _packed_layout(t.addresses)
    # Over the budget still: the biggest tenants go by domain first (they free the most rules).
    for t in sorted(active, key=lambda t: (-len(t.addresses), t.tenant)):
        if used() <= budget:
            break
        del layouts[t.tenant]
        domains = sorted({_domain(d) for d in t.domains})
        if not domains:
            raise RecipientRulesError(f"tenant {t.tenant!r} is over the ceiling and has no domains")
        domain_rules[t.tenant] = _packed_layout(frozenset(domains))
    if used() > budget:
        raise RecipientRulesError(f"{used()} rules needed, {budget} available: too many tenants")

    plan = RulePlan(by_domain=sorted(domain_rules), rules_used=used() + unmanaged,
                    addresses=sum(len(t.addresses) for t in active if t.tenant in layouts))
    wanted_rules: dict[str, set[str]] = {}
    for tenant, layout in [*layouts.items(), *domain_rules.items()]:
        for index, recipients in layout.items():
            wanted_rules[f"{prefixes[tenant]}-{index:0{_INDEX_DIGITS}d}"] = recipients

    existing = set(managed)
    for name in sorted(wanted_rules):  # index order within a tenant: each goes after its predecessor
        rule = {"Name": name, "Enabled": True, **settings, "Recipients": sorted(wanted_rules[name])}
        if name not in existing:
            prefix, _, number = name.rpartition("-")
            before = [n for n in existing if n.startswith(prefix + "-") and n.rpartition("-")[2] < number]
            plan.create.append((rule, max(before) if before else base))
            existing.add(name)
        elif _differs(by_name[name], rule):
            plan.update.append(rule)

    published = {_domain(d) for t in tenant_list if t.tenant in layouts or t.tenant in domain_rules
                 for d in t.domains}
    remaining = [d for d in base_domains if _domain(d) not in published]
    # A rule without recipients matches every address of every verified domain: the stack's
    # rule keeps a list even when disabled, so re-enabling it by hand never opens everything.
    base_rule = {**by_name[base], "Enabled": bool(remaining),
                 "Recipients": list(remaining or base_domains or by_name[base].get("Recipients", []))}
    if _differs(by_name[base], base_rule):
        plan.update.append(base_rule)
    plan.delete = sorted(managed - set(wanted_rules))
    return plan


def _differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    def view(rule: Mapping[str, Any]) -> tuple[Any, ...]:
        recipients = sorted(str(r).lower() for r in rule.get("Recipients", []))
        return (bool(rule.get("Enabled", False)), recipients,
                *(repr(rule.get(k)) for k in _COPIED))

    return view(old) != view(new)
