"""`mailmoat directory sync` end to end: the CLI against recorded Graph / Admin SDK answers, a
second run that applies only the delta, and the SMTP gateway accepting what was synced."""

from __future__ import annotations

import json
import smtplib
from pathlib import Path

import pytest
import responses

from mailmoat.bootstrap import bootstrap
from mailmoat.local.cli import main
from mailmoat.local.server import Gateway
from tests.conftest import free_port, make_settings
from tests.unit.directory.helpers import M365_TENANT_ID, play, service_account_key

M365_CONFIG = f"""
[[tenant]]
name = "corp"
domains = ["corp.example", "corp-sales.example"]

[[tenant.users]]
address = "postmaster@corp.example"

[tenant.directory]
provider = "m365"
max_delete_share = 0.25

[tenant.directory.m365]
tenant_id = "{M365_TENANT_ID}"
client_id = "app-id"
client_secret_env = "CORP_GRAPH_SECRET"
"""


def google_config(key_file: Path) -> str:
    return f"""
[[tenant]]
name = "corp"
domains = ["corp.example", "corp-sales.example"]

[tenant.directory]
provider = "google"
max_delete_share = 0.5

[tenant.directory.google]
admin_subject = "admin@corp.example"
service_account_file = "{key_file}"
"""


@pytest.fixture
def m365_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("CORP_GRAPH_SECRET", "recorded-client-secret")
    config = tmp_path / "gateway.toml"
    config.write_text(M365_CONFIG, encoding="utf-8")
    return ["--data-dir", str(tmp_path / "var"), "--config", str(config)], config


def registered(tmp_path: Path, config: Path) -> dict[str, tuple[str, list[str], str]]:
    runtime = bootstrap(make_settings(tmp_path, config=config))
    return {r.address: (r.kind, r.aliases, r.source) for r in runtime.services.directory.recipients("corp")}


def test_m365_sync_from_the_cli_then_the_delta(tmp_path, m365_setup, capsys) -> None:
    common, config = m365_setup
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        assert main([*common, "directory", "sync", "--provider", "m365"]) == 0
    out = capsys.readouterr().out
    assert "corp (m365, full listing, applied): 7 added, 0 changed, 0 removed" in out
    assert "skipped guest@partner.example: not in the tenant's domains" in out
    assert registered(tmp_path, config) == {
        "alice@corp.example": ("user", ["a.smith@corp.example"], "m365"),
        "all@corp.example": ("list", [], "m365"),
        "bob@corp.example": ("user", ["robert@corp-sales.example"], "m365"),
        "carol@corp.example": ("user", [], "m365"),
        "info@corp.example": ("shared", ["contact@corp.example"], "m365"),
        "it@corp.example": ("group", [], "m365"),
        "postmaster@corp.example": ("user", [], "config"),  # from the config: never synced away
        "sales@corp.example": ("group", ["vertrieb@corp.example"], "m365"),
    }
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-delta.json")
        assert main([*common, "directory", "sync", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert (report["added"], report["removed"], sorted(report["changed"])) == (
        ["erin@corp.example"], ["carol@corp.example"], ["all@corp.example", "bob@corp.example"])
    after = registered(tmp_path, config)
    assert "carol@corp.example" not in after
    assert after["bob@corp.example"] == ("user", ["bobby@corp.example", "robert@corp-sales.example"], "m365")
    assert after["erin@corp.example"] == ("user", ["e.park@corp.example"], "m365")


def test_google_sync_from_the_cli_then_the_difference(tmp_path, capsys) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(service_account_key()), encoding="utf-8")
    config = tmp_path / "gateway.toml"
    config.write_text(google_config(key_file), encoding="utf-8")
    common = ["--data-dir", str(tmp_path / "var"), "--config", str(config)]
    with responses.RequestsMock() as rsps:
        play(rsps, "google-run1.json")
        assert main([*common, "directory", "sync", "--tenant", "corp"]) == 0
    assert "corp (google, full listing, applied): 4 added" in capsys.readouterr().out
    assert registered(tmp_path, config) == {
        "alice@corp.example": ("user", ["a.smith@corp.example"], "google"),
        "bob@corp.example": ("user", ["robert@corp-sales.example"], "google"),
        "dave@corp.example": ("user", [], "google"),
        "sales@corp.example": ("group", ["eigyo@corp.example"], "google"),
    }
    with responses.RequestsMock() as rsps:
        play(rsps, "google-run2.json")
        assert main([*common, "directory", "sync", "--dry-run"]) == 0
    assert "(google, full listing, dry run): 1 added, 1 changed, 1 removed" in capsys.readouterr().out
    assert "bob@corp.example" in registered(tmp_path, config)  # dry run
    with responses.RequestsMock() as rsps:
        play(rsps, "google-run2.json")
        assert main([*common, "directory", "sync"]) == 0
    assert set(registered(tmp_path, config)) == {"alice@corp.example", "dave@corp.example",
                                                 "erin@corp.example", "sales@corp.example"}


def test_refused_and_failed_runs_have_their_own_exit_status(tmp_path, m365_setup, capsys) -> None:
    common, config = m365_setup
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        main([*common, "directory", "sync"])
    before = registered(tmp_path, config)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        play(rsps, "m365-delta.json", skip={"https://graph.microsoft.com/v1.0/users/delta?$deltatoken=uSeRsDeLtA1"})
        rsps.add("GET", "https://graph.microsoft.com/v1.0/users/delta?$deltatoken=uSeRsDeLtA1", json={
            "@odata.deltaLink": "https://graph.microsoft.com/v1.0/users/delta?$deltatoken=x",
            "value": [{"id": f"a1f0c2de-000{i}-4000-8000-00000000000{i}", "@removed": {"reason": "deleted"}}
                      for i in (1, 2, 3, 4)]})
        assert main([*common, "directory", "sync"]) == 3
    assert "REFUSED: it would remove 4 of 8 recipients" in capsys.readouterr().out
    assert registered(tmp_path, config) == before
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        play(rsps, "m365-delta.json", skip={"https://graph.microsoft.com/v1.0/groups/delta?$deltatoken=gRoUpSdElTa1"})
        rsps.add("GET", "https://graph.microsoft.com/v1.0/groups/delta?$deltatoken=gRoUpSdElTa1", status=403,
                 json={"error": {"code": "Authorization_RequestDenied",
                                 "message": "Insufficient privileges to complete the operation."}})
        assert main([*common, "directory", "sync"]) == 1
    assert "corp: sync failed, nothing changed: GET /v1.0/groups/delta: HTTP 403" in capsys.readouterr().err
    assert registered(tmp_path, config) == before


def test_the_smtp_gateway_accepts_synced_addresses_and_aliases(tmp_path, m365_setup) -> None:
    common, config = m365_setup
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        assert main([*common, "directory", "sync"]) == 0
    runtime = bootstrap(make_settings(tmp_path, config=config, smtp_port=free_port()))
    bob = runtime.services.directory.recipient("bob@corp.example")
    bob.spam_filter = False
    runtime.services.directory.upsert_recipients([bob])
    gateway = Gateway(runtime)
    gateway.start()
    try:
        with smtplib.SMTP("127.0.0.1", runtime.settings.smtp_port, timeout=30) as smtp:
            smtp.ehlo()
            smtp.mail("s@sender.example")
            for address, code in (("vertrieb@corp.example", 250), ("Robert@corp-sales.example", 250),
                                  ("info@corp.example", 250), ("all@corp.example", 250),
                                  ("nobody@corp.example", 550), ("alice@corp.onmicrosoft.com", 550)):
                assert smtp.rcpt(address)[0] == code, address
    finally:
        gateway.stop()
    # The alias stands for its recipient: its settings (the spam filter flag) are the owner's.
    assert runtime.services.directory.recipient("robert@corp-sales.example").spam_filter is False


def test_directory_show_answers_for_an_alias(tmp_path, m365_setup, capsys) -> None:
    common, _ = m365_setup
    with responses.RequestsMock() as rsps:
        play(rsps, "m365-full.json")
        main([*common, "directory", "sync"])
    capsys.readouterr()
    assert main([*common, "directory", "show", "Vertrieb@corp.example"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["address"], shown["kind"], shown["source"]) == ("sales@corp.example", "group", "m365")
    assert main([*common, "directory", "show", "nobody@corp.example"]) == 1
    assert "not registered" in capsys.readouterr().out
