"""SES recipient conditions = the registered addresses: the plan (pure), then SesReceiptRules on moto.

moto 5.2 has create/describe/update for receipt rules but no DeleteReceiptRule, so the removal
of stale rules is checked on the request botocore builds (Stubber) instead."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from mailmoat.adapters.aws_ses_rules import SesReceiptRules
from mailmoat.aws.recipient_rules import (
    MAX_RECIPIENTS_PER_RULE,
    RecipientRulesError,
    RulePlan,
    TenantAddresses,
    normalise,
    plan_recipient_rules,
    rule_prefix,
)
from tests.conftest import use_aws_test_credentials

BASE = "mailmoat-dev-store"
RULE_SET = "mailmoat-dev-inbound"
ACTIONS = [{"S3Action": {"BucketName": "raw-bucket", "ObjectKeyPrefix": "raw/"}}]
BASE_RULE = {"Name": BASE, "Enabled": True, "TlsPolicy": "Require", "ScanEnabled": True,
             "Recipients": ["corp.example", "other.example"], "Actions": ACTIONS}


def tenant(name: str, domain: str, count: int, *, start: int = 0) -> TenantAddresses:
    return TenantAddresses(name, (domain,), frozenset(f"user{i:05d}@{domain}"
                                                     for i in range(start, start + count)))


def applied(rules: list[dict], plan: RulePlan) -> list[dict]:
    """What SES holds after the plan (the same semantics as SesReceiptRules.apply)."""
    result = [dict(r) for r in rules]
    for rule, after in plan.create:
        position = next(i for i, r in enumerate(result) if r["Name"] == after)
        result.insert(position + 1, rule)
    for rule in plan.update:
        result[next(i for i, r in enumerate(result) if r["Name"] == rule["Name"])] = rule
    return [r for r in result if r["Name"] not in plan.delete]


def published(rules: list[dict]) -> set[str]:
    return {a for r in rules if r["Name"] != BASE and r.get("Enabled") for a in r["Recipients"]}


def plan(rules, tenants, **kw) -> RulePlan:
    return plan_recipient_rules(rules, base=BASE, base_domains=["corp.example", "other.example"],
                                tenants=tenants, **kw)


def test_addresses_are_split_into_rules_of_100_copying_the_stack_rule():
    corp = tenant("corp", "corp.example", 250)
    p = plan([BASE_RULE], [corp])
    assert [len(r["Recipients"]) for r, _ in p.create] == [100, 100, 50]
    prefix = rule_prefix(BASE, "corp")
    assert [r["Name"] for r, _ in p.create] == [f"{prefix}-000", f"{prefix}-001", f"{prefix}-002"]
    assert [after for _, after in p.create] == [BASE, f"{prefix}-000", f"{prefix}-001"]
    for rule, _ in p.create:
        assert rule["Actions"] == ACTIONS and rule["ScanEnabled"] and rule["TlsPolicy"] == "Require"
        assert len(rule["Name"]) <= 64
    after = applied([BASE_RULE], p)
    assert published(after) == set(corp.addresses)
    # The stack's rule no longer takes the whole corp.example domain; other.example has no
    # addresses published yet, so it stays accepted by domain there.
    (base,) = [r for r in after if r["Name"] == BASE]
    assert base["Recipients"] == ["other.example"] and base["Enabled"] is True


def test_running_again_plans_nothing_whatever_the_order():
    corp, other = tenant("corp", "corp.example", 150), tenant("other", "other.example", 3)
    first = applied([BASE_RULE], plan([BASE_RULE], [corp, other]))
    assert plan(first, [other, corp]).changes == 0
    (base,) = [r for r in first if r["Name"] == BASE]
    assert base["Enabled"] is False  # every domain is published per address


def test_a_new_address_fills_free_room_and_no_address_moves():
    corp = tenant("corp", "corp.example", 150)
    rules = applied([BASE_RULE], plan([BASE_RULE], [corp]))
    before = {r["Name"]: set(r["Recipients"]) for r in rules}
    grown = TenantAddresses("corp", ("corp.example",), corp.addresses | {"aaa@corp.example"})
    p = plan(rules, [grown])
    assert not p.create and not p.delete
    (update,) = p.update
    # "aaa" sorts first, yet it goes into the rule with room: the full rule is not rewritten.
    assert set(update["Recipients"]) == before[update["Name"]] | {"aaa@corp.example"}


def test_removed_addresses_leave_their_rule_and_an_emptied_rule_is_deleted():
    corp = tenant("corp", "corp.example", 150)
    rules = applied([BASE_RULE], plan([BASE_RULE], [corp]))
    second = rule_prefix(BASE, "corp") + "-001"
    kept = frozenset(a for a in corp.addresses
                     if a not in next(r for r in rules if r["Name"] == second)["Recipients"])
    p = plan(rules, [TenantAddresses("corp", ("corp.example",), kept)])
    assert p.delete == [second] and not p.create and not p.update
    assert published(applied(rules, p)) == set(kept)


def test_a_tenant_removed_from_the_directory_loses_its_rules_and_its_domain_returns():
    corp = tenant("corp", "corp.example", 20)
    rules = applied([BASE_RULE], plan([BASE_RULE], [corp]))
    p = plan(rules, [])
    assert p.delete == [rule_prefix(BASE, "corp") + "-000"]
    (base,) = [r for r in applied(rules, p) if r["Name"] == BASE]
    assert base["Recipients"] == ["corp.example", "other.example"] and base["Enabled"] is True


def test_rules_an_admin_added_are_left_alone_and_count_against_the_budget():
    custom = {"Name": "postmaster-to-sns", "Enabled": True, "Recipients": ["postmaster@corp.example"],
              "Actions": []}
    corp = tenant("corp", "corp.example", 100 * 198 + 1)  # 199 rules: one too many beside two
    p = plan([BASE_RULE, custom], [corp], max_rules=200)
    assert "postmaster-to-sns" not in p.delete + [r["Name"] for r in p.update]
    assert p.by_domain == ["corp"]


def test_over_the_ceiling_the_biggest_tenant_goes_by_domain_and_no_address_is_refused():
    big, small = tenant("big", "big.example", 1_000), tenant("small", "small.example", 150)
    p = plan([BASE_RULE], [big, small], max_rules=6)  # the stack rule + 5: big alone needs 10
    assert p.by_domain == ["big"]
    after = applied([BASE_RULE], p)
    assert published(after) == set(small.addresses) | {"big.example"}
    assert p.rules_used <= 6


def test_gaps_are_closed_before_a_tenant_is_given_up():
    corp = tenant("corp", "corp.example", 300)
    rules = applied([BASE_RULE], plan([BASE_RULE], [corp]))
    # Keep a few addresses from each rule: 3 sparse rules for 30 addresses.
    kept = frozenset(a for r in rules if r["Name"] != BASE for a in sorted(r["Recipients"])[:10])
    fewer = TenantAddresses("corp", ("corp.example",), kept)
    assert len(applied(rules, plan(rules, [fewer])))  == 4  # room enough: nothing moves
    other = tenant("other", "other.example", 100)
    p = plan(rules, [fewer, other], max_rules=3)  # stack rule + corp packed (1) + other (1)
    assert p.by_domain == []
    assert published(applied(rules, p)) == set(kept) | set(other.addresses)


def test_too_many_tenants_for_even_one_rule_each_fails_without_a_change():
    tenants = [tenant(f"t{i}", f"t{i}.example", 1) for i in range(5)]
    with pytest.raises(RecipientRulesError, match="too many tenants"):
        plan([BASE_RULE], tenants, max_rules=4)


def test_the_stack_rule_must_exist():
    with pytest.raises(RecipientRulesError, match="missing"):
        plan([], [tenant("corp", "corp.example", 1)])


@pytest.mark.parametrize("name", ["corp", "株式会社テスト", "a" * 80, "a.b_c d"])
def test_rule_names_are_valid_for_ses_and_distinct(name):
    prefix = rule_prefix(BASE, name)
    assert len(prefix) + 4 <= 64
    assert prefix.replace("-", "").isalnum() and prefix.isascii()
    assert prefix != rule_prefix(BASE, name + "x")


def test_normalise_keeps_addresses_only():
    assert normalise([" Alice@Corp.Example ", "bob@corp.example", "nobody", "@corp.example",
                      "a b@corp.example"]) == {"alice@corp.example", "bob@corp.example"}


# --- SesReceiptRules on moto ---------------------------------------------------------------

@pytest.fixture
def ses(monkeypatch):
    use_aws_test_credentials(monkeypatch)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="raw-bucket")
        client = boto3.client("ses", region_name="us-east-1")
        client.create_receipt_rule_set(RuleSetName=RULE_SET)
        client.create_receipt_rule(RuleSetName=RULE_SET, Rule=BASE_RULE)
        yield client


def test_publish_and_grow_on_moto(ses):
    rules = SesReceiptRules(RULE_SET, client=ses, write_interval=0)
    corp = tenant("corp", "corp.example", 120)
    rules.apply(plan(rules.rules(), [corp]))
    stored = rules.rules()
    assert [r["Name"] for r in stored] == [BASE, rule_prefix(BASE, "corp") + "-000",
                                           rule_prefix(BASE, "corp") + "-001"]
    assert published(stored) == set(corp.addresses)
    assert all(len(r["Recipients"]) <= MAX_RECIPIENTS_PER_RULE for r in stored)
    grown = tenant("corp", "corp.example", 130)
    p = plan(stored, [grown])
    assert not p.create and len(p.update) == 1  # only the rule with room changes
    rules.apply(p)
    assert published(rules.rules()) == set(grown.addresses)
    assert plan(rules.rules(), [grown]).changes == 0


def test_stale_rules_are_deleted_last_stubbed():
    """DeleteReceiptRule is not in moto: the calls and their order are checked on botocore's
    request building, which validates every parameter against the SES service model."""
    client = boto3.client("ses", region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    new_rule = {"Name": f"{BASE}-corp-00000000-000", "Enabled": True, "Recipients": ["a@corp.example"],
                "Actions": ACTIONS}
    p = RulePlan(create=[(new_rule, BASE)], update=[{**BASE_RULE, "Enabled": False}],
                 delete=[f"{BASE}-gone-11111111-000"])
    with Stubber(client) as stub:
        stub.add_response("create_receipt_rule", {},
                          {"RuleSetName": RULE_SET, "After": BASE, "Rule": new_rule})
        stub.add_response("update_receipt_rule", {},
                          {"RuleSetName": RULE_SET, "Rule": {**BASE_RULE, "Enabled": False}})
        stub.add_response("delete_receipt_rule", {},
                          {"RuleSetName": RULE_SET, "RuleName": f"{BASE}-gone-11111111-000"})
        pauses: list[float] = []
        SesReceiptRules(RULE_SET, client=client, sleep=pauses.append).apply(p)
        stub.assert_no_pending_responses()
    # Three writes, paced to SES's documented one call per second: two waits, each under 1 s.
    assert len(pauses) == 2 and all(0 < pause <= 1.0 for pause in pauses)


def test_an_enabled_rule_without_recipients_is_never_written():
    """SES reads a rule without recipients as "every address of every verified domain"."""
    client = boto3.client("ses", region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    open_rule = {"Name": f"{BASE}-corp-00000000-000", "Enabled": True, "Recipients": [], "Actions": ACTIONS}
    with Stubber(client), pytest.raises(ValueError, match="without recipients"):
        SesReceiptRules(RULE_SET, client=client).apply(RulePlan(update=[open_rule]))


def test_no_plan_enables_a_rule_without_recipients():
    bare = {**BASE_RULE, "Recipients": ["corp.example"]}
    p = plan_recipient_rules([bare], base=BASE, base_domains=[], tenants=[tenant("corp", "corp.example", 3)])
    rules = applied([bare], p)
    assert all(r["Recipients"] for r in rules)
    (base,) = [r for r in rules if r["Name"] == BASE]
    assert base["Enabled"] is False and base["Recipients"] == ["corp.example"]
