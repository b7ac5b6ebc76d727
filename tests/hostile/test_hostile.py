"""Hostile input through the whole pipeline (DESIGN §7): every case gives a report with findings,
within the bounds in settings; no exception escapes a stage, nothing hangs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mailmoat.bootstrap import bootstrap
from mailmoat.context import Envelope
from mailmoat.runtime import Runtime
from mailmoat.scan.engine import CACHE
from mailmoat.settings import Settings
from tests.conftest import DEMO_CONFIG
from tests.hostile import corpus

# Whole-pipeline wall time that proves "no hang" (the scan stage alone is bounded by
# limits.scan_seconds; parsing and rewriting have no clock of their own).
NO_HANG_SECONDS = 60.0
SLOW = {"100k-parts", "5mb-folded-header", "400k-parts"}
# Real bugs these tests found in code this suite does not own (fixes in the issue-7 report).
# strict: once fixed, the case passes, XPASS fails the run, and the marker must go.
KNOWN_BUGS: dict[str, str] = {}  # name → reason, for a case that shows a bug not fixed yet


def _marks(name: str) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.slow] if name in SLOW else []
    if name in KNOWN_BUGS:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name]))
    # Fixed, each of these takes a few seconds; everything else well under a minute.
    marks.append(pytest.mark.timeout(30 if name in ("5mb-folded-header", "400k-parts") else 180))
    return marks


@pytest.fixture
def hostile_runtime(tmp_path: Path) -> Runtime:
    zone = tmp_path / "zone.json"
    zone.write_text("{}")
    CACHE.clear()
    return bootstrap(Settings(mode="test", config=DEMO_CONFIG, dns_zone=zone), data_dir=tmp_path / "var")


def run_case(runtime: Runtime, raw: bytes) -> tuple[dict, float, object]:
    t0 = time.perf_counter()
    ctx = runtime.analyse(raw, Envelope(rcpt_to=["alice@example.test"]))
    elapsed = time.perf_counter() - t0
    report = ctx.to_report()
    return report, elapsed, ctx


@pytest.mark.parametrize("case", [pytest.param(name, marks=_marks(name)) for name in corpus.CASES])
def test_hostile_message_gets_a_bounded_report_with_findings(case: str, hostile_runtime: Runtime) -> None:
    builder, wanted = corpus.CASES[case]
    raw = builder()
    report, elapsed, ctx = run_case(hostile_runtime, raw)
    limits = hostile_runtime.settings.limits
    failed = [f for f in report["findings"] if f["symbol"] == "STAGE_FAILED"]
    assert not failed, f"an exception escaped a stage: {failed}"
    assert [t.stage for t in ctx.trace if t.outcome == "error"] == []
    if ctx.beyond_limits:  # too big to parse safely: quarantined untouched, never delivered
        assert report["disposition"] == "quarantine"
    assert report["disposition"] in {"deliver", "quarantine", "drop", "held"}
    assert report["findings"], "hostile input must leave a trace in the findings"
    symbols = {f["symbol"] for f in report["findings"]}
    if wanted:
        assert wanted & symbols, f"expected one of {wanted}, got {sorted(symbols)}"
    assert elapsed < NO_HANG_SECONDS
    assert len(ctx.parsed.parts) <= limits.max_parts
    assert max((p.depth for p in ctx.parsed.parts), default=0) <= limits.max_depth
    for attachment in report["attachments"]:
        assert len(attachment["filename"] or "") <= 255
        assert len(attachment["members"]) <= limits.archive_max_members
    # The report must survive the message log (JSON, UTF-8, no lone surrogates) like a real one.
    encoded = json.dumps(report, ensure_ascii=False).encode("utf-8")
    assert json.loads(encoded) == json.loads(json.dumps(report))
    log = hostile_runtime.services.log
    message_id = hostile_runtime.accept(raw, Envelope(rcpt_to=["alice@example.test"]))
    log.update(message_id, state="quarantined", report=report, subject=ctx.subject)
    assert log.get(message_id).report["findings"] == report["findings"]


def test_cp932_zip_member_names_keep_their_0x5c_trail_bytes(hostile_runtime: Runtime) -> None:
    report, _, _ = run_case(hostile_runtime, corpus.named(corpus.cp932_zip(), "sjis.zip", b"application/zip"))
    names = {m["name"] for a in report["attachments"] for m in a["members"]}
    assert f"{corpus.CP932_5C}.exe" in names
    assert "ソフト\\表計算.xlsm" in names or "ソフト/表計算.xlsm" in names
    assert "請求書.pdf.exe" in names


def test_cp932_raw_mime_filename_is_decoded_whole(hostile_runtime: Runtime) -> None:
    report, _, _ = run_case(hostile_runtime, corpus.cp932_raw_filename())
    (attachment,) = report["attachments"]
    assert attachment["filename"] == "表ソ十.exe"
    assert "DANGEROUS_EXTENSION" in attachment["symbols"]


def test_traversal_filename_keeps_only_the_last_component(hostile_runtime: Runtime) -> None:
    report, _, _ = run_case(hostile_runtime, corpus.traversal_filename())
    (attachment,) = report["attachments"]
    assert attachment["filename"] == "evil.exe"


def test_rtl_override_in_a_filename_is_flagged(hostile_runtime: Runtime) -> None:
    report, _, _ = run_case(hostile_runtime, corpus.rtl_filename())
    (attachment,) = report["attachments"]
    assert attachment["verdict"] in {"risky", "danger"}
    assert "DANGEROUS_EXTENSION" in attachment["symbols"] or any("RTL" in s or "BIDI" in s
                                                                 for s in attachment["symbols"])
