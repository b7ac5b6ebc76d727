"""SesReceiptRules: reads and rewrites the recipient conditions of our SES (v1) receipt rule set."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from mailmoat.aws.recipient_rules import RulePlan

log = logging.getLogger("mailmoat.aws")

# SES documents the receipt-rule calls as "no more than once per second": the writes are paced
# to that, and adaptive retries absorb a throttle caused by anyone else calling meanwhile.
_RETRIES = Config(retries={"mode": "adaptive", "max_attempts": 10})
WRITE_INTERVAL_SECONDS = 1.0


class SesReceiptRules:
    def __init__(self, rule_set: str, *, client: Any = None, write_interval: float = WRITE_INTERVAL_SECONDS,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not rule_set:
            raise ValueError("SesReceiptRules needs the receipt rule set name")
        self.rule_set = rule_set
        self.client = client if client is not None else boto3.client("ses", config=_RETRIES)
        self.write_interval = write_interval
        self._sleep = sleep
        self._last_write = float("-inf")

    def _pace(self) -> None:
        wait = self._last_write + self.write_interval - time.monotonic()
        if wait > 0:
            self._sleep(wait)
        self._last_write = time.monotonic()

    def rules(self) -> list[dict[str, Any]]:
        """Every rule of the set, in evaluation order, recipients included (one call)."""
        response = self.client.describe_receipt_rule_set(RuleSetName=self.rule_set)
        return [dict(rule) for rule in response.get("Rules", [])]

    def active_rule_set(self) -> str | None:
        """The account's active rule set in this region (SES allows exactly one), or None."""
        response = self.client.describe_active_receipt_rule_set()
        name = response.get("Metadata", {}).get("Name")
        return str(name) if name else None

    def apply(self, plan: RulePlan) -> None:
        """Additions before removals: new rules and updates first, deletions last, so an
        address that stays registered is matched by some rule at every moment."""
        for rule in [r for r, _ in plan.create] + plan.update:
            if rule.get("Enabled") and not rule.get("Recipients"):
                # SES reads "no recipients" as every address of every verified domain.
                raise ValueError(f"refusing to enable receipt rule {rule['Name']} without recipients")
        for rule, after in plan.create:
            self._pace()
            self.client.create_receipt_rule(RuleSetName=self.rule_set, After=after, Rule=rule)
            log.info("receipt rule created", extra={"rule": rule["Name"], "count": len(rule["Recipients"])})
        for rule in plan.update:
            self._pace()
            self.client.update_receipt_rule(RuleSetName=self.rule_set, Rule=rule)
            log.info("receipt rule updated", extra={"rule": rule["Name"], "count": len(rule["Recipients"])})
        for name in plan.delete:
            self._pace()
            self.client.delete_receipt_rule(RuleSetName=self.rule_set, RuleName=name)
            log.info("receipt rule deleted", extra={"rule": name})
