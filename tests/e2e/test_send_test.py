"""`mailmoat send-test` end to end: the battery over real SMTP into the local gateway on loopback,
then the report read back from the gateway's SQLite message log."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailmoat.bootstrap import bootstrap
from mailmoat.local.cli import main
from mailmoat.local.server import Gateway
from mailmoat.sendtest.battery import TEST_NAMES
from tests.adapters.test_clamd import clamd  # noqa: F401  (fixture: a real clamd with EICAR signatures)
from tests.conftest import DEMO_CONFIG, free_port, make_settings

# What the zone says decides SPF offline: loopback may send for sender.example, nobody for example.com.
ZONE = {"sender.example": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        "example.com": {"TXT": ["v=spf1 -all"]}}


@pytest.fixture
def gateway(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    overrides: dict[str, Any] = dict(getattr(request, "param", {}))
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps(ZONE))
    isolation = overrides.pop("isolation", None)
    config = DEMO_CONFIG
    if isolation:
        config = tmp_path / "tenant.toml"
        text = DEMO_CONFIG.read_text(encoding="utf-8")
        assert 'isolation = "risky"' in text
        config.write_text(text.replace('isolation = "risky"', f'isolation = "{isolation}"'),
                          encoding="utf-8")
    settings = make_settings(tmp_path, smtp_port=free_port(), dns_zone=zone, config=config, **overrides)
    gw = Gateway(bootstrap(settings))
    gw.start()
    yield gw
    gw.stop()


def _cli(gw: Gateway, *args: str) -> list[str]:
    settings = gw.runtime.settings
    return ["--data-dir", str(settings.data_dir), "--config", str(settings.config), "send-test", *args]


def send_and_report(gw: Gateway, capsys: pytest.CaptureFixture[str], *send_args: str,
                    report_args: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
    port = str(gw.runtime.settings.smtp_port)
    assert main(_cli(gw, "--port", port, "--send-only", *send_args)) == 0
    assert gw.worker.drain(timeout=60)
    capsys.readouterr()
    code = main(_cli(gw, "--report", "--json", *report_args))
    return code, json.loads(capsys.readouterr().out)


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["test"]: row for row in report["rows"]}


def test_every_row_matches_on_the_local_gateway(gateway: Gateway,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, report = send_and_report(gateway, capsys)
    assert code == 0, json.dumps(report, indent=2, ensure_ascii=False)
    assert list(rows(report)) == list(TEST_NAMES)
    assert {r["status"] for r in report["rows"]} == {"OK"}
    assert {r["arrived"] for r in report["rows"]} == {"yes"}
    by_name = rows(report)
    # without clamd the EICAR zip is kept out by its member's extension, and the report says why
    assert "DANGEROUS_EXTENSION" in by_name["eicar-zip"]["actual"]
    assert "AV_DISABLED" in by_name["eicar-zip"]["note"]
    assert "spf=fail" in by_name["spf-fail"]["actual"]
    # the messages really went through the gateway: the log holds them under our Message-IDs
    log_ids = {r["log_id"] for r in report["rows"]}
    assert all(gateway.runtime.services.log.get(i) for i in log_ids)


def test_the_default_command_sends_waits_and_prints_the_table(gateway: Gateway,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    # What the README and `make run` tell an admin to type (plus the test gateway's port).
    code = main(_cli(gateway, "--to", "alice@example.test", "--host", "127.0.0.1",
                     "--port", str(gateway.runtime.settings.smtp_port), "--only", "clean-text,spf-fail"))
    out = capsys.readouterr().out
    assert code == 0, out
    header = next(line for line in out.splitlines() if line.startswith("TEST"))
    assert header.split() == ["TEST", "ARRIVED", "EXPECTED", "ACTUAL", "RESULT"]
    assert "2 tests: 2 OK, 0 MISMATCH, 0 MISSING" in out
    table = [line for line in out.splitlines() if line.startswith(("clean-text", "spf-fail"))]
    assert len(table) == 2 and all(line.rstrip().endswith("OK") for line in table)


@pytest.mark.parametrize("gateway", [{"isolation": "all"}], indirect=True)
def test_a_broken_expectation_is_a_mismatch_on_exactly_that_row(
        gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    # Zero-trust isolation also isolates the clean spreadsheet, which the battery expects kept.
    code, report = send_and_report(gateway, capsys)
    assert code == 1
    mismatched = [r["test"] for r in report["rows"] if r["status"] != "OK"]
    assert mismatched == ["clean-xlsx"]
    row = rows(report)["clean-xlsx"]
    assert "safe/keep" in row["expected"] and "isolate" in row["actual"]
    assert any("isolate" in why for why in row["why"])
    assert "isolation = 'all'" in report["policy_notes"]


@pytest.mark.parametrize("gateway", [{"hold_processing": True}], indirect=True)
def test_unprocessed_messages_are_missing_and_exit_2(gateway: Gateway,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    port = str(gateway.runtime.settings.smtp_port)
    assert main(_cli(gateway, "--port", port, "--only", "clean-text,aes-zip", "--wait", "1")) == 2
    out = capsys.readouterr().out
    assert "2 tests: 0 OK, 0 MISMATCH, 2 MISSING" in out


def test_a_refused_recipient_is_reported_not_waited_for(gateway: Gateway,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    port = str(gateway.runtime.settings.smtp_port)
    started = time.monotonic()
    code = main(_cli(gateway, "--server", f"127.0.0.1:{port}", "--to", "nobody@example.test",
                     "--only", "clean-text,aes-zip", "--json", "--wait", "30"))
    assert time.monotonic() - started < 20  # nothing was accepted, so nothing is waited for
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    replies = [m["reply"] for m in result["run"]["messages"]]
    assert len(replies) == 2 and all("RCPT TO refused: 550 5.1.1" in r for r in replies)


def test_nothing_listening_exits_1_without_a_report(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--data-dir", str(tmp_path / "var"), "send-test", "--server", f"127.0.0.1:{free_port()}",
                 "--only", "clean-text"])
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED  clean-text" in captured.out and "ConnectionRefusedError" in captured.out
    assert "is the gateway running" in captured.err
    assert "TEST" not in captured.out  # no table of refusals pretending to be a report


@pytest.mark.clamd
def test_with_clamd_the_eicar_zip_is_a_virus_and_deleted(tmp_path: Path, clamd: str,  # noqa: F811
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps(ZONE))
    settings = make_settings(tmp_path, smtp_port=free_port(), dns_zone=zone, clamd_socket=clamd)
    gw = Gateway(bootstrap(settings))
    gw.start()
    try:
        code, report = send_and_report(gw, capsys, "--only", "eicar-zip,clean-xlsx")
    finally:
        gw.stop()
    assert code == 0, json.dumps(report, indent=2)
    row = rows(report)["eicar-zip"]
    assert row["status"] == "OK"
    assert "eicar.zip: danger/delete (" in row["actual"] and "VIRUS" in row["actual"]
    assert row["note"] == "antivirus on"


# --- STARTTLS: a loopback SMTP sink with a self-signed certificate ----------------------------

def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


def test_starttls_verifies_the_certificate_unless_insecure(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    port = free_port()
    server = Controller(Sink(), hostname="127.0.0.1", port=port, tls_context=_self_signed(tmp_path),
                        require_starttls=True)
    server.start()
    try:
        base = ["--data-dir", str(tmp_path / "var"), "send-test", "--server", f"127.0.0.1:{port}",
                "--only", "clean-text", "--send-only", "--starttls"]
        assert main(base) == 1  # the self-signed certificate is refused
        assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().out
        assert main([*base, "--insecure"]) == 0
        assert "sent    clean-text" in capsys.readouterr().out
    finally:
        server.stop()


# --- AWS: the report reads the DynamoDB message log through bootstrap() (moto) ----------------

def test_report_reads_the_dynamodb_message_log_on_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import boto3
    from moto import mock_aws

    from mailmoat.adapters.aws_dynamodb_log import DynamoMessageLog
    from mailmoat.context import Envelope
    from mailmoat.ports import MessageRecord
    from mailmoat.sendtest.battery import build_battery
    from mailmoat.sendtest.runs import RunRecord, SentMessage, save_run
    from tests.e2e.test_aws_pipeline import REGION, TABLES, template_resources

    # What the pipeline stages would have written: the real reports of the battery's messages.
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps(ZONE))
    local = bootstrap(make_settings(tmp_path / "local", runtime="local", dns_zone=zone))
    run_id = "20260101T000000Z-a0b1c2"
    battery = build_battery(run_id=run_id, to="alice@example.test")
    reports = {}
    for message in battery:
        ctx = local.analyse(message.raw, Envelope(client_ip="127.0.0.1", mail_from=message.mail_from,
                                                  rcpt_to=["alice@example.test"]))
        reports[message.name] = {**ctx.to_report(),
                                 "deliveries": {"alice@example.test": "delivered: ses 0100-abc"}}
    data_dir = tmp_path / "var"
    run = RunRecord(run_id=run_id, sent_at="2026-01-01T00:00:00+00:00", server="inbound-smtp:25",
                    starttls=True, to="alice@example.test", mail_from="tester@sender.example",
                    spf_fail_from="tester@example.com",
                    messages=[SentMessage(m.name, m.message_id, m.subject, m.mail_from, True, "250 Ok")
                              for m in battery])
    save_run(data_dir, run)

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION, "MAILMOAT_RUNTIME": "aws", "MAILMOAT_MODE": "test",
                        "MAILMOAT_MESSAGE_LOG_TABLE": "messages", "MAILMOAT_DIRECTORY_TABLE": "directory",
                        "MAILMOAT_RAW_BUCKET": "mailmoat-raw",
                        "MAILMOAT_DNS_ZONE": str(zone)}.items():
        monkeypatch.setenv(name, value)
    resources = template_resources()
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name=REGION)
        for logical in ("MessageLogTable", "DirectoryTable"):
            props = resources[logical]["Properties"]
            kwargs = {k: props[k] for k in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")
                      if k in props}
            ddb.create_table(TableName=TABLES[logical], BillingMode=props["BillingMode"], **kwargs)
        log = DynamoMessageLog("messages")
        for i, message in enumerate(battery):
            if message.name == "aes-zip":
                continue  # still on its way: reported missing
            log.accept(MessageRecord(id=f"ses-{i}", received_at=dt.datetime.now(dt.UTC),
                                     state="accepted", message_id=message.message_id,
                                     rcpt_to=["alice@example.test"]))
            log.update(f"ses-{i}", state="delivered", subject=message.subject,
                       report=reports[message.name])
        code = main(["--data-dir", str(data_dir), "--config", str(DEMO_CONFIG),
                     "send-test", "--report", "--json"])
        report = json.loads(capsys.readouterr().out)
        assert code == 2, report
        assert {r["test"]: r["status"] for r in report["rows"]} == {
            n: "MISSING" if n == "aes-zip" else "OK" for n in TEST_NAMES}

        log.accept(MessageRecord(id="ses-late", received_at=dt.datetime.now(dt.UTC), state="accepted",
                                 message_id=battery[4].message_id, rcpt_to=["alice@example.test"]))
        log.update("ses-late", state="delivered", subject=battery[4].subject, report=reports["aes-zip"])
        assert main(["--data-dir", str(data_dir), "--config", str(DEMO_CONFIG),
                     "send-test", "--report", "--run", run_id]) == 0
        n = len(TEST_NAMES)
        assert f"{n} tests: {n} OK, 0 MISMATCH, 0 MISSING" in capsys.readouterr().out
