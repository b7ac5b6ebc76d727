"""Retro-hunt (issue 17 item 2): after a signature or rules change, held and downloaded files
are scanned again; one that is danger now loses its download, and who took it and the tenant's
admins are told, once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from mailmoat.admin.accounts import create_account
from mailmoat.context import Verdict
from mailmoat.isolation import DownloadRecord, IsolatedFile, PortalMessage, blob_key
from mailmoat.local.schedule import Scheduler, check_retrohunt, jobs_for
from mailmoat.ports import AntivirusResult
from mailmoat.retrohunt import retrohunt, scheduled_retrohunt, signature_state
from mailmoat.runtime import Runtime
from mailmoat.scan import yara_rules
from mailmoat.services.downloads import offer_for
from tests.e2e.test_portal import open_portal, path_of
from tests.unit.isolation.builders import aes_zip, make_runtime, message

SCRIPT = b"WScript.Echo('retro-hunt test payload')"
HOSTILE_NAME = "<script>alert(1)</script>\r\nBcc: victim@evil.example\r\n.js"
RULE = """rule retrohunt_test_payload {
  meta:
    verdict = "danger"
  strings:
    $a = "retro-hunt test payload"
  condition:
    $a
}
"""


class FlaggingAntivirus:
    """A test antivirus whose database is updated during the test: from `flag` on, it names
    the payload (as a freshclam update makes clamd name a new signature)."""

    def __init__(self) -> None:
        self.flag: bytes | None = None
        self.database = "ClamAV 1.4.1/27000/Wed Dec  2 09:00:00 2026"
        self.scans = 0

    def scan(self, data: bytes) -> AntivirusResult:
        self.scans += 1
        if self.flag is not None and self.flag in data:
            return AntivirusResult(True, "Js.Trojan.RetroTest")
        return AntivirusResult(False)

    def version(self) -> str:
        return self.database

    def update(self) -> None:
        self.flag = b"retro-hunt test payload"
        self.database = "ClamAV 1.4.1/27001/Thu Dec  3 09:00:00 2026"


class CapturingMailer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        self.sent.append((recipient, data))
        return "250 ok"


@pytest.fixture(autouse=True)
def rules_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    rules = tmp_path / "rules"
    rules.mkdir()
    monkeypatch.setenv("MAILMOAT_YARA_RULES_DIR", str(rules))
    monkeypatch.setenv("MAILMOAT_YARA_RELOAD_CHECK_SECONDS", "0")
    yara_rules.configure(None)
    yield rules
    yara_rules.configure(None)


def _runtime(tmp_path: Path) -> tuple[Runtime, FlaggingAntivirus, CapturingMailer]:
    runtime = make_runtime(tmp_path / "var")
    av = FlaggingAntivirus()
    mailer = CapturingMailer()
    runtime.services.antivirus = av
    runtime.services.own_mail_for = lambda _t: mailer
    runtime.services.outside_mail_for = lambda _t: mailer
    return runtime, av, mailer


def _texts(data: bytes) -> tuple[str, str]:
    msg = message_from_bytes(data, policy=policy.default)
    plain = "".join(str(p.get_content()) for p in msg.walk() if p.get_content_type() == "text/plain")
    html = "".join(str(p.get_content()) for p in msg.walk() if p.get_content_type() == "text/html")
    return plain, html


def test_a_new_rule_turns_a_held_file_danger_and_the_portal_refuses_it(
        tmp_path: Path, rules_dir: Path) -> None:
    runtime, _, mailer = _runtime(tmp_path)
    p = open_portal(runtime, message(("tool.js", SCRIPT, "application/javascript")))
    path = path_of(p, "tool.js")
    assert p.post(path, "download", kind="original", confirm="1").content == SCRIPT  # type: ignore[attr-defined]
    store = runtime.services.isolation
    assert store is not None
    before = next(f for f in store.files(p.ctx.id) if f.path == path)
    assert before.verdict == Verdict.RISKY and before.blob_key is not None

    (rules_dir / "retro.yar").write_text(RULE)  # the operator adds a rule
    report = retrohunt(runtime.services, since=None, now=runtime.services.clock.now())
    assert [t.filename for t in report.turned] == ["tool.js"]
    after = next(f for f in store.files(p.ctx.id) if f.path == path)
    assert after.verdict == Verdict.DANGER and after.blob_key is None
    assert "SANDBOX_YARA_DANGER" in after.symbols and "RETROHUNT" in after.symbols
    with pytest.raises(FileNotFoundError):
        runtime.services.blobs.get(before.blob_key)
    refused = p.post(path, "download", kind="original", confirm="1")
    assert refused.status_code in (403, 404) and SCRIPT not in refused.content  # type: ignore[attr-defined]
    assert offer_for(after).actions == ()  # the page shows no download control either
    assert [to for to, _ in mailer.sent] == ["alice@example.test"]  # the one who took it


def _seed(runtime: Runtime, name: str, recipient: str = "bob@example.test", *,
          data: bytes = SCRIPT, verdict: Verdict = Verdict.RISKY) -> IsolatedFile:
    """A held file (risky: a script) downloaded an hour ago."""
    store = runtime.services.isolation
    assert store is not None
    now = runtime.services.clock.now()
    tenant = runtime.services.config.tenants[0]
    record = IsolatedFile(message_id="m-retro", path="2", filename=name, size=len(data),
                          sha256=hashlib.sha256(data).hexdigest(),
                          declared_type="application/javascript",
                          detected_type="text/plain", verdict=verdict,
                          symbols=["DANGEROUS_EXTENSION"], action="isolate",
                          expires_at=now + timedelta(days=30), blob_key=blob_key("m-retro", "2"))
    runtime.services.blobs.put(record.blob_key or "", data)
    store.save(PortalMessage(id="m-retro", tenant=tenant.name, language=tenant.language,
                             from_header="x@sender.example", subject="s", date=None,
                             mail_from="x@sender.example", route=[], created_at=now,
                             expires_at=now + timedelta(days=30)), [record])
    store.record_download(DownloadRecord(now - timedelta(hours=1), "m-retro", "2", "original",
                                         "192.0.2.7", recipient))
    return record


@pytest.mark.parametrize(("language", "words"), [
    ("ja", ("ダウンロードされたファイルに危険", "ダウンロード日時", "Js.Trojan.RetroTest")),
    ("en", ("found dangerous", "Downloaded at", "Js.Trojan.RetroTest")),
])
def test_the_downloader_and_the_admins_get_one_notice_each(
        tmp_path: Path, language: str, words: tuple[str, ...]) -> None:
    runtime, av, mailer = _runtime(tmp_path)
    tenant = runtime.services.config.tenants[0]
    tenant.language = language  # type: ignore[assignment]
    tenant.admin_notice_addresses = ["security@example.test"]
    accounts = runtime.services.admin.accounts
    assert accounts is not None
    create_account(accounts, email="Admin@Example.test", tenant=tenant.name,
                   password="a long enough passphrase", now=datetime.now(UTC),
                   known_tenants=[tenant.name])
    _seed(runtime, HOSTILE_NAME)
    now = runtime.services.clock.now()
    first = scheduled_retrohunt(runtime.services, now)
    assert first is not None and first.ran and first.turned == []  # nothing new is found yet
    av.update()  # freshclam brings a signature for it

    report = scheduled_retrohunt(runtime.services, now + timedelta(minutes=20))
    assert report is not None and [t.message_id for t in report.turned] == ["m-retro"]
    assert sorted(to for to, _ in mailer.sent) == [
        "admin@example.test", "bob@example.test", "security@example.test"]
    for to, data in mailer.sent:
        assert b"\r\nBcc:" not in data.split(b"\r\n\r\n", 1)[0]  # no header from the name
        msg = message_from_bytes(data, policy=policy.default)
        assert msg["To"] == to and "Bcc" not in msg
        plain, html = _texts(data)
        for word in words:
            assert word in msg["Subject"] + plain
        assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        line = next(line for line in plain.splitlines() if "alert(1)" in line)
        assert "Bcc: victim@evil.example" in line  # one line: CR/LF made inert
        assert "/m/" not in plain and "/m/" not in html  # no portal link, no token
        taken = (now - timedelta(hours=1)).astimezone().strftime("%Y-%m-%d %H:%M")
        assert taken in plain
        if to != "bob@example.test":
            assert "bob@example.test" in plain  # the admins learn who took it

    mailer.sent.clear()
    again = retrohunt(runtime.services, since=None, now=now + timedelta(minutes=40))
    assert again.turned == [] and mailer.sent == []  # a second run notifies nobody again
    _seed(runtime, HOSTILE_NAME)  # the same file held again (a run redone after a crash)
    redone = retrohunt(runtime.services, since=None, now=now + timedelta(minutes=50))
    assert len(redone.turned) == 1 and mailer.sent == []  # who was told is remembered


def test_a_member_a_password_opened_is_in_scope_and_notices_are_remembered(tmp_path: Path) -> None:
    from mailmoat.ppap import OpenedFile, OpenedMember

    runtime, av, _ = _runtime(tmp_path)
    _seed(runtime, "見積書.zip", data=aes_zip({"run.js": SCRIPT}), verdict=Verdict.ENCRYPTED)
    store = runtime.services.isolation
    assert store is not None
    key = "isolated/m-retro/2!0"
    runtime.services.blobs.put(key, SCRIPT)
    now = runtime.services.clock.now()
    store.set_opened(OpenedFile("m-retro", "2", by_message="m-follow", at=now, archive=True,
                                members=[OpenedMember(0, "run.js", len(SCRIPT), Verdict.RISKY, [], key)]),
                     now + timedelta(days=30))
    store.record_download(DownloadRecord(now, "m-retro", "2", "opened:run.js", None,
                                         "carol@example.test"))
    av.update()
    report = retrohunt(runtime.services, since=None, now=now)
    assert [(t.member, t.notified) for t in report.turned] == [("run.js", ["carol@example.test"])]
    opened = store.opened("m-retro", "2")
    assert opened is not None and opened.members[0].verdict == Verdict.DANGER
    assert opened.members[0].blob_key is None
    assert store.get_marker("notified#m-retro#2#run.js#carol@example.test") is not None


def test_an_unchanged_signature_state_runs_nothing(tmp_path: Path) -> None:
    runtime, av, _ = _runtime(tmp_path)
    _seed(runtime, "tool.js")
    [job] = [j for j in jobs_for(runtime) if j.name == "retrohunt"]
    scheduler = Scheduler(runtime, jobs=[job])
    now = runtime.services.clock.now()
    assert scheduler.run_due(now) == ["retrohunt"]
    scanned = av.scans
    assert scanned >= 1
    assert "unchanged" in check_retrohunt(runtime)
    assert scheduler.run_due(now + timedelta(minutes=5)) == []  # not due yet
    assert scheduler.run_due(now + timedelta(minutes=16)) == ["retrohunt"]  # due, state unchanged
    assert av.scans == scanned  # nothing was scanned again
    av.update()
    assert signature_state(runtime.services) != runtime.services.isolation.get_marker("state")  # type: ignore[union-attr]
    assert "1 now danger" in check_retrohunt(runtime)


def test_hostile_or_missing_bytes_are_scan_failed_never_a_crash(tmp_path: Path) -> None:
    runtime, _, mailer = _runtime(tmp_path)
    record = _seed(runtime, "tool.js")
    runtime.services.blobs.delete(record.blob_key or "")  # the bytes are gone
    broken = replace(record, path="3", filename="a.zip", blob_key=blob_key("m-retro", "3"))
    runtime.services.blobs.put(broken.blob_key or "", b"PK\x03\x04" + b"\xff" * 64)  # a broken zip
    store = runtime.services.isolation
    assert store is not None
    message = store.message("m-retro")
    assert message is not None
    store.save(message, [record, broken])
    report = retrohunt(runtime.services, since=None, now=runtime.services.clock.now())
    assert report.scanned == 2 and report.turned == [] and mailer.sent == []
    assert {f["path"] for f in report.failed} >= {"2"}
    assert all(f["symbol"] == "SCAN_FAILED" for f in report.failed)


def test_the_run_is_bounded_and_a_bounded_run_does_not_settle_the_state(tmp_path: Path) -> None:
    runtime, _, _ = _runtime(tmp_path)
    _seed(runtime, "tool.js")
    runtime.services.settings.retrohunt_seconds = 1e-9
    report = scheduled_retrohunt(runtime.services, runtime.services.clock.now())
    assert report is not None and report.skipped == 1 and not report.complete
    assert runtime.services.isolation.get_marker("state") is None  # type: ignore[union-attr]


def test_mailmoat_retrohunt_json_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from mailmoat.local.cli import main
    from tests.unit.isolation.builders import DEMO, ZONE

    runtime, _, _ = _runtime(tmp_path)
    _seed(runtime, "tool.js")
    monkeypatch.setenv("MAILMOAT_MODE", "test")
    monkeypatch.setenv("MAILMOAT_DNS_ZONE", str(ZONE))
    argv = ["--data-dir", str(tmp_path / "var"), "--config", str(DEMO),
            "retrohunt", "--json", "--days", "3"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scanned"] == 1 and out["turned"] == [] and out["complete"] is True
    assert datetime.fromisoformat(out["since"]) < datetime.now(UTC) - timedelta(days=2)
    assert main([*argv[:-3], "--since", "not a time"]) == 2
