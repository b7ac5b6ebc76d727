"""SES Mail Manager adapters: the recipients' address list and the relay routes of the submission
rule set (the calls DirectoryPublish makes; the plans are in mailmoat.aws.mailmanager)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import boto3
from botocore.config import Config

from mailmoat.aws.mailmanager import AddressListPlan, RelayTarget, RoutePlan, route_rules

log = logging.getLogger("mailmoat.aws")

# Mail Manager's control-plane calls are rate limited per account; adaptive retries absorb a
# throttle instead of failing the run (which the stream would retry as a whole anyway).
_RETRIES = Config(retries={"mode": "adaptive", "max_attempts": 10})
RELAY_TAG_KEY = "mailmoat-stack"


def mailmanager_client() -> Any:
    return boto3.client("mailmanager", config=_RETRIES)


class MailManagerAddressList:
    """The address list the inbound traffic policy checks: its members are the directory's."""

    def __init__(self, address_list_id: str, *, client: Any = None) -> None:
        if not address_list_id:
            raise ValueError("MailManagerAddressList needs the address list id")
        self.address_list_id = address_list_id
        self.client = client if client is not None else mailmanager_client()

    def members(self) -> set[str]:
        found: set[str] = set()
        request: dict[str, Any] = {"AddressListId": self.address_list_id, "PageSize": 1000}
        while True:
            page = self.client.list_members_of_address_list(**request)
            found.update(str(item["Address"]).lower() for item in page.get("Addresses", []))
            token = page.get("NextToken")
            if not token:
                return found
            request["NextToken"] = token

    def apply(self, plan: AddressListPlan) -> None:
        """Registrations first: an address that moves between spellings is never refused."""
        for address in plan.register:
            self.client.register_member_to_address_list(AddressListId=self.address_list_id,
                                                         Address=address)
        for address in plan.deregister:
            # Gone already (another run): the wanted state holds.
            with contextlib.suppress(self.client.exceptions.ResourceNotFoundException):
                self.client.deregister_member_from_address_list(AddressListId=self.address_list_id,
                                                                Address=address)
        if plan.changes:
            log.info("address list updated", extra={"registered": len(plan.register),
                                                    "deregistered": len(plan.deregister)})


class MailManagerRoutes:
    """Our relays (named `<prefix>-…`) and the submission rule set that relays to them."""

    def __init__(self, rule_set_id: str, *, prefix: str, tag: str, client: Any = None) -> None:
        if not rule_set_id or not prefix or not tag:
            raise ValueError("MailManagerRoutes needs the submission rule set id, a relay prefix "
                             "and the stack tag")
        self.rule_set_id = rule_set_id
        self.prefix = prefix
        self.tag = tag
        self.client = client if client is not None else mailmanager_client()

    def _relay_ids(self) -> dict[str, str]:
        ids: dict[str, str] = {}
        request: dict[str, Any] = {"PageSize": 100}
        while True:
            page = self.client.list_relays(**request)
            for relay in page.get("Relays", []):
                name = str(relay.get("RelayName", ""))
                if name.startswith(self.prefix + "-"):
                    ids[name] = str(relay["RelayId"])
            token = page.get("NextToken")
            if not token:
                return ids
            request["NextToken"] = token

    def relays(self) -> dict[str, RelayTarget]:
        """Where each of our relays points now (one GetRelay per relay: a few per stack)."""
        current: dict[str, RelayTarget] = {}
        for name, relay_id in self._relay_ids().items():
            relay = self.client.get_relay(RelayId=relay_id)
            current[name] = RelayTarget(str(relay["ServerName"]).lower(), int(relay["ServerPort"]))
        return current

    def apply(self, plan: RoutePlan) -> bool:
        """Relays first, then the rules naming them (one UpdateRuleSet when they differ), then the
        relays nothing names any more. Returns whether the rule set was rewritten."""
        ids = self._relay_ids()
        for name, target in plan.create.items():
            created = self.client.create_relay(RelayName=name, ServerName=target.host,
                                               ServerPort=target.port,
                                               Authentication={"NoAuthentication": {}},
                                               # The role may create, read and change only
                                               # relays carrying this tag (template.yaml).
                                               Tags=[{"Key": RELAY_TAG_KEY, "Value": self.tag}])
            ids[name] = str(created["RelayId"])
            log.info("relay created", extra={"relay": name, "host": target.host, "port": target.port})
        for name, target in plan.update.items():
            self.client.update_relay(RelayId=ids[name], ServerName=target.host, ServerPort=target.port)
            log.info("relay updated", extra={"relay": name, "host": target.host, "port": target.port})
        wanted = route_rules(plan.routes, ids, self.prefix)
        current = self.client.get_rule_set(RuleSetId=self.rule_set_id).get("Rules", [])
        rewritten = [dict(rule) for rule in current] != wanted
        if rewritten:
            self.client.update_rule_set(RuleSetId=self.rule_set_id, Rules=wanted)
            log.info("submission routes updated", extra={"rules": len(wanted)})
        for name in plan.delete:
            if name in ids:
                self.client.delete_relay(RelayId=ids[name])
                log.info("relay deleted", extra={"relay": name})
        return rewritten


