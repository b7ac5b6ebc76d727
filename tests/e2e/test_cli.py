"""The `mailmoat` command as other tools call it: process (DESIGN §9), users, log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from email import message_from_bytes, policy

import pytest

from tests.conftest import DEMO_CONFIG, FIXTURES, ROOT

ZONE = str(FIXTURES / "empty-zone.json")


def mailmoat(*args: str, data_dir=None, input: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MAILMOAT_CONFIG": str(DEMO_CONFIG)}
    if data_dir is not None:
        env["MAILMOAT_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "mailmoat.local.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, input=input, timeout=120)


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.eml")))
def test_process_prints_the_full_report_shape(fixture) -> None:
    result = mailmoat("process", str(FIXTURES / fixture), "--dns-zone", ZONE, "--json")
    assert result.returncode == 0, result.stderr.decode()
    (line,) = result.stdout.decode().splitlines()
    report = json.loads(line)
    assert {"message_id", "disposition", "auth", "route", "spam", "attachments", "actions",
            "portal_url", "file"} <= set(report)
    assert {"spf", "dkim", "dmarc", "dmarc_policy", "arc", "warn", "defang"} <= set(report["auth"])
    for attachment in report["attachments"]:
        assert {"path", "filename", "declared_type", "detected_type", "size", "sha256", "verdict",
                "symbols", "action", "members"} <= set(attachment)


def test_process_several_files_prints_json_lines_in_order_and_writes_out_dir(tmp_path) -> None:
    files = [FIXTURES / "plain.eml", FIXTURES / "sjis-raw-filename.eml"]
    out = tmp_path / "out"
    result = mailmoat("process", *map(str, files), "--dns-zone", ZONE, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr.decode()
    reports = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["file"] for r in reports] == [str(f) for f in files]
    assert reports[1]["attachments"][0]["filename"] == "請求書.xlsx"
    for f in files:
        written = (out / f.name).read_bytes()
        assert message_from_bytes(written, policy=policy.default)["Message-ID"]


def test_process_a_directory(tmp_path) -> None:
    result = mailmoat("process", str(FIXTURES), "--dns-zone", ZONE, "--json")
    lines = result.stdout.decode().splitlines()
    expected = sorted(str(p) for p in FIXTURES.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts)
    assert [json.loads(line)["file"] for line in lines] == expected and result.returncode == 0


def test_process_envelope_flags_are_used(tmp_path) -> None:
    result = mailmoat("process", str(FIXTURES / "plain.eml"), "--dns-zone", ZONE, "--json",
                      "--client-ip", "198.51.100.7", "--helo", "h.example", "--mail-from",
                      "x@y.example", "--rcpt", "bob@example.test")
    envelope = json.loads(result.stdout)["envelope"]
    assert envelope == {"client_ip": "198.51.100.7", "helo": "h.example", "tls": None,
                        "mail_from": "x@y.example", "rcpt_to": ["bob@example.test"]}


def test_process_exit_codes() -> None:
    assert mailmoat("process", "/nonexistent.eml", "--json").returncode == 1
    assert mailmoat("process").returncode == 2  # usage


CSV_UTF8 = ("address,name,organisation,department,title,memo,spam_filter\n"
            "carol@example.test,高橋 花子,Example KK,営業部,課長,,on\n"
            "dave@example.test,Dave,Example KK,,,,off\n").encode("utf-8-sig")
CSV_CP932 = ("eve@example.test,髙橋 一郎,株式会社サンプル,総務,部長,メモ①,有効\r\n").encode("cp932")


def test_users_import_utf8_and_cp932_then_export(tmp_path) -> None:
    src = tmp_path / "u.csv"
    src.write_bytes(CSV_UTF8)
    assert mailmoat("users", "import", str(src), data_dir=tmp_path).returncode == 0
    src.write_bytes(CSV_CP932)
    result = mailmoat("users", "import", str(src), data_dir=tmp_path)
    assert result.returncode == 0 and b"1 added" in result.stdout
    exported = mailmoat("users", "export", data_dir=tmp_path).stdout.decode()
    assert "carol@example.test,高橋 花子,Example KK,営業部,課長,,on" in exported
    assert "dave@example.test,Dave,Example KK,,,,off" in exported
    assert "eve@example.test,髙橋 一郎,株式会社サンプル,総務,部長,メモ①,on" in exported
    assert "alice@example.test" in exported  # demo users from the config stay
    cp932 = mailmoat("users", "export", "--encoding", "cp932", data_dir=tmp_path).stdout
    assert "髙橋 一郎".encode("cp932") in cp932


def test_users_import_reports_bad_rows_by_line_and_imports_nothing(tmp_path) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("frank@example.test,Frank\n"
                   "not-an-address,X\n"
                   "gina@elsewhere.example,Gina\n"
                   "frank@example.test,again\n"
                   "hank@example.test,H,,,,,maybe\n", encoding="utf-8")
    result = mailmoat("users", "import", str(src), data_dir=tmp_path)
    assert result.returncode == 1
    err = result.stderr.decode()
    for line in ("line 2:", "line 3:", "line 4:", "line 5:"):
        assert line in err
    assert "line 1:" not in err
    assert "frank@example.test" not in mailmoat("users", "export", data_dir=tmp_path).stdout.decode()


def test_users_import_dry_run_and_replace(tmp_path) -> None:
    src = tmp_path / "u.csv"
    src.write_text("alice@example.test,Alice Renamed\nzoe@example.test,Zoe\n", encoding="utf-8")
    dry = mailmoat("users", "import", "--dry-run", "--replace", str(src), data_dir=tmp_path)
    assert dry.returncode == 0
    assert b"1 added, 1 changed, 0 unchanged, 1 removed" in dry.stdout
    assert "zoe@" not in mailmoat("users", "export", data_dir=tmp_path).stdout.decode()
    mailmoat("users", "import", "--replace", str(src), data_dir=tmp_path)
    exported = mailmoat("users", "export", data_dir=tmp_path).stdout.decode()
    assert "zoe@example.test" in exported and "bob@example.test" not in exported


def test_log_json_lists_processed_messages(tmp_path) -> None:
    from mailmoat.bootstrap import bootstrap
    from mailmoat.context import Envelope
    from tests.conftest import make_settings

    runtime = bootstrap(make_settings(tmp_path))
    message_id = runtime.accept((FIXTURES / "plain.eml").read_bytes(),
                                Envelope(mail_from="s@x.example", rcpt_to=["bob@example.test"]))
    runtime.process_stored(message_id)
    rows = json.loads(mailmoat("log", "--json", data_dir=tmp_path / "var").stdout)
    (row,) = rows
    assert row["id"] == message_id and row["state"] == "delivered"
    assert row["disposition"] == "deliver" and row["rcpt_to"] == ["bob@example.test"]
    assert {"authenticate", "scan", "isolate", "rewrite", "deliver"} <= set(row["timings_ms"])
    text = mailmoat("log", data_dir=tmp_path / "var").stdout.decode()
    assert message_id in text and "delivered" in text


def test_redrive_resend_releases_an_uncertain_delivery(tmp_path) -> None:
    from mailmoat.bootstrap import bootstrap
    from mailmoat.context import Envelope
    from tests.conftest import make_settings

    runtime = bootstrap(make_settings(tmp_path))
    message_id = runtime.accept((FIXTURES / "plain.eml").read_bytes(),
                                Envelope(mail_from="s@x.example", rcpt_to=["bob@example.test"]))
    runtime.services.log.claim_delivery(message_id, "bob@example.test")  # an interrupted attempt
    runtime.services.log.update(message_id, state="held", error="uncertain")
    plain = mailmoat("redrive", message_id, data_dir=tmp_path / "var")
    assert b"delivered" in plain.stdout  # Maildir delivery is idempotent: safe to repeat
    assert runtime.services.log.claim_is_stale(message_id, "bob@example.test") is False
