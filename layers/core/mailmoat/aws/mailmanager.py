"""SES Mail Manager, the default ingress and delivery path: what DirectoryPublish must change (plans,
no I/O; adapters/aws_mailmanager.py makes the calls).

Two things follow the directory:
- the **address list** that the inbound traffic policy checks during the SMTP session: exactly the
  registered addresses and aliases of every tenant, so an unknown recipient is refused with a 550
  before the message is accepted (no 20,000-address ceiling as with receipt-rule conditions);
- the **relay routes** of the submission rule set: the Deliver function hands every checked copy
  for a `mailmanager`-mode tenant to the stack's AUTH ingress point, whose rule set relays it to
  the tenant's mailbox host (Exchange Online, Google Workspace, …) with MailFrom PRESERVE. One
  Mail Manager relay per distinct mailbox host; one rule per tenant, matching its domains.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Names Mail Manager accepts for relays ([a-zA-Z0-9-_], ≤ 100) and rules (≤ 32 in the console's
# examples; the API allows more): the stack's prefix, the tenant's slug, a hash against collisions.
_MAX_RELAY_NAME = 100
_SLUG = re.compile(r"[^a-z0-9-]+")
# A rule's string condition takes at most this many values (the API's RuleStringList limit).
MAX_VALUES_PER_CONDITION = 10
# Mail Manager: at most 100,000 addresses per list (docs/aws-limits.md §3).
MAX_ADDRESSES_PER_LIST = 100_000


class AddressListGuardError(RuntimeError):
    """The plan would empty a list that has members: a directory read that came back empty is far
    likelier than every user leaving at once, and an empty list refuses all mail. Nothing changes;
    the run fails and is alarmed."""


@dataclass(frozen=True, slots=True)
class AddressListPlan:
    register: tuple[str, ...] = ()
    deregister: tuple[str, ...] = ()

    @property
    def changes(self) -> int:
        return len(self.register) + len(self.deregister)


def plan_address_list(current: Iterable[str], wanted: Iterable[str]) -> AddressListPlan:
    """Register what is missing, deregister what is no longer wanted (the adapter registers
    first, so an address that stays is never briefly absent). Addresses compare lower-case."""
    have = {a.strip().lower() for a in current}
    want = {a.strip().lower() for a in wanted}
    if have and not want:
        raise AddressListGuardError(
            f"refusing to remove all {len(have)} addresses from the address list (empty directory)")
    if len(want) > MAX_ADDRESSES_PER_LIST:
        # Publishing part of the directory would refuse registered addresses: change nothing.
        raise AddressListGuardError(f"{len(want)} addresses exceed Mail Manager's "
                                    f"{MAX_ADDRESSES_PER_LIST} per address list")
    return AddressListPlan(register=tuple(sorted(want - have)), deregister=tuple(sorted(have - want)))


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """A mailbox host a tenant's mail is relayed to (Mail Manager relays connect on this port)."""

    host: str
    port: int = 25


@dataclass(frozen=True, slots=True)
class TenantRoute:
    tenant: str
    domains: tuple[str, ...]
    target: RelayTarget


@dataclass(slots=True)
class RoutePlan:
    """Relays to create or update (name → target) before any rule names them; the routes the
    submission rule set must hold (written as one UpdateRuleSet once every relay has an id);
    then the relays no route names any more."""

    routes: list[TenantRoute] = field(default_factory=list)
    create: dict[str, RelayTarget] = field(default_factory=dict)
    update: dict[str, RelayTarget] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)

    @property
    def relay_changes(self) -> int:
        return len(self.create) + len(self.update) + len(self.delete)


def relay_name(prefix: str, target: RelayTarget) -> str:
    """One relay per host and port, named after both so a name never changes its meaning."""
    digest = hashlib.sha256(f"{target.host.lower()}:{target.port}".encode()).hexdigest()[:10]
    slug = _SLUG.sub("-", target.host.lower()).strip("-")
    room = _MAX_RELAY_NAME - len(prefix) - len(digest) - 2
    return f"{prefix}-{slug[:room].strip('-')}-{digest}"


def route_rules(routes: Sequence[TenantRoute], relay_ids: Mapping[str, str],
                prefix: str) -> list[dict[str, Any]]:
    """One rule per tenant (and per 10 domains): recipient in one of its domains → Relay with the
    envelope sender preserved, so SPF/DMARC at the mailbox see the original sender. A recipient
    no rule matches is not relayed anywhere: Mail Manager takes no action for it."""
    rules: list[dict[str, Any]] = []
    for route in sorted(routes, key=lambda r: r.tenant):
        relay = relay_ids[relay_name(prefix, route.target)]
        domains = sorted({d.lower().rstrip(".") for d in route.domains})
        for start in range(0, len(domains), MAX_VALUES_PER_CONDITION):
            chunk = domains[start:start + MAX_VALUES_PER_CONDITION]
            many = len(domains) > MAX_VALUES_PER_CONDITION
            suffix = f"-{start // MAX_VALUES_PER_CONDITION}" if many else ""
            rules.append({
                "Name": f"relay-{_SLUG.sub('-', route.tenant.lower()).strip('-')[:40]}{suffix}",
                "Conditions": [{"StringExpression": {
                    "Evaluate": {"Attribute": "RECIPIENT"}, "Operator": "ENDS_WITH",
                    "Values": [f"@{d}" for d in chunk]}}],
                # DROP on failure: Mail Manager then neither retries elsewhere nor continues to a
                # later rule; the Deliver function already has its 250, so the relay's own
                # retry/bounce behaviour applies (docs/deploy.md: what Mail Manager retries).
                "Actions": [{"Relay": {"Relay": relay, "MailFrom": "PRESERVE",
                                       "ActionFailurePolicy": "DROP"}}],
            })
    return rules


def plan_routes(routes: Sequence[TenantRoute], current_relays: Mapping[str, RelayTarget], *,
                prefix: str) -> RoutePlan:
    """`current_relays`: our relays (names under `prefix`) and where each points now."""
    plan = RoutePlan(routes=list(routes))
    wanted = {relay_name(prefix, r.target): r.target for r in routes}
    for name, target in wanted.items():
        if name not in current_relays:
            plan.create[name] = target
        elif current_relays[name] != target:
            plan.update[name] = target
    plan.delete = sorted(name for name in current_relays if name not in wanted)
    return plan


def mailmanager_routes(tenants: Iterable[Any], *, mode_of: Any) -> list[TenantRoute]:
    """The tenants delivered through Mail Manager and the mailbox host each relays to."""
    routes: list[TenantRoute] = []
    for tenant in tenants:
        if mode_of(tenant) != "mailmanager":
            continue
        if not tenant.delivery.host:
            raise ValueError(f"tenant {tenant.name}: delivery.mode=mailmanager needs delivery.host "
                             "(the mailbox host, e.g. contoso-com.mail.protection.outlook.com)")
        routes.append(TenantRoute(tenant.name, tuple(tenant.domains),
                                  RelayTarget(tenant.delivery.host.strip().lower().rstrip("."),
                                              tenant.delivery.port)))
    return routes
