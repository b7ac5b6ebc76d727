"""The AWS stack's scheduled and stream jobs as core functions over ports: the composition root
(bootstrap/aws.py) builds what each needs and the handler calls it."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailmoat.aws import observability

if TYPE_CHECKING:
    from mailmoat.aws.mailmanager import AddressListPlan, RoutePlan
    from mailmoat.aws.recipient_rules import RulePlan
    from mailmoat.aws.signatures import UpdateResult
    from mailmoat.config import TenantConfig
    from mailmoat.ports import AddressList, ReceiptRules, RelayRoutes, SignatureStore, TenantDirectory

log = logging.getLogger("mailmoat.aws")


def sync_directories(directory: TenantDirectory, read_secret: Callable[[str], str | None]) -> dict[str, str]:
    """Pull each tenant's users from its directory provider (Microsoft Graph / Google
    Directory) into the directory table; the stream then republishes the SES recipients.
    One tenant's failure does not stop the others; any failure or refusal (the deletion
    guard) fails the run at the end, so the Errors alarm tells the admin."""
    from mailmoat.directory.sync import sync_tenant  # loaded by this function only

    outcomes: dict[str, str] = {}
    for tenant in directory.tenant_configs():
        if tenant.directory.provider is None:
            continue
        try:
            result = sync_tenant(directory, tenant, read_secret=read_secret)
        except Exception as exc:  # a provider or a config error: reported below, others go on
            log.error("directory sync failed", extra={"tenant": tenant.name, "error": str(exc)[:300]})
            outcomes[tenant.name] = "failed"
            continue
        outcomes[tenant.name] = "refused" if result.refused else "applied"
        if result.refused:
            log.error("directory sync refused", extra={"tenant": tenant.name, "error": result.refused})
    problems = sorted(t for t, outcome in outcomes.items() if outcome != "applied")
    if problems:
        raise RuntimeError(f"directory sync did not apply for: {', '.join(problems)}")
    return outcomes


def publish_recipients(directory: TenantDirectory, rules: ReceiptRules, *, base_rule: str,
                       base_domains: list[str], event: Mapping[str, Any] | None = None) -> RulePlan:
    """Make the SES receipt rules' recipient conditions equal the registered addresses.

    Called once per stream batch (or by the hourly schedule, which also repairs a rule a
    stack update reset): the records only say that something changed, the whole set is
    recomputed from the table, so the result does not depend on their order, on
    duplicates or on records lost to the stream's 24 h retention."""
    from mailmoat.aws.recipient_rules import TenantAddresses, normalise, plan_recipient_rules

    tenants = []
    for config in directory.tenant_configs():
        addresses: list[str] = []
        for recipient in directory.recipients(config.name):
            addresses.append(recipient.address)
            addresses.extend(recipient.aliases)
        tenants.append(TenantAddresses(config.name, tuple(config.domains), normalise(addresses)))
    plan = plan_recipient_rules(rules.rules(), base=base_rule, base_domains=base_domains,
                                tenants=tenants)
    rules.apply(plan)
    check_active_rule_set(rules)
    records = len(event.get("Records", [])) if event else 0
    observability.count(observability.RECIPIENT_RULE_CHANGES, plan.changes)
    # Every run reports the count, 0 included, so the alarm clears once the cause is gone.
    observability.count(observability.RECIPIENT_CONDITIONS_OVER_CEILING, len(plan.by_domain))
    if plan.by_domain:
        log.error("over the SES recipient ceiling: accepted by domain, unknown recipients are "
                  "dropped after acceptance instead of refused (docs/deploy.md: Mail Manager)",
                  extra={"tenants": plan.by_domain, "rules": plan.rules_used})
    log.info("recipient conditions published",
             extra={"records": records, "addresses": plan.addresses, "rules": plan.rules_used,
                    "rules_created": len(plan.create), "rules_updated": len(plan.update),
                    "rules_deleted": len(plan.delete)})
    return plan


def check_active_rule_set(rules: ReceiptRules) -> bool:
    """SES has one active receipt rule set per account and region. Ours is never activated
    here (that would silently switch off whatever else receives mail in the account: WorkMail,
    another stack); a set that is not active is reported every run so the alarm fires."""
    active = rules.active_rule_set()
    inactive = active != rules.rule_set
    observability.count(observability.RECEIPT_RULE_SET_INACTIVE, int(inactive))
    if inactive:
        log.error("our receipt rule set is not the active one: this stack receives no mail "
                  "(docs/deploy.md: one active rule set)",
                  extra={"rule_set": rules.rule_set, "active": active or "none"})
    return not inactive


def _registered(directory: TenantDirectory) -> frozenset[str]:
    from mailmoat.aws.recipient_rules import normalise

    addresses: list[str] = []
    for config in directory.tenant_configs():
        for recipient in directory.recipients(config.name):
            addresses.append(recipient.address)
            addresses.extend(recipient.aliases)
    return normalise(addresses)


def publish_address_list(directory: TenantDirectory, address_list: AddressList,
                         routes: RelayRoutes | None = None, *,
                         mode_of: Callable[[TenantConfig], str] | None = None,
                         relay_prefix: str = "", event: Mapping[str, Any] | None = None,
                         ) -> tuple[AddressListPlan, RoutePlan | None]:
    """Mail Manager: the inbound address list equals the registered addresses, and the
    submission rule set relays each `mailmanager`-mode tenant to its mailbox host.

    Recomputed whole from the table on every run (as publish_recipients). Routes are written
    before addresses are registered, so an address the traffic policies let in has a route by
    the time a copy for it is submitted. A tenant that leaves (or changes mode) loses its route
    and its addresses in the same run; a copy submitted between the two calls would match no
    rule, so the Deliver function refuses to submit for a tenant not in mailmanager mode."""
    from mailmoat.aws.mailmanager import mailmanager_routes, plan_address_list, plan_routes

    route_plan = None
    if routes is not None and mode_of is not None:
        route_plan = plan_routes(mailmanager_routes(directory.tenant_configs(), mode_of=mode_of),
                                 routes.relays(), prefix=relay_prefix)
        routes.apply(route_plan)
    list_plan = plan_address_list(address_list.members(), _registered(directory))
    address_list.apply(list_plan)
    records = len(event.get("Records", [])) if event else 0
    route_changes = route_plan.relay_changes if route_plan is not None else 0
    observability.count(observability.RECIPIENT_RULE_CHANGES, list_plan.changes + route_changes)
    log.info("address list published",
             extra={"records": records, "registered": len(list_plan.register),
                    "deregistered": len(list_plan.deregister),
                    "routes": len(route_plan.routes) if route_plan is not None else 0})
    return list_plan, route_plan


def publish_signatures(mirror: SignatureStore, *, freshclam: str, clamav_mirror: str) -> UpdateResult:
    """freshclam into a temp dir, then the databases that changed to the signature bucket."""
    from mailmoat.aws.signatures import update_signatures

    with tempfile.TemporaryDirectory(prefix="freshclam-") as workdir:
        result = update_signatures(mirror, freshclam=freshclam, mirror=clamav_mirror,
                                   workdir=Path(workdir))
    observability.count(observability.SIGNATURE_FILES_UPLOADED, len(result.uploaded))
    log.info("signatures published", extra={"uploaded": result.uploaded, "versions": result.versions})
    return result
