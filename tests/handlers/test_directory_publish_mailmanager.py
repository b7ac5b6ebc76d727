"""DirectoryPublish on the Mail Manager path, through the real handler: the directory table on moto,
the Mail Manager calls on botocore's Stubber (moto has no Mail Manager), so every request is
checked against the service's API model and made in the order the plan promises."""

from __future__ import annotations

import datetime as dt

import boto3
import pytest
from botocore.stub import ANY, Stubber
from tests.e2e import test_aws_pipeline as moto
from tests.handlers.test_handlers import event, load_handler

from mailmoat.adapters import aws_mailmanager
from mailmoat.adapters.aws_dynamodb import DynamoDirectory
from mailmoat.adapters.aws_mailmanager import MailManagerAddressList, MailManagerRoutes
from mailmoat.aws.mailmanager import (
    AddressListGuardError,
    RelayTarget,
    TenantRoute,
    plan_address_list,
    plan_routes,
    relay_name,
    route_rules,
)
from mailmoat.bootstrap import aws as entry
from mailmoat.config import DeliveryConfig, TenantConfig
from mailmoat.ports import Recipient

stack = moto.stack
LIST_ID = "al-0123456789abcdef"
RULE_SET_ID = "rs-submission0001"
PREFIX = "mailmoat-dev-relay"
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def stubbed() -> tuple[object, Stubber]:
    client = boto3.client("mailmanager", region_name=moto.REGION)
    return client, Stubber(client)


def members(*addresses: str) -> dict:
    return {"Addresses": [{"Address": a, "CreatedTimestamp": NOW} for a in addresses]}


# --- the plans -------------------------------------------------------------------------------------

def test_the_address_list_plan_registers_the_missing_and_deregisters_the_departed():
    plan = plan_address_list(["Alice@corp.example", "carol@corp.example"],
                             ["alice@corp.example", "bob@corp.example"])
    assert plan.register == ("bob@corp.example",)
    assert plan.deregister == ("carol@corp.example",)
    assert plan_address_list(["a@x.example"], ["A@x.example"]).changes == 0


def test_an_empty_directory_never_empties_a_filled_address_list():
    with pytest.raises(AddressListGuardError):
        plan_address_list(["alice@corp.example"], [])
    assert plan_address_list([], []).changes == 0  # a new stack with nobody yet: nothing to do


def test_a_directory_larger_than_one_address_list_changes_nothing():
    from mailmoat.aws.mailmanager import MAX_ADDRESSES_PER_LIST

    wanted = [f"u{i}@corp.example" for i in range(MAX_ADDRESSES_PER_LIST + 1)]
    with pytest.raises(AddressListGuardError, match="exceed"):
        plan_address_list(["alice@corp.example"], wanted)


def test_one_relay_per_mailbox_host_and_a_rule_per_tenant_preserving_the_envelope_sender():
    target = RelayTarget("corp-example.mail.protection.outlook.com", 25)
    routes = [TenantRoute("corp", ("corp.example", "corp.example.jp"), target),
              TenantRoute("sub", ("sub.example",), target)]
    plan = plan_routes(routes, {}, prefix=PREFIX)
    name = relay_name(PREFIX, target)
    assert list(plan.create) == [name] and not plan.update and not plan.delete
    assert name.startswith(PREFIX + "-corp-example-mail-protection-outlook-com-") and len(name) <= 100
    rules = route_rules(routes, {name: "r-1"}, PREFIX)
    assert [r["Name"] for r in rules] == ["relay-corp", "relay-sub"]
    condition = rules[0]["Conditions"][0]["StringExpression"]
    assert condition["Operator"] == "ENDS_WITH"
    assert condition["Values"] == ["@corp.example", "@corp.example.jp"]  # not "@evilcorp.example"
    assert rules[0]["Actions"] == [{"Relay": {"Relay": "r-1", "MailFrom": "PRESERVE",
                                              "ActionFailurePolicy": "DROP"}}]
    moved = plan_routes(routes[:1], {name: RelayTarget("old.example", 25), f"{PREFIX}-gone-1": target},
                        prefix=PREFIX)
    assert moved.update == {name: target} and moved.delete == [f"{PREFIX}-gone-1"]


def test_a_tenant_in_mailmanager_mode_without_a_mailbox_host_fails_the_run():
    from mailmoat.aws.mailmanager import mailmanager_routes

    tenant = TenantConfig(name="corp", domains=["corp.example"], delivery=DeliveryConfig(mode="mailmanager"))
    with pytest.raises(ValueError, match=r"needs delivery\.host"):
        mailmanager_routes([tenant], mode_of=lambda t: t.delivery.mode)


# --- the adapters on the API model ------------------------------------------------------------------

def test_the_address_list_reads_every_page_and_registers_before_it_deregisters():
    client, stub = stubbed()
    stub.add_response("list_members_of_address_list", {**members("alice@corp.example"), "NextToken": "t2"},
                      {"AddressListId": LIST_ID, "PageSize": 1000})
    stub.add_response("list_members_of_address_list", members("carol@corp.example"),
                      {"AddressListId": LIST_ID, "PageSize": 1000, "NextToken": "t2"})
    stub.add_response("register_member_to_address_list", {},
                      {"AddressListId": LIST_ID, "Address": "bob@corp.example"})
    stub.add_response("deregister_member_from_address_list", {},
                      {"AddressListId": LIST_ID, "Address": "carol@corp.example"})
    with stub:
        adapter = MailManagerAddressList(LIST_ID, client=client)
        current = adapter.members()
        assert current == {"alice@corp.example", "carol@corp.example"}
        adapter.apply(plan_address_list(current, ["alice@corp.example", "bob@corp.example"]))
    stub.assert_no_pending_responses()


def test_routes_create_the_relay_before_the_rule_set_names_it_and_delete_stale_ones_last():
    client, stub = stubbed()
    target = RelayTarget("corp-example.mail.protection.outlook.com", 25)
    name = relay_name(PREFIX, target)
    stale = f"{PREFIX}-old-host-0000000000"
    routes = [TenantRoute("corp", ("corp.example",), target)]
    plan = plan_routes(routes, {stale: RelayTarget("old.example", 25)}, prefix=PREFIX)
    listing = {"Relays": [{"RelayId": "r-old", "RelayName": stale},
                          {"RelayId": "r-other", "RelayName": "someone-elses-relay"}]}
    stub.add_response("list_relays", listing, {"PageSize": 100})
    stub.add_response("create_relay", {"RelayId": "r-new"},
                      {"RelayName": name, "ServerName": target.host, "ServerPort": 25,
                       "Authentication": {"NoAuthentication": {}},
                       "Tags": [{"Key": "mailmoat-stack", "Value": "mailmoat-dev"}]})
    stub.add_response("get_rule_set", {"RuleSetId": RULE_SET_ID, "RuleSetArn": "arn:aws:ses:us-east-1:"
                                       "123456789012:mailmanager-rule-set/" + RULE_SET_ID,
                                       "RuleSetName": "submission", "CreatedDate": NOW,
                                       "LastModificationDate": NOW, "Rules": []},
                      {"RuleSetId": RULE_SET_ID})
    stub.add_response("update_rule_set", {}, {"RuleSetId": RULE_SET_ID,
                                              "Rules": route_rules(routes, {name: "r-new"}, PREFIX)})
    stub.add_response("delete_relay", {}, {"RelayId": "r-old"})
    with stub:
        assert MailManagerRoutes(RULE_SET_ID, prefix=PREFIX, tag="mailmoat-dev", client=client).apply(plan) is True
    stub.assert_no_pending_responses()


# --- the handler --------------------------------------------------------------------------------------

def test_the_directory_stream_keeps_the_address_list_and_routes_equal_to_the_table(stack, monkeypatch):
    """events/dynamodb-directory-stream.json through functions/directory_publish/app.py with the
    stack's Mail Manager settings: bob (added) and his alias registered, carol (gone) deregistered,
    the mailmanager-mode tenant routed to its mailbox host; the ses-mode tenant is not routed."""
    directory = DynamoDirectory("directory")
    directory.put_tenant_config(TenantConfig(
        name="corp", domains=["corp.example"],
        delivery=DeliveryConfig(mode="mailmanager", host="corp-example.mail.protection.outlook.com")))
    directory.put_tenant_config(TenantConfig(name="other", domains=["other.example"],
                                             delivery=DeliveryConfig(mode="ses")))
    directory.upsert_recipients([Recipient("bob@corp.example", "corp", name="Bob",
                                           aliases=["robert@corp.example"]),
                                 Recipient("dan@other.example", "other", name="Dan")])
    for name, value in {"MAILMOAT_INGRESS": "mailmanager", "MAILMOAT_ADDRESS_LIST_ID": LIST_ID,
                        "MAILMOAT_SUBMISSION_RULE_SET_ID": RULE_SET_ID,
                        "MAILMOAT_RELAY_PREFIX": PREFIX, "MAILMOAT_RELAY_TAG": "mailmoat-dev"}.items():
        monkeypatch.setenv(name, value)
    client, stub = stubbed()
    target = RelayTarget("corp-example.mail.protection.outlook.com", 25)
    name = relay_name(PREFIX, target)
    stub.add_response("list_relays", {"Relays": []}, {"PageSize": 100})  # relays()
    stub.add_response("list_relays", {"Relays": []}, {"PageSize": 100})  # apply()
    stub.add_response("create_relay", {"RelayId": "r-corp"},
                      {"RelayName": name, "ServerName": target.host, "ServerPort": 25,
                       "Authentication": {"NoAuthentication": {}},
                       "Tags": [{"Key": "mailmoat-stack", "Value": "mailmoat-dev"}]})
    stub.add_response("get_rule_set", {"RuleSetId": RULE_SET_ID, "RuleSetArn": "arn", "RuleSetName": "s",
                                       "CreatedDate": NOW, "LastModificationDate": NOW, "Rules": []},
                      {"RuleSetId": RULE_SET_ID})
    stub.add_response("update_rule_set", {}, {"RuleSetId": RULE_SET_ID, "Rules": ANY})
    stub.add_response("list_members_of_address_list",
                      members("alice@corp.example", "carol@corp.example"),
                      {"AddressListId": LIST_ID, "PageSize": 1000})
    registered = ["bob@corp.example", "dan@other.example", "robert@corp.example"]
    for address in registered:
        stub.add_response("register_member_to_address_list", {},
                          {"AddressListId": LIST_ID, "Address": address})
    stub.add_response("deregister_member_from_address_list", {},
                      {"AddressListId": LIST_ID, "Address": "carol@corp.example"})
    monkeypatch.setattr(aws_mailmanager, "mailmanager_client", lambda: client)
    entry.aws_runtime.cache_clear()
    handler = load_handler("functions/directory_publish/app.py")
    with stub:
        assert handler(event("dynamodb-directory-stream.json"), moto.FakeContext()) == {"batchItemFailures": []}
    stub.assert_no_pending_responses()
