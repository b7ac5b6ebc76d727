"""send-test: the battery's files are what they claim to be, and each message, run through the real
pipeline, gets exactly the outcome the report expects of it."""

from __future__ import annotations

import email
import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import magic
import pytest

from mailmoat.adapters.sqlite import SqliteDatabase, SqliteMessageLog
from mailmoat.bootstrap import bootstrap
from mailmoat.config import load_config
from mailmoat.context import Envelope
from mailmoat.ports import MessageRecord
from mailmoat.sendtest import battery
from mailmoat.sendtest.report import Observed, build_report, build_row, expectation_for
from mailmoat.sendtest.runs import RunNotFound, RunRecord, SentMessage, load_run, save_run
from mailmoat.sendtest.sender import parse_server
from tests.conftest import make_settings

RUN = "20260101T000000Z-abc123"
# sender.example lets loopback send; example.com publishes -all as it does in real DNS.
ZONE = {"sender.example": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        "example.com": {"TXT": ["v=spf1 -all"]}}


def test_eicar_is_the_standard_test_file() -> None:
    # The published MD5 of the 68-byte EICAR file: assembled right, or no antivirus would see it.
    assert hashlib.md5(battery.eicar()).hexdigest() == "44d88612fea8a8f36de82e1278abb02f"


def test_the_executable_is_an_executable_to_libmagic() -> None:
    data = battery.windows_executable()
    assert data[:2] == b"MZ"
    assert "PE32 executable" in magic.from_buffer(data)
    assert magic.from_buffer(data, mime=True) in {"application/vnd.microsoft.portable-executable",
                                                  "application/x-dosexec"}


def test_minimal_xlsx_is_a_workbook() -> None:
    data = battery.minimal_xlsx([("a", 1)])
    assert magic.from_buffer(data, mime=True) == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        assert package.testzip() is None
        assert b"<t>a</t>" in package.read("xl/worksheets/sheet1.xml")


def test_velvetsweatshop_workbook_opens_with_the_builtin_password() -> None:
    import msoffcrypto

    office = msoffcrypto.OfficeFile(io.BytesIO(battery.encrypted_xlsx(battery.VELVETSWEATSHOP)))
    assert office.is_encrypted()
    office.load_key(password=battery.VELVETSWEATSHOP, verify_password=True)
    plain = io.BytesIO()
    office.decrypt(plain)
    assert zipfile.ZipFile(plain).read("xl/workbook.xml").startswith(b"<?xml")


def test_aes_zip_needs_its_password() -> None:
    import pyzipper

    data = battery.aes_zip({"a.txt": b"secret"}, "pw-123")
    with pyzipper.AESZipFile(io.BytesIO(data)) as archive:
        info = archive.infolist()[0]
        assert info.flag_bits & 0x1  # encrypted
        with pytest.raises(RuntimeError):
            archive.read("a.txt")
        archive.setpassword(b"pw-123")
        assert archive.read("a.txt") == b"secret"


def test_every_message_is_labelled_and_7bit() -> None:
    messages = battery.build_battery(run_id=RUN, to="alice@example.test")
    assert [m.name for m in messages] == list(battery.TEST_NAMES)
    assert len({m.message_id for m in messages}) == len(messages)
    for m in messages:
        assert m.raw.isascii()
        assert all(len(line) <= 998 for line in m.raw.split(b"\r\n"))
        parsed = email.message_from_bytes(m.raw, policy=policy.default)
        assert parsed["Message-ID"] == m.message_id == f"<{m.name}.{RUN}@mailmoat.invalid>"
        assert parsed[battery.TEST_HEADER] == f"{RUN}/{m.name}"
        assert str(parsed["Subject"]) == m.subject
        assert f"{RUN}/{m.name}" in m.subject
    spf = next(m for m in messages if m.name == "spf-fail")
    assert spf.mail_from == battery.DEFAULT_SPF_FAIL_FROM


def test_japanese_message_is_iso_2022_jp_on_the_wire() -> None:
    (jp,) = battery.build_battery(run_id=RUN, to="alice@example.test", only=["iso-2022-jp"])
    assert b"Subject: =?iso-2022-jp?b?" in jp.raw
    assert b"\x1b$B" in jp.raw  # JIS escape in a 7bit body, as Japanese mailers send it
    parsed = email.message_from_bytes(jp.raw, policy=policy.default)
    assert parsed.get_content_charset() == "iso-2022-jp"
    assert "日本語のテストメールです" in parsed.get_content()
    assert jp.subject.endswith(battery.ISO_2022_JP_TITLE)


def test_only_and_run_id_are_checked() -> None:
    picked = battery.build_battery(run_id=RUN, to="a@b.test", only=["aes-zip", "clean-text"])
    assert [m.name for m in picked] == ["clean-text", "aes-zip"]
    with pytest.raises(ValueError, match="unknown"):
        battery.build_battery(run_id=RUN, to="a@b.test", only=["nope"])
    with pytest.raises(ValueError, match="run id"):
        battery.build_battery(run_id="x>\r\nBcc: y", to="a@b.test")
    assert battery.valid_run_id(battery.new_run_id(datetime(2026, 1, 2, tzinfo=UTC)))


@pytest.mark.parametrize(("value", "parsed"), [
    ("mx.example.net:2525", ("mx.example.net", 2525)),
    ("mx.example.net", ("mx.example.net", None)),
    ("[2001:db8::1]:25", ("2001:db8::1", 25)),
    ("127.0.0.1:587", ("127.0.0.1", 587)),
])
def test_parse_server(value: str, parsed: tuple[str, int | None]) -> None:
    assert parse_server(value) == parsed


@pytest.mark.parametrize("value", [":25", "host:99999", "host:x"])
def test_parse_server_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_server(value)


# --- the expectations are what the pipeline really does --------------------------------------

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("sendtest")
    zone = tmp / "zone.json"
    zone.write_text(json.dumps(ZONE))
    settings = make_settings(tmp, dns_zone=zone)
    return bootstrap(settings, config=load_config(settings.config))


def _record(report: dict[str, object], state: str = "delivered") -> MessageRecord:
    return MessageRecord(id="x", received_at=datetime.now(UTC), state=state,
                         subject=str(report.get("subject") or ""), report=report)


@pytest.mark.parametrize("name", battery.TEST_NAMES)
def test_pipeline_outcome_matches_the_expectation(pipeline, name: str) -> None:  # type: ignore[no-untyped-def]
    # A follow-up is judged after the mail it follows (one build: one zip password).
    sent_first = ["ppap-zip"] if name == "ppap-password" else []
    *before, message = battery.build_battery(run_id=RUN, to="alice@example.test",
                                             only=[*sent_first, name])
    for m in [*before, message]:
        ctx = pipeline.analyse(m.raw, Envelope(client_ip="127.0.0.1", helo="tester.local",
                                               mail_from=m.mail_from,
                                               rcpt_to=["alice@example.test"]))
    report = ctx.to_report()
    report["deliveries"] = {"alice@example.test": "delivered: maildir"}
    seen = Observed.from_record(_record(report), "alice@example.test")
    sent = SentMessage(name, message.message_id, message.subject, message.mail_from, True, "250 ok")
    expectation = expectation_for(sent, seen)
    assert expectation.differences(seen) == []
    # and the expectation says something: a wrong verdict would be noticed
    if expectation.file is not None:
        assert seen.files


def test_eicar_expectation_follows_the_antivirus_finding() -> None:
    sent = SentMessage("eicar-zip", "<m>", "s", "f@x", True, "250")
    base = dict(state="delivered", delivery="delivered", spf="none", dkim="none", dmarc="none",
                banner=False, defang=False, files=(), subject="s")
    without = Observed(**base, findings=frozenset({"AV_DISABLED"}))  # type: ignore[arg-type]
    with_av = Observed(**base, findings=frozenset())  # type: ignore[arg-type]
    assert expectation_for(sent, without).file[1].action == "isolate"  # type: ignore[index]
    assert expectation_for(sent, with_av).file[1].symbol == "VIRUS"  # type: ignore[index]


# --- report logic on the real SQLite message log ----------------------------------------------

def _run(*names: str, accepted: bool = True) -> RunRecord:
    run = RunRecord(run_id=RUN, sent_at="2026-01-01T00:00:00+00:00", server="127.0.0.1:2525",
                    starttls=False, to="alice@example.test", mail_from="t@sender.example",
                    spf_fail_from="t@example.com")
    run.messages = [SentMessage(n, battery.message_id_for(n, RUN), f"subject {n}", "t@sender.example",
                                accepted, "250 ok" if accepted else "RCPT TO refused: 550 5.1.1")
                    for n in names]
    return run


def test_missing_and_pending_messages_exit_2_after_the_wait(tmp_path: Path) -> None:
    log = SqliteMessageLog(SqliteDatabase(tmp_path / "log.sqlite3"))
    run = _run("clean-text", "html-links")
    log.accept(MessageRecord(id="r1", received_at=datetime.now(UTC), state="processing",
                             message_id=run.messages[0].message_id))
    slept: list[float] = []
    report = build_report(run, log, wait_seconds=0.05, poll_seconds=0.01, sleep=slept.append)
    assert slept  # it polled before giving up
    assert [(r.arrived, r.status) for r in report.rows] == [("pending", "MISSING"), ("no", "MISSING")]
    assert report.exit_code == 2


def test_a_processed_message_is_compared(tmp_path: Path) -> None:
    log = SqliteMessageLog(SqliteDatabase(tmp_path / "log.sqlite3"))
    run = _run("clean-text")
    report = {"auth": {"spf": "none", "dkim": "none", "dmarc": "none"}, "actions": ["banner"],
              "attachments": [], "findings": [], "deliveries": {"alice@example.test": "delivered: x"}}
    log.accept(MessageRecord(id="r1", received_at=datetime.now(UTC), state="accepted",
                             message_id=run.messages[0].message_id))
    log.update("r1", state="delivered", report=report)
    result = build_report(run, log)
    (row,) = result.rows
    assert (row.arrived, row.status) == ("yes", "MISMATCH")
    assert "banner" in row.actual and any("banner" in why for why in row.why)
    assert result.exit_code == 1


def test_a_refused_message_is_a_mismatch_not_missing() -> None:
    row = build_row(_run("aes-zip", accepted=False).messages[0], None, "alice@example.test")
    assert (row.arrived, row.status) == ("refused", "MISMATCH")
    assert "550 5.1.1" in row.actual


def test_runs_are_saved_and_the_latest_is_found(tmp_path: Path) -> None:
    with pytest.raises(RunNotFound):
        load_run(tmp_path)
    first = _run("clean-text")
    second = _run("aes-zip")
    second.run_id = "20260102T000000Z-def456"
    save_run(tmp_path, first)
    save_run(tmp_path, second)
    assert load_run(tmp_path).run_id == second.run_id
    assert load_run(tmp_path, RUN).messages[0].name == "clean-text"
    with pytest.raises(RunNotFound):
        load_run(tmp_path, "../../etc/passwd")


def test_a_run_file_naming_an_unknown_test_gives_a_row_not_a_crash() -> None:
    sent = SentMessage("from-the-future", "<m@x>", "s", "f@x", True, "250")
    row = build_row(sent, None, "alice@example.test")
    assert row.status == "MISMATCH" and row.why == ["not a test this version knows"]


@pytest.mark.parametrize(("address", "plain"), [
    ("alice@example.test", True), ("postmaster@localhost", True),
    ("alice", False), ("@example.test", False), ("a@b.test\r\nRCPT TO:<x@y>", False),
    ("a b@example.test", False), ("<a@example.test>", False), ("a@example.test,b@example.test", False),
])
def test_addresses_are_checked_before_anything_is_sent(address: str, plain: bool) -> None:
    from mailmoat.sendtest.cli import _plain_address

    assert _plain_address(address) is plain


def test_server_replies_lose_control_characters() -> None:
    from mailmoat.sendtest.sender import _reply

    assert _reply(250, b"2.0.0 Ok\x1b[2J\r\n queued") == "250 2.0.0 Ok [2J queued"


def test_the_table_stacks_on_a_narrow_terminal() -> None:
    from mailmoat.sendtest.report import Report, print_report

    run = _run("aes-zip", "spf-fail")
    report = Report(run, [build_row(m, None, run.to) for m in run.messages])
    wide, narrow = io.StringIO(), io.StringIO()
    print_report(report, wide)
    print_report(report, narrow, columns=80)
    assert wide.getvalue().splitlines()[1].split() == ["TEST", "ARRIVED", "EXPECTED", "ACTUAL", "RESULT"]
    lines = narrow.getvalue().splitlines()
    assert lines[1].split() == ["TEST", "ARRIVED", "RESULT"]
    assert lines[2].split() == ["aes-zip", "no", "MISSING"]
    assert lines[3].strip().startswith("expected: delivered, no banner, quotation.zip: encrypted/isolate")
    assert lines[4].strip() == "actual:   not in the message log"
    assert all(len(line) <= 80 for line in lines[1:3])


def test_a_follow_up_that_opened_nothing_is_a_mismatch_with_the_likely_cause() -> None:
    sent = SentMessage("ppap-password", "<m>", "s", "f@x", True, "250")
    seen = Observed(state="delivered", delivery="delivered", spf="none", dkim="none", dmarc="none",
                    banner=False, defang=False, files=(), subject="s", findings=frozenset())
    why = expectation_for(sent, seen).differences(seen)
    assert len(why) == 1 and "no PPAP_PASSWORD_USED" in why[0] and "authenticated sender" in why[0]
    opened = Observed(state="delivered", delivery="delivered", spf="pass", dkim="none", dmarc="none",
                      banner=False, defang=False, files=(), subject="s",
                      findings=frozenset({"PPAP_PASSWORD_USED"}))
    assert expectation_for(sent, opened).differences(opened) == []
