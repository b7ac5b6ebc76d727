"""Google Workspace through the Admin SDK Directory API, against recorded responses: a
service-account token with domain-wide delegation, paging, aliases, groups, backoff, errors."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import google.auth.jwt
import pytest
import responses

from mailmoat.directory.model import DirectorySyncError
from mailmoat.directory.sync import sync_tenant
from tests.unit.directory.helpers import (
    SleepRecorder,
    google_tenant,
    no_sleep,
    play,
    secrets,
    service_account_key,
    sqlite_directory,
    url_of,
)

KEY = service_account_key()
SECRET = secrets(CORP_GOOGLE_KEY=json.dumps(KEY))
GROUPS = url_of("google-run1.json", "/groups?")

EXPECTED_RUN1 = {
    "alice@corp.example": ("user", ["a.smith@corp.example"]),
    "bob@corp.example": ("user", ["robert@corp-sales.example"]),
    "dave@corp.example": ("user", []),
    "sales@corp.example": ("group", ["eigyo@corp.example"]),
}


def snapshot(directory):
    return {r.address: (r.kind, r.aliases) for r in directory.recipients("corp")}


def run(directory, **kwargs):
    return sync_tenant(directory, kwargs.pop("tenant", None) or google_tenant(max_delete_share=0.5),
                       read_secret=SECRET, sleep=kwargs.pop("sleep", no_sleep), **kwargs)


def test_first_run_registers_users_aliases_and_groups(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, google_tenant())
    with responses.RequestsMock() as rsps:
        play(rsps, "google-run1.json")
        result = run(directory)
        token_call = rsps.calls[0]
        api_calls = rsps.calls[1:]
    assert snapshot(directory) == EXPECTED_RUN1
    assert result.applied and result.complete
    # The JWT bearer grant, signed with the service account's key, impersonating the admin.
    body = token_call.request.body
    form = parse_qs(body.decode() if isinstance(body, bytes) else body)
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    claims = google.auth.jwt.decode(form["assertion"][0], verify=False)
    assert claims["sub"] == "admin@corp.example" and claims["iss"] == KEY["client_email"]
    assert set(claims["scope"].split()) == {
        "https://www.googleapis.com/auth/admin.directory.user.readonly",
        "https://www.googleapis.com/auth/admin.directory.group.readonly"}
    assert all(c.request.headers["Authorization"] == "Bearer ya29.recorded-directory-token" for c in api_calls)
    assert "pageToken=Q2hRa3BhZ2UyVG9rZW4" in api_calls[1].request.url  # the second page was asked for
    alice = directory.recipient("a.smith@corp.example")
    assert (alice.address, alice.name, alice.organisation, alice.department, alice.title) == (
        "alice@corp.example", "Alice Smith", "Corp KK", "営業部", "課長")
    assert alice.source == "google" and alice.external_id == "104000000000000000001"
    assert directory.recipient("carol@corp.example") is None  # suspended: Gmail does not deliver
    assert any("alice@corp.example.test-google-a.com (alias of alice@corp.example): not in the tenant's domains"
               in s for s in result.skipped)
    assert directory.recipient("eigyo@corp.example").address == "sales@corp.example"


def test_second_run_applies_only_the_difference(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, google_tenant())
    with responses.RequestsMock() as rsps:
        play(rsps, "google-run1.json")
        run(directory)
    with responses.RequestsMock() as rsps:
        play(rsps, "google-run2.json")
        result = run(directory)
    assert (result.added, result.changed, result.removed) == (
        ["erin@corp.example"], ["alice@corp.example"], ["bob@corp.example"])
    assert result.unchanged == 2  # dave, sales
    assert snapshot(directory) == {
        "alice@corp.example": ("user", ["a.smith@corp.example", "alice.smith@corp.example"]),
        "dave@corp.example": ("user", []),
        "erin@corp.example": ("user", []),
        "sales@corp.example": ("group", ["eigyo@corp.example"]),
    }


@pytest.mark.parametrize(("status", "body"), [
    (503, {"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}}),
    (429, {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}),
    (403, {"error": {"code": 403, "message": "Rate Limit Exceeded",
                     "errors": [{"reason": "userRateLimitExceeded", "domain": "usageLimits"}]}}),
])
def test_transient_answers_are_retried_with_backoff(tmp_path, status, body) -> None:
    directory = sqlite_directory(tmp_path, google_tenant())
    sleep = SleepRecorder()
    with responses.RequestsMock() as rsps:
        rsps.add("GET", GROUPS, status=status, json=body)
        rsps.add("GET", GROUPS, status=status, json=body)
        play(rsps, "google-run1.json")
        run(directory, sleep=sleep)
    assert sleep.waits == [1.0, 2.0] and snapshot(directory) == EXPECTED_RUN1


@pytest.mark.parametrize(("status", "body"), [
    (403, {"error": {"code": 403, "message": "Not Authorized to access this resource/api",
                     "errors": [{"reason": "forbidden", "domain": "global"}]}}),
    (401, {"error": {"code": 401, "message": "Invalid Credentials", "status": "UNAUTHENTICATED"}}),
    (500, {"error": {"code": 500, "message": "Backend Error"}}),
])
def test_errors_fail_the_run_and_change_nothing(tmp_path, status, body) -> None:
    directory = sqlite_directory(tmp_path, google_tenant())
    with responses.RequestsMock() as rsps:
        play(rsps, "google-run1.json")
        run(directory)
    before = directory.recipients("corp")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        play(rsps, "google-run2.json", skip={url_of("google-run2.json", "/groups?")})
        rsps.add("GET", url_of("google-run2.json", "/groups?"), status=status, json=body)
        with pytest.raises(DirectorySyncError, match=f"HTTP {status}"):
            run(directory)
    assert directory.recipients("corp") == before


def test_delegation_not_granted_fails_with_the_token_error(tmp_path) -> None:
    directory = sqlite_directory(tmp_path, google_tenant())
    with responses.RequestsMock() as rsps:
        rsps.add("POST", "https://oauth2.googleapis.com/token", status=401,
                 json={"error": "unauthorized_client",
                       "error_description": "Client is unauthorized to retrieve access tokens using this method,"
                                            " or client not authorized for any of the scopes requested."})
        with pytest.raises(DirectorySyncError, match="unauthorized_client"):
            run(directory)
    assert directory.recipients("corp") == []


@pytest.mark.parametrize(("secret", "message"), [
    (None, "not set"), ("{not json", "not JSON"), (json.dumps({"type": "authorized_user"}), "service_account"),
])
def test_bad_keys_are_config_errors(tmp_path, secret, message) -> None:
    read = secrets(CORP_GOOGLE_KEY=secret) if secret is not None else secrets()
    with pytest.raises(DirectorySyncError, match=message):
        sync_tenant(sqlite_directory(tmp_path, google_tenant()), google_tenant(), read_secret=read,
                    sleep=no_sleep)


def test_the_key_file_named_in_the_config_is_read(tmp_path) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(KEY), encoding="utf-8")
    tenant = google_tenant(max_delete_share=0.5)
    assert tenant.directory.google is not None
    tenant.directory.google.service_account_env = None
    tenant.directory.google.service_account_file = key_file
    directory = sqlite_directory(tmp_path, tenant)
    with responses.RequestsMock() as rsps:
        play(rsps, "google-run1.json")
        sync_tenant(directory, tenant, read_secret=secrets(), sleep=no_sleep)
    assert snapshot(directory) == EXPECTED_RUN1
