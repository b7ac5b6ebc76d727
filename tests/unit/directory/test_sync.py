"""The sync's rules: the deletion guard, rows from other sources, domains, alias clashes, dry run."""

from __future__ import annotations

import json

import pytest
import responses

from mailmoat.directory import sync as sync_module
from mailmoat.directory.model import GROUPS, USERS, DirectoryObject, ProviderChanges
from mailmoat.directory.sync import sync_tenant
from mailmoat.ports import Recipient
from tests.unit.directory.helpers import (
    GRAPH,
    m365_tenant,
    no_sleep,
    play,
    secrets,
    sqlite_directory,
    url_of,
)

SECRET = secrets(CORP_GRAPH_SECRET="recorded-client-secret")


def full_run(directory, **kwargs):
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        return sync_tenant(directory, kwargs.pop("tenant", None) or m365_tenant(), read_secret=SECRET,
                           sleep=no_sleep, **kwargs)


def empty_run(directory, **kwargs):
    """Graph answering a full listing with nothing in it: what an outage or a wrong filter looks like."""
    directory.set_sync_state("corp", "m365", {})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        play(rsps, "m365-full.json", skip={url_of("m365-full.json", "users/delta?$select"),
                                           url_of("m365-full.json", "groups/delta?$select")})
        for scope in ("users", "groups"):
            rsps.add("GET", url_of("m365-full.json", f"{scope}/delta?$select"),
                     json={"@odata.deltaLink": f"{GRAPH}/{scope}/delta?$deltatoken=empty", "value": []})
        return sync_tenant(directory, m365_tenant(), read_secret=SECRET, sleep=no_sleep, **kwargs)


def test_an_empty_answer_is_refused_and_changes_nothing(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    full_run(directory)
    before = directory.recipients("corp")
    result = empty_run(directory)
    assert result.refused and "7 of 7" in result.refused and "--confirm-deletes" in result.refused
    assert not result.applied and result.removed  # reported, not done
    assert directory.recipients("corp") == before
    assert directory.sync_state("corp", "m365") == {}  # the cursor did not move either
    confirmed = empty_run(directory, confirm_deletes=True)
    assert confirmed.applied and directory.recipients("corp") == []


@pytest.mark.parametrize(("existing", "removed", "share", "refused"), [
    (20, 2, 0.10, False),  # 10 % of 20 = 2: allowed
    (20, 3, 0.10, True),
    (5, 1, 0.10, True),  # small tenants need a larger share or a confirmation
    (5, 1, 0.25, False),
    (0, 0, 0.10, False),
])
def test_deletion_guard_share(tmp_path, monkeypatch, existing, removed, share, refused) -> None:
    tenant = m365_tenant(max_delete_share=share)
    directory = sqlite_directory(tmp_path, tenant)
    rows = [Recipient(f"u{i}@corp.example", "corp", source="m365", external_id=f"id{i}") for i in range(existing)]
    directory.upsert_recipients(rows)
    listing = ProviderChanges(complete_scopes={USERS, GROUPS}, objects=[
        DirectoryObject(external_id=r.external_id, scope=USERS, address=r.address, kind="user", aliases=[],
                        name="", organisation="", department="", title="") for r in rows[removed:]])

    class Listed:
        name = "m365"

        def fetch(self, state):
            return listing

    monkeypatch.setattr(sync_module, "make_provider", lambda *a, **k: Listed())
    result = sync_tenant(directory, tenant, sleep=no_sleep)
    assert bool(result.refused) is refused
    assert len(directory.recipients("corp")) == (existing if refused else existing - removed)


def test_rows_from_csv_survive_and_a_listed_one_is_taken_over(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    directory.upsert_recipients([
        Recipient("alice@corp.example", "corp", name="A (csv)", memo="CEO", spam_filter=False, source="csv"),
        Recipient("postmaster@corp.example", "corp", source="config"),
        Recipient("sales-old@corp.example", "corp", aliases=["vertrieb@corp.example"], source="csv"),
    ])
    result = full_run(directory)
    assert result.adopted == ["alice@corp.example"]
    alice = directory.recipient("a.smith@corp.example")
    assert (alice.address, alice.source, alice.name, alice.memo, alice.spam_filter) == (
        "alice@corp.example", "m365", "Alice Smith", "CEO", False)
    # The CSV row's alias stays with it; the group does not get it.
    assert directory.recipient("vertrieb@corp.example").address == "sales-old@corp.example"
    assert directory.recipient("sales@corp.example").aliases == []
    assert any("vertrieb@corp.example (alias of sales@corp.example): already used by sales-old@corp.example"
               in s for s in result.skipped)
    empty_run(directory, confirm_deletes=True)
    assert [r.address for r in directory.recipients("corp")] == ["postmaster@corp.example",
                                                                 "sales-old@corp.example"]


def test_an_address_that_is_someone_elses_alias_is_skipped(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    directory.upsert_recipients([Recipient("office@corp.example", "corp", aliases=["info@corp.example"],
                                           source="csv")])
    result = full_run(directory)
    assert "info@corp.example: already an alias of office@corp.example" in result.skipped
    assert directory.recipient("info@corp.example").address == "office@corp.example"


def test_dry_run_reports_and_writes_nothing(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    result = full_run(directory, dry_run=True)
    assert len(result.added) == 7 and not result.applied
    assert directory.recipients("corp") == [] and directory.sync_state("corp", "m365") == {}
    assert "dry run" in result.summary()


def test_summary_counts_per_kind(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    text = full_run(directory).summary()
    assert text.splitlines()[0].startswith("corp (m365, full listing, applied): 7 added, 0 changed, 0 removed")
    assert "  user    4 added, 0 changed, 0 removed, 0 skipped" not in text  # guest is a skipped user
    assert "  user    3 added, 0 changed, 0 removed, 1 skipped" in text
    assert "  group   2 added" in text and "  list    1 added" in text and "  shared  1 added" in text
    dry = full_run(sqlite_directory(tmp_path / "other", m365_tenant()), dry_run=True)
    assert json.loads(json.dumps(dry.to_dict()))["added"] == dry.added


def test_one_failing_tenant_does_not_stop_the_others(tmp_path) -> None:
    from mailmoat.config import TenantConfig
    from mailmoat.directory.sync import sync_tenants

    broken = m365_tenant()
    broken.name = "broken"
    broken.domains = ["broken.example"]
    assert broken.directory.m365 is not None
    broken.directory.m365.client_secret_env = "BROKEN_GRAPH_SECRET"  # not set
    no_provider = TenantConfig(name="plain", domains=["plain.example"])
    directory = sqlite_directory(tmp_path, m365_tenant())
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        outcomes = sync_tenants(directory, [broken, no_provider, m365_tenant()], read_secret=SECRET,
                                sleep=no_sleep)
    assert [(o.tenant, o.error is None) for o in outcomes] == [("broken", False), ("corp", True)]
    assert "the client secret is not set (env BROKEN_GRAPH_SECRET)" in (outcomes[0].error or "")
    assert outcomes[1].result is not None and len(outcomes[1].result.added) == 7


def test_two_objects_with_one_address_register_it_once(tmp_path, monkeypatch) -> None:
    tenant = m365_tenant()
    directory = sqlite_directory(tmp_path, tenant)
    listing = ProviderChanges(complete_scopes={USERS, GROUPS}, objects=[
        DirectoryObject(external_id=i, scope=USERS, address="desk@corp.example", kind="user", aliases=[])
        for i in ("id-a", "id-b")])

    class Listed:
        name = "m365"

        def fetch(self, state):
            return listing

    monkeypatch.setattr(sync_module, "make_provider", lambda *a, **k: Listed())
    result = sync_tenant(directory, tenant, sleep=no_sleep)
    assert result.added == ["desk@corp.example"]
    assert result.skipped == ["desk@corp.example: listed twice by the provider"]
    assert directory.recipient("desk@corp.example").external_id == "id-a"



def test_an_alias_taken_by_a_csv_row_leaves_a_synced_row_on_the_next_delta() -> None:
    from mailmoat.directory.sync import SyncResult, reconcile

    # As a store that does not move aliases by itself (DynamoDB keeps the list on the row) has it.
    info = Recipient("info@corp.example", "corp", kind="shared", aliases=["contact@corp.example"],
                     source="m365", external_id="u3")
    office = Recipient("office@corp.example", "corp", aliases=["contact@corp.example"], source="csv")
    result = SyncResult(tenant="corp", provider="m365", dry_run=False, complete=False)
    plan = reconcile([info, office], ProviderChanges(), tenant="corp", domains={"corp.example"},
                     provider="m365", result=result)
    assert [(r.address, r.aliases) for r in plan.upserts] == [("info@corp.example", [])]
    assert result.changed == ["info@corp.example"] and info.aliases == ["contact@corp.example"]
