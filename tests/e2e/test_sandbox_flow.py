"""The sandbox's asynchronous flow (issue 16, item 3): a file without a verdict inline is
isolated as `analysing`; the poll job (mailmoat.sandbox_verdicts) decides it later. Real
SQLite store, blobs, Maildir and portal; the sandbox is a scripted class here, and once the
real CapeSandbox against the loopback CAPE server of tests/adapters/test_cape.py."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mailmoat.context import Verdict
from mailmoat.isolation import IsolatedFile
from mailmoat.runtime import Runtime
from mailmoat.sandbox_verdicts import sandbox_verdicts
from mailmoat.scan.sandbox import SandboxConfig
from mailmoat_web.app import create_app
from tests.adapters.test_cape import (  # noqa: F401  (the loopback CAPE server fixture)
    CREATE,
    REPORT,
    VIEW,
    Answer,
    FakeCape,
    cape,
    sandbox,
)
from tests.e2e.test_portal import Portal, article, token_for
from tests.unit.isolation.builders import analyse, make_runtime, message

TOOL = b"MZ" + b"\x90" * 200  # an executable: risky by the static checks, so detonated
NAME = "請求<書>.exe"  # the page and the notice must escape it
ANALYSING_JA = "サンドボックスで解析中です。結果が出るまでダウンロードできません。"


@dataclass
class ScriptedSandbox:
    """Answers None (still running) until a test sets the ticket's verdict; counts polls."""

    verdicts: dict[str, str] = field(default_factory=dict)
    polls: int = 0
    fail: bool = False

    def submit(self, data: bytes, filename: str | None) -> str:
        return "task-7"

    def poll(self, ticket: str) -> str | None:
        self.polls += 1
        if self.fail:
            raise ConnectionError("sandbox down")
        return self.verdicts.get(ticket)


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return make_runtime(tmp_path / "var")


def with_sandbox(runtime: Runtime, box: object, *, release: bool = False) -> None:
    runtime.services.sandbox = box  # type: ignore[assignment]
    runtime.services.sandbox_config = SandboxConfig(enabled=True, timeout_seconds=300,
                                                    poll_seconds=0.01, wait_inline_seconds=0)
    runtime.services.config.tenant("example.test").sandbox_release_clean = release


def with_cape_running_then_reported(runtime: Runtime, cape: FakeCape, report: str) -> None:  # noqa: F811
    """The loopback CAPE as the runtime's sandbox, answering `report` (a fixture of
    tests/adapters/test_cape.py) once the task is reported. The scan stage's one inline poll sees
    the task running, so the file is kept as analysing; the job's poll then sees it reported."""
    cape.answer(CREATE, Answer(fixture="create.json"))
    cape.answer(VIEW, Answer(fixture="view-running.json"), Answer(fixture="view-reported.json"))
    cape.answer(REPORT, Answer(fixture=report))
    with_sandbox(runtime, sandbox(cape))


def receive(runtime: Runtime) -> Portal:
    ctx = analyse(runtime, message((NAME, TOOL, "application/octet-stream")))
    return Portal(runtime, TestClient(create_app(runtime)), ctx, token_for(ctx))


def record(p: Portal) -> IsolatedFile:
    (found,) = p.runtime.services.isolation.files(p.ctx.id)
    return found


def maildir(runtime: Runtime, address: str) -> list[EmailMessage]:
    local, _, domain = address.partition("@")
    box = runtime.settings.data_dir / "maildir" / domain / local / "new"
    return [message_from_bytes(f.read_bytes(), policy=policy.default)  # type: ignore[misc]
            for f in sorted(box.glob("*"))] if box.exists() else []


def text_of(msg: EmailMessage) -> str:
    body = msg.get_body(("plain",))
    assert body is not None
    return str(body.get_content())  # type: ignore[attr-defined]


def test_a_file_without_a_verdict_is_isolated_as_analysing_with_no_download(runtime: Runtime) -> None:
    box = ScriptedSandbox()
    with_sandbox(runtime, box)
    p = receive(runtime)
    report = p.ctx.attachments[0]
    assert report.verdict == Verdict.ANALYSING and "SANDBOX_ANALYSING" in report.symbols
    assert any(f.symbol == "SANDBOX_ANALYSING" and f.detail == "task-7" for f in p.ctx.findings)
    assert report.to_dict()["verdict"] == "analysing"  # the JSON report: a new value, no rename
    # never left in the delivered message
    delivered = message_from_bytes(p.ctx.outputs["alice@example.test"], policy=policy.default)
    assert TOOL not in b"".join(part.get_payload(decode=True) or b""  # type: ignore[misc]
                               for part in delivered.walk() if not part.is_multipart())
    kept = record(p)
    assert kept.sandbox_ticket == "task-7" and kept.sandbox_submitted_at is not None
    block = article(p.page(), "請求&lt;書&gt;.exe")
    assert ANALYSING_JA in block and "<form" not in block
    assert p.post(kept.path, "download", kind="original").status_code == 403  # type: ignore[attr-defined]
    assert p.runtime.services.isolation.downloads(p.ctx.id) == []
    en = p.page(headers={"Accept-Language": "en"})
    assert "Being analysed in a sandbox; no download until the verdict." in en

    run = sandbox_verdicts(runtime.services)  # still running: nothing changes
    assert run.waiting == 1 and record(p) == kept


def test_clean_becomes_downloadable_and_a_second_run_changes_nothing(runtime: Runtime) -> None:
    box = ScriptedSandbox()
    with_sandbox(runtime, box)
    p = receive(runtime)
    box.verdicts["task-7"] = "clean"
    assert sandbox_verdicts(runtime.services).clean == 1
    decided = record(p)
    assert decided.verdict == Verdict.SAFE and decided.sandbox_ticket is None
    assert "SANDBOX_CLEAN" in decided.symbols and "SANDBOX_ANALYSING" not in decided.symbols
    response = p.post(decided.path, "download", kind="original")
    assert response.status_code == 200 and response.content == TOOL  # type: ignore[attr-defined]
    assert maildir(runtime, "alice@example.test") == []  # release is off by default
    polls = box.polls
    again = sandbox_verdicts(runtime.services)
    assert (again.clean, again.waiting, box.polls, record(p)) == (0, 0, polls, decided)


def test_release_option_mails_the_clean_file_under_its_name(runtime: Runtime) -> None:
    box = ScriptedSandbox()
    with_sandbox(runtime, box, release=True)
    p = receive(runtime)
    box.verdicts["task-7"] = "clean"
    run = sandbox_verdicts(runtime.services)
    assert run.mailed == 2 and not run.mail_failed
    for rcpt in ("alice@example.test", "bob@example.test"):
        (mail,) = maildir(runtime, rcpt)
        assert "解析の結果、安全と判定されたため添付ファイルをお届けします" in text_of(mail)
        (attached,) = list(mail.iter_attachments())  # type: ignore[attr-defined]
        assert attached.get_filename() == NAME and attached.get_content() == TOOL
        assert mail["Auto-Submitted"] == "auto-generated"
    sandbox_verdicts(runtime.services)
    assert len(maildir(runtime, "alice@example.test")) == 1  # idempotent: mailed once
    assert record(p).verdict == Verdict.SAFE


def test_danger_deletes_the_file_and_tells_the_recipients(runtime: Runtime) -> None:
    box = ScriptedSandbox()
    with_sandbox(runtime, box)
    p = receive(runtime)
    key = record(p).blob_key
    assert key is not None and runtime.services.blobs.exists(key)
    box.verdicts["task-7"] = "malicious"
    assert sandbox_verdicts(runtime.services).danger == 1
    decided = record(p)
    assert decided.verdict == Verdict.DANGER and decided.blob_key is None
    assert decided.action == "delete" and "SANDBOX_MALICIOUS" in decided.symbols
    assert not runtime.services.blobs.exists(key)
    (notice,) = maildir(runtime, "bob@example.test")
    text = text_of(notice)
    assert "危険と判定されたため削除されました" in text and NAME in text
    html_part = notice.get_body(("html",))
    assert html_part is not None
    html = str(html_part.get_content())  # type: ignore[attr-defined]
    assert "請求&lt;書&gt;.exe" in html and NAME not in html
    # a deleted file has no bytes to offer: not found, as for any danger file
    assert p.post(decided.path, "download", kind="original").status_code in (403, 404)  # type: ignore[attr-defined]
    assert "badge-danger" in article(p.page(), "請求&lt;書&gt;.exe")
    sandbox_verdicts(runtime.services)
    assert len(maildir(runtime, "bob@example.test")) == 1


def test_no_verdict_in_time_stays_isolated_with_sandbox_timeout(runtime: Runtime) -> None:
    box = ScriptedSandbox()
    with_sandbox(runtime, box)
    p = receive(runtime)
    box.fail = True  # an error before the timeout: asked again next run, logged
    early = sandbox_verdicts(runtime.services)
    assert early.errors == 1 and record(p).sandbox_ticket == "task-7"
    box.fail = False
    later = runtime.services.clock.now() + timedelta(seconds=301)
    assert sandbox_verdicts(runtime.services, later).timed_out == 1
    decided = record(p)
    assert decided.verdict == Verdict.ANALYSING and "SANDBOX_TIMEOUT" in decided.symbols
    assert decided.sandbox_ticket is None and decided.blob_key is not None
    block = article(p.page(), "請求&lt;書&gt;.exe")
    assert "時間内に終わりませんでした" in block and "<form" not in block
    assert p.post(decided.path, "download", kind="original").status_code == 403  # type: ignore[attr-defined]
    polls = box.polls
    sandbox_verdicts(runtime.services, later + timedelta(hours=1))
    assert box.polls == polls and record(p) == decided  # no more polls


def test_through_cape_on_loopback_a_malicious_report_deletes_the_file(
        runtime: Runtime, cape: FakeCape) -> None:  # noqa: F811
    with_cape_running_then_reported(runtime, cape, "report-malicious.json")
    p = receive(runtime)
    assert record(p).verdict == Verdict.ANALYSING and record(p).sandbox_ticket == "42"
    assert cape.hits(VIEW) == 1 and cape.hits(REPORT) == 0
    run = sandbox_verdicts(runtime.services)
    assert run.danger == 1 and cape.hits(REPORT) == 1
    assert record(p).blob_key is None and "SANDBOX_MALICIOUS" in record(p).symbols
    assert len(maildir(runtime, "alice@example.test")) == 1
    assert not re.search(r"Token|cape-secret", str(record(p).symbols))


def test_the_cli_polls_cape_from_the_settings(runtime: Runtime, cape: FakeCape,  # noqa: F811
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from mailmoat.local.cli import main
    from tests.adapters.test_cape import TOKEN
    from tests.unit.isolation.builders import DEMO

    with_cape_running_then_reported(runtime, cape, "report-clean.json")
    p = receive(runtime)
    for name, value in {"MAILMOAT_MODE": "test", "MAILMOAT_CAPE_URL": cape.url,
                        "MAILMOAT_CAPE_TOKEN": TOKEN, "MAILMOAT_CONFIG": str(DEMO)}.items():
        monkeypatch.setenv(name, value)
    code = main(["--data-dir", str(runtime.settings.data_dir), "sandbox-poll", "--json"])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["clean"] == 1 and TOKEN not in out
    assert record(p).verdict == Verdict.SAFE
    assert cape.requests[-1][2]["Authorization"] == f"Token {TOKEN}"


# --- per-tenant thresholds (sandbox_danger_score / sandbox_suspicious_score) -------------------

def with_tenants(runtime: Runtime) -> None:
    """Besides example.test (the process-wide 7 / 4): a strict tenant (danger above 4) and a
    lenient one (suspicious from 6, danger above 9)."""
    from mailmoat.config import TenantConfig

    runtime.services.config.tenants.extend([
        TenantConfig(name="strict", domains=["strict.test"], sandbox_danger_score=4.0,
                     sandbox_suspicious_score=2.0),
        TenantConfig(name="lenient", domains=["lenient.test"], sandbox_danger_score=9.0,
                     sandbox_suspicious_score=6.0)])


def receive_for(runtime: Runtime, tenant: str) -> Portal:
    from mailmoat.context import Envelope
    from tests.unit.isolation.builders import OFFLINE, RECIPIENTS

    ctx = runtime.analyse(message((NAME, TOOL, "application/octet-stream")),
                          Envelope(mail_from="sender@sender.example", rcpt_to=RECIPIENTS),
                          tenant=tenant, stages=OFFLINE, message_id=f"sandbox-{tenant}")
    return Portal(runtime, TestClient(create_app(runtime)), ctx, token_for(ctx))


def test_one_cape_score_is_judged_by_each_tenants_threshold_inline(
        runtime: Runtime, cape: FakeCape) -> None:  # noqa: F811
    cape.answer(CREATE, Answer(fixture="create.json"))
    cape.answer(VIEW, Answer(fixture="view-reported.json"))
    cape.answer(REPORT, Answer(fixture="report-score-5.json"))  # malscore 5.0
    with_sandbox(runtime, sandbox(cape))
    with_tenants(runtime)
    verdicts = {}
    for tenant in ("strict", "example.test", "lenient"):
        report = receive_for(runtime, tenant).ctx.attachments[0]
        verdicts[tenant] = (report.verdict, {s for s in report.symbols if s.startswith("SANDBOX_")})
    assert verdicts == {"strict": (Verdict.DANGER, {"SANDBOX_MALICIOUS"}),
                        "example.test": (Verdict.RISKY, {"SANDBOX_SUSPICIOUS"}),
                        "lenient": (Verdict.RISKY, set())}  # clean to CAPE; risky statically
    assert cape.hits(CREATE) == 1  # one CapeSandbox, one task, every tenant


def test_one_cape_score_is_judged_by_each_tenants_threshold_later(
        runtime: Runtime, cape: FakeCape) -> None:  # noqa: F811
    cape.answer(CREATE, Answer(fixture="create.json"))
    cape.answer(VIEW, Answer(fixture="view-running.json"))
    cape.answer(REPORT, Answer(fixture="report-score-5.json"))  # malscore 5.0
    with_sandbox(runtime, sandbox(cape))
    with_tenants(runtime)
    portals = {t: receive_for(runtime, t) for t in ("strict", "example.test", "lenient")}
    assert {record(p).verdict for p in portals.values()} == {Verdict.ANALYSING}
    cape.answer(VIEW, Answer(fixture="view-reported.json"))
    run = sandbox_verdicts(runtime.services)
    assert (run.danger, run.clean) == (2, 1)
    decided = {t: (record(p).verdict, {s for s in record(p).symbols if s.startswith("SANDBOX_")})
               for t, p in portals.items()}
    assert decided == {"strict": (Verdict.DANGER, {"SANDBOX_MALICIOUS"}),
                       "example.test": (Verdict.DANGER, {"SANDBOX_SUSPICIOUS"}),
                       "lenient": (Verdict.SAFE, {"SANDBOX_CLEAN"})}
    assert record(portals["lenient"]).blob_key is not None
    assert record(portals["strict"]).blob_key is None


def test_tenant_sandbox_scores_are_validated() -> None:
    from pydantic import ValidationError

    from mailmoat.config import TenantConfig

    with pytest.raises(ValidationError, match="sandbox_suspicious_score must not be above"):
        TenantConfig(name="t", domains=[], sandbox_danger_score=3, sandbox_suspicious_score=5)
    with pytest.raises(ValidationError):
        TenantConfig(name="t", domains=[], sandbox_danger_score=11)
    # Only the suspicious score set, above the process-wide danger score: capped at it.
    config = SandboxConfig(danger_score=7.0, suspicious_score=4.0)
    only = config.for_tenant(TenantConfig(name="t", domains=[], sandbox_suspicious_score=8))
    assert (only.danger_score, only.suspicious_score) == (7.0, 7.0)
    assert config.for_tenant(TenantConfig(name="t", domains=[])) is config


# --- a file inside an attached message (the message leaves whole; its verdict follows) -------

def forwarded(*extra: tuple[str, bytes, str]) -> bytes:
    """A mail with an attached .eml holding the executable (and any extra files)."""
    inner = message((NAME, TOOL, "application/octet-stream"), *extra, subject="inner")
    outer = EmailMessage()
    outer["From"] = "Sender <sender@sender.example>"
    outer["To"] = "alice@example.test, bob@example.test"
    outer["Subject"] = "転送"
    outer.set_content("転送します。\n")
    outer.add_attachment(message_from_bytes(inner, policy=policy.default),  # type: ignore[arg-type]
                         filename="fwd.eml")
    return outer.as_bytes()


def receive_forwarded(runtime: Runtime, *extra: tuple[str, bytes, str]) -> Portal:
    ctx = analyse(runtime, forwarded(*extra))
    return Portal(runtime, TestClient(create_app(runtime)), ctx, token_for(ctx))


def outer(p: Portal) -> IsolatedFile:
    (found,) = [f for f in p.runtime.services.isolation.files(p.ctx.id) if "." not in f.path]
    return found


def test_an_attached_message_is_analysing_until_its_file_is_clean(runtime: Runtime) -> None:
    box = ScriptedSandbox()
    with_sandbox(runtime, box)
    p = receive_forwarded(runtime)
    kept = outer(p)
    assert kept.filename == "fwd.eml" and kept.verdict == Verdict.ANALYSING
    assert [m.get("sandbox_ticket") for m in kept.members] == ["task-7"]
    block = article(p.page(), "fwd.eml")
    assert ANALYSING_JA in block and "<form" not in block and "請求&lt;書&gt;.exe" in block
    assert p.post(kept.path, "download", kind="original").status_code == 403  # type: ignore[attr-defined]
    assert sandbox_verdicts(runtime.services).waiting == 2 and outer(p) == kept

    box.verdicts["task-7"] = "clean"
    sandbox_verdicts(runtime.services)
    decided = outer(p)
    assert decided.verdict == Verdict.SAFE and decided.sandbox_ticket is None
    assert "SANDBOX_CLEAN" in decided.symbols and "SANDBOX_ANALYSING" not in decided.symbols
    assert decided.members[0]["verdict"] == "safe" and "sandbox_ticket" not in decided.members[0]
    response = p.post(decided.path, "download", kind="original")
    assert response.status_code == 200 and b"Subject: inner" in response.content  # type: ignore[attr-defined]
    polls = box.polls
    again = sandbox_verdicts(runtime.services)
    assert (again.clean, again.waiting, box.polls, outer(p)) == (0, 0, polls, decided)


def test_a_clean_file_leaves_the_attached_message_as_its_other_files_make_it(
        runtime: Runtime) -> None:
    box = ScriptedSandbox()
    with_sandbox(runtime, box)
    p = receive_forwarded(runtime, ("readme.txt", b"hello\n", "text/plain"))
    box.verdicts["task-7"] = "clean"
    sandbox_verdicts(runtime.services)
    decided = outer(p)
    assert len(decided.members) == 2
    expected = Verdict.worst([Verdict(m["verdict"]) for m in decided.members])
    assert decided.verdict == expected and decided.sandbox_ticket is None


def test_a_malicious_file_deletes_the_attached_message_and_tells_the_recipients(
        runtime: Runtime) -> None:
    box = ScriptedSandbox()
    with_sandbox(runtime, box)
    p = receive_forwarded(runtime)
    key = outer(p).blob_key
    assert key is not None and runtime.services.blobs.exists(key)
    box.verdicts["task-7"] = "malicious"
    sandbox_verdicts(runtime.services)
    decided = outer(p)
    assert decided.verdict == Verdict.DANGER and decided.blob_key is None
    assert decided.action == "delete" and "SANDBOX_MALICIOUS" in decided.symbols
    assert not runtime.services.blobs.exists(key)
    (notice,) = maildir(runtime, "alice@example.test")  # one notice: the message's, naming both
    text = text_of(notice)
    assert "危険と判定されたため削除されました" in text and f"fwd.eml › {NAME}" in text
    html_part = notice.get_body(("html",))
    assert html_part is not None and NAME not in str(html_part.get_content())  # type: ignore[attr-defined]
    assert p.post(decided.path, "download", kind="original").status_code in (403, 404)  # type: ignore[attr-defined]
    assert "badge-danger" in article(p.page(), "fwd.eml")
    again = sandbox_verdicts(runtime.services)
    assert (again.danger, outer(p)) == (0, decided)
    assert len(maildir(runtime, "alice@example.test")) == 1


def test_an_attached_message_times_out_with_its_file(runtime: Runtime) -> None:
    box = ScriptedSandbox()
    with_sandbox(runtime, box)
    p = receive_forwarded(runtime)
    later = runtime.services.clock.now() + timedelta(seconds=301)
    sandbox_verdicts(runtime.services, later)
    decided = outer(p)
    assert decided.verdict == Verdict.ANALYSING and "SANDBOX_TIMEOUT" in decided.symbols
    assert decided.sandbox_ticket is None and decided.blob_key is not None
    assert p.post(decided.path, "download", kind="original").status_code == 403  # type: ignore[attr-defined]
    sandbox_verdicts(runtime.services, later + timedelta(hours=1))
    assert outer(p) == decided


def test_through_cape_on_loopback_a_malicious_file_deletes_its_attached_message(
        runtime: Runtime, cape: FakeCape) -> None:  # noqa: F811
    with_cape_running_then_reported(runtime, cape, "report-malicious.json")
    p = receive_forwarded(runtime)
    assert outer(p).verdict == Verdict.ANALYSING and outer(p).sandbox_ticket == "42"
    sandbox_verdicts(runtime.services)
    assert outer(p).blob_key is None and "SANDBOX_MALICIOUS" in outer(p).symbols
    assert len(maildir(runtime, "bob@example.test")) == 1
