"""Microsoft 365 through Graph, against recorded responses: full listing with paging, delta,
throttling, failures that change nothing, shared mailbox detection."""

from __future__ import annotations

import pytest
import responses

from mailmoat.directory.m365 import smtp_addresses
from mailmoat.directory.model import DirectorySyncError
from mailmoat.directory.sync import sync_tenant
from mailmoat.ports import Recipient
from tests.unit.directory.helpers import (
    GRAPH,
    M365_TENANT_ID,
    SleepRecorder,
    m365_tenant,
    no_sleep,
    play,
    secrets,
    sqlite_directory,
    url_of,
)

SECRET = secrets(CORP_GRAPH_SECRET="recorded-client-secret")
USERS_START = url_of("m365-full.json", "/users/delta?$select=")
GROUPS_START = url_of("m365-full.json", "/groups/delta?$select=")

EXPECTED_AFTER_FULL = {
    # address: (kind, aliases)
    "alice@corp.example": ("user", ["a.smith@corp.example"]),
    "bob@corp.example": ("user", ["robert@corp-sales.example"]),
    "info@corp.example": ("shared", ["contact@corp.example"]),
    "carol@corp.example": ("user", []),
    "sales@corp.example": ("group", ["vertrieb@corp.example"]),
    "all@corp.example": ("list", []),
    "it@corp.example": ("group", []),
}


def snapshot(directory, tenant="corp"):
    return {r.address: (r.kind, r.aliases) for r in directory.recipients(tenant)}


@pytest.mark.parametrize(("proxy", "primary", "addresses"), [
    (["SMTP:A@x.example", "smtp:b@x.example"], "a@x.example", ["a@x.example", "b@x.example"]),
    (["x500:/o=Org/cn=a", "SIP:a@x.example", "SPO:SPO_1@SPO_2"], None, []),
    (["smtp:b@x.example", "smtp:B@x.example"], None, ["b@x.example"]),
    (["SMTP:", "smtp:no-at-sign", "eum:123;phone-context=x"], None, []),
])
def test_only_smtp_proxy_addresses_count(proxy, primary, addresses) -> None:
    assert smtp_addresses(proxy) == (primary, addresses)


def run(directory, tenant=None, **kwargs):
    return sync_tenant(directory, tenant or m365_tenant(max_delete_share=0.5),
                       read_secret=SECRET, sleep=kwargs.pop("sleep", no_sleep), **kwargs)


def test_first_run_lists_everything_with_aliases_groups_and_shared_mailboxes(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        result = run(directory)
        token_call = next(c for c in rsps.calls if c.request.url.endswith("/oauth2/v2.0/token"))
        graph_calls = [c for c in rsps.calls if c.request.url.startswith(GRAPH)]
    assert snapshot(directory) == EXPECTED_AFTER_FULL
    assert result.applied and result.complete and not result.refused
    assert sorted(result.added) == sorted(EXPECTED_AFTER_FULL)
    # Client credentials with the app's secret; the token goes to Graph only.
    assert "grant_type=client_credentials" in token_call.request.body
    assert "client_secret=recorded-client-secret" in token_call.request.body
    assert all(c.request.headers["Authorization"].startswith("Bearer eyJ") for c in graph_calls)
    alice = directory.recipient("alice@corp.example")
    assert (alice.name, alice.organisation, alice.department, alice.title) == (
        "Alice Smith", "Corp KK", "営業部", "課長")
    assert (alice.source, alice.external_id) == ("m365", "a1f0c2de-0001-4000-8000-000000000001")
    assert any("guest@partner.example: not in the tenant's domains" in s for s in result.skipped)
    assert any("alice@corp.onmicrosoft.com (alias of alice@corp.example)" in s for s in result.skipped)
    assert result.by_kind["shared"]["added"] == 1 and result.by_kind["list"]["added"] == 1
    state = directory.sync_state("corp", "m365")
    assert state == {"users_delta_link": f"{GRAPH}/users/delta?$deltatoken=uSeRsDeLtA1",
                     "groups_delta_link": f"{GRAPH}/groups/delta?$deltatoken=gRoUpSdElTa1"}


def test_an_alias_finds_its_owner(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        run(directory)
    assert directory.recipient("Vertrieb@corp.example").address == "sales@corp.example"
    assert directory.recipient("robert@corp-sales.example").address == "bob@corp.example"
    assert directory.recipient("alice@corp.onmicrosoft.com") is None  # not one of our domains


def test_second_run_applies_only_the_delta(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        run(directory)
    # A local setting on a synced row survives the sync.
    bob = directory.recipient("bob@corp.example")
    bob.spam_filter, bob.memo = False, "VIP"
    directory.upsert_recipients([bob])
    with responses.RequestsMock() as rsps:  # only the delta links are answered
        play(rsps, "m365-delta.json")
        result = run(directory)
        asked = [c.request.url for c in rsps.calls if c.request.url.startswith(GRAPH)]
    assert all("$deltatoken=" in url for url in asked) and len(asked) == 2
    assert not result.complete
    assert (result.added, result.removed) == (["erin@corp.example"], ["carol@corp.example"])
    assert sorted(result.changed) == ["all@corp.example", "bob@corp.example"]
    assert result.unchanged == 5 - 1  # alice, info, sales, it (all and bob changed, carol gone)
    expected = dict(EXPECTED_AFTER_FULL)
    del expected["carol@corp.example"]
    expected["bob@corp.example"] = ("user", ["bobby@corp.example", "robert@corp-sales.example"])
    expected["erin@corp.example"] = ("user", ["e.park@corp.example"])
    assert snapshot(directory) == expected
    bob = directory.recipient("bobby@corp.example")
    assert (bob.name, bob.department, bob.spam_filter, bob.memo) == ("Bob Jones", "Sales", False, "VIP")
    assert directory.recipient("all@corp.example").name == "All staff (Japan)"
    assert directory.sync_state("corp", "m365")["users_delta_link"].endswith("uSeRsDeLtA2")


def test_throttling_waits_as_told_by_retry_after(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    sleep = SleepRecorder()
    with responses.RequestsMock() as rsps:
        rsps.add("GET", USERS_START, status=429, headers={"Retry-After": "7"},
                 json={"error": {"code": "TooManyRequests", "message": "Too many requests"}})
        rsps.add("GET", GROUPS_START, status=503, json={"error": {"code": "serviceNotAvailable"}})
        play(rsps, "m365-full.json")
        result = run(directory, sleep=sleep)
    assert sleep.waits == [7.0, 1.0]  # Retry-After, then backoff where none was given
    assert result.applied and snapshot(directory) == EXPECTED_AFTER_FULL


def test_throttling_without_end_fails_after_bounded_retries_and_changes_nothing(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    sleep = SleepRecorder()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        play(rsps, "m365-full.json", skip={USERS_START})
        rsps.add("GET", USERS_START, status=429, headers={"Retry-After": "2"})
        with pytest.raises(DirectorySyncError, match="HTTP 429"):
            run(directory, sleep=sleep)
    assert len(sleep.waits) == 6 and directory.recipients("corp") == []


def test_a_retry_after_beyond_the_limit_fails_at_once(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        play(rsps, "m365-full.json", skip={USERS_START})
        rsps.add("GET", USERS_START, status=429, headers={"Retry-After": "3600"})
        with pytest.raises(DirectorySyncError, match="3600"):
            run(directory)


@pytest.mark.parametrize(("status", "code"), [(401, "InvalidAuthenticationToken"),
                                              (403, "Authorization_RequestDenied"),
                                              (500, "generalException")])
def test_api_errors_fail_the_run_cleanly_and_change_nothing(tmp_path, status, code) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        run(directory)
    before = directory.recipients("corp"), directory.sync_state("corp", "m365")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        play(rsps, "m365-delta.json", skip={url_of("m365-delta.json", "groups/delta")})
        rsps.add("GET", url_of("m365-delta.json", "groups/delta"), status=status,
                 json={"error": {"code": code, "message": "recorded failure"}})
        with pytest.raises(DirectorySyncError, match=f"HTTP {status} {code}"):
            run(directory)
    # The users delta had been read, but nothing of it was applied and the cursor is unchanged.
    assert (directory.recipients("corp"), directory.sync_state("corp", "m365")) == before


TOKEN_URL = f"https://login.microsoftonline.com/{M365_TENANT_ID}/oauth2/v2.0/token"


@pytest.mark.parametrize("discovery_answers", [True, False])
def test_a_rejected_client_secret_fails_with_the_token_error(tmp_path, discovery_answers) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        play(rsps, "m365-full.json", skip={TOKEN_URL})
        rsps.add("POST", TOKEN_URL, status=401,
                 json={"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret."})
        if discovery_answers:  # msal looks up the authority's aliases after a token error
            rsps.add("GET", "https://login.microsoftonline.com/common/discovery/instance",
                     json={"tenant_discovery_endpoint": "https://login.microsoftonline.com/common/v2.0/"
                           ".well-known/openid-configuration", "api-version": "1.1",
                           "metadata": [{"preferred_network": "login.microsoftonline.com",
                                         "preferred_cache": "login.windows.net",
                                         "aliases": ["login.microsoftonline.com", "login.windows.net"]}]})
        with pytest.raises(DirectorySyncError, match="invalid_client" if discovery_answers else "token"):
            run(directory)
        graph_calls = [c for c in rsps.calls if c.request.url.startswith(GRAPH)]
    assert graph_calls == [] and directory.recipients("corp") == []


def test_a_missing_secret_is_a_config_error() -> None:
    with pytest.raises(DirectorySyncError, match="CORP_GRAPH_SECRET"):
        sync_tenant(None, m365_tenant(), read_secret=secrets(), sleep=no_sleep)  # type: ignore[arg-type]


def test_an_expired_delta_cursor_lists_everything_again(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        run(directory)
    directory.upsert_recipients([Recipient("stale@corp.example", "corp", source="m365",
                                           external_id="a1f0c2de-dead-4000-8000-000000000000")])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add("GET", url_of("m365-delta.json", "users/delta"), status=410,
                 json={"error": {"code": "syncStateNotFound", "message": "The sync state is gone."}})
        rsps.add("GET", url_of("m365-delta.json", "groups/delta"),
                 json={"@odata.deltaLink": f"{GRAPH}/groups/delta?$deltatoken=g2", "value": []})
        play(rsps, "m365-full.json")
        result = run(directory)
    assert result.removed == ["stale@corp.example"]  # the full users listing no longer has it
    assert snapshot(directory) == EXPECTED_AFTER_FULL


def test_paging_links_to_another_host_are_not_followed(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, m365_tenant())
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        play(rsps, "m365-full.json", skip={USERS_START})
        rsps.add("GET", USERS_START, json={"@odata.nextLink": "https://evil.example/users?x=1", "value": []})
        with pytest.raises(DirectorySyncError, match="another host"):
            run(directory)


def test_user_purpose_tells_a_disabled_user_from_a_shared_mailbox(tmp_path) -> None:
    tenant = m365_tenant()
    assert tenant.directory.m365 is not None
    tenant.directory.m365.detect_shared = "user-purpose"
    directory = sqlite_directory(tmp_path, tenant)
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        rsps.add("GET", f"{GRAPH}/users/a1f0c2de-0003-4000-8000-000000000003/mailboxSettings/userPurpose",
                 json={"@odata.context": "…", "value": "user"})
        run(directory, tenant)
    assert directory.recipient("info@corp.example").kind == "user"
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        rsps.add("GET", f"{GRAPH}/users/a1f0c2de-0003-4000-8000-000000000003/mailboxSettings/userPurpose",
                 status=404, json={"error": {"code": "MailboxNotEnabledForRESTAPI"}})
        directory.set_sync_state("corp", "m365", {})
        result = run(directory, tenant, confirm_deletes=True)
    assert result.removed == ["info@corp.example"]  # no mailbox behind the address after all
