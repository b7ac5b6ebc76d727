"""The runner: ordered named stages over one context, per-stage timing, trace, fail closed."""

from __future__ import annotations

import json

import pytest

from mailmoat import pipeline
from mailmoat.context import Disposition, MessageContext
from mailmoat.pipeline import STAGE_NAMES, Services, run_pipeline

REPORT_KEYS = {"message_id", "disposition", "auth", "route", "spam", "attachments", "actions",
               "portal_url"}
AUTH_KEYS = {"spf", "dkim", "dmarc", "dmarc_policy", "arc", "warn", "defang"}
ATTACHMENT_KEYS = {"path", "filename", "declared_type", "detected_type", "size", "sha256",
                   "verdict", "symbols", "action", "members"}


def test_stages_run_in_design_order_with_timings(analyse) -> None:
    ctx = analyse("plain.eml", stages=STAGE_NAMES[:-1])
    assert [t.stage for t in ctx.trace] == ["prepare", "authenticate", "scan", "isolate", "rewrite"]
    assert all(t.outcome == "ok" and t.duration_ms >= 0 for t in ctx.trace)


def test_report_has_the_contract_shape(analyse) -> None:
    report = json.loads(json.dumps(analyse("japanese-iso2022jp.eml").to_report()))
    assert REPORT_KEYS <= set(report)
    assert AUTH_KEYS <= set(report["auth"])
    assert set(report["spam"]) >= {"verdict", "action"}
    assert report["disposition"] in {"deliver", "quarantine", "drop", "held"}
    (attachment,) = report["attachments"]
    assert ATTACHMENT_KEYS <= set(attachment)
    assert attachment["filename"] == "見積書①.pdf"
    assert report["message_id"] == "<jp-1@sender.example.jp>"
    assert report["subject"] == "①㈱見積書の件"


class Exploding:
    name = "explode"

    def run(self, ctx: MessageContext, services: Services) -> None:
        raise RuntimeError("boom")


def test_a_failing_stage_holds_the_message_and_skips_the_rest(runtime, monkeypatch) -> None:
    monkeypatch.setitem(pipeline._REGISTRY, "explode", Exploding())
    ctx = MessageContext(id="t1", raw=b"From: a@b\r\n\r\nhi\r\n")
    run_pipeline(ctx, runtime.services, ("authenticate", "explode", "rewrite", "deliver"))
    assert ctx.disposition == Disposition.HELD
    outcomes = {t.stage: t.outcome for t in ctx.trace}
    assert outcomes == {"prepare": "ok", "authenticate": "ok", "explode": "error",
                        "rewrite": "skipped", "deliver": "skipped"}
    assert any(f.symbol == "STAGE_FAILED" and "boom" in f.detail for f in ctx.findings)


@pytest.mark.parametrize("fixture", ["malformed-no-headers.eml", "malformed-bare-lf.eml",
                                     "malformed-bad-base64.eml"])
def test_malformed_input_gets_a_report_not_an_exception(analyse, fixture: str) -> None:
    ctx = analyse(fixture)
    assert ctx.disposition in (Disposition.DELIVER, Disposition.HELD, Disposition.QUARANTINE)
    assert ctx.findings, "malformed input must leave a finding"


def test_unwalkable_structure_is_quarantined_not_delivered(analyse) -> None:
    from tests.unit.test_message import nested

    ctx = analyse(nested(500))
    assert ctx.disposition == Disposition.QUARANTINE
    assert ctx.has("UNSCANNABLE")


@pytest.mark.parametrize(("patterns", "sender", "disposition"), [
    (["@spam.example"], "x@spam.example", Disposition.QUARANTINE),
    (["x@spam.example"], "x@spam.example", Disposition.QUARANTINE),
    (["@spam.example"], "x@ok.example", Disposition.DELIVER),
])
def test_blocked_senders(runtime, patterns, sender, disposition) -> None:
    tenant = runtime.services.config.tenants[0]
    tenant.blocked_senders = patterns
    ctx = runtime.analyse(b"From: a@b\r\n\r\nhi\r\n", envelope=_env(sender),
                          stages=("isolate",))
    assert ctx.disposition == disposition


def _env(sender: str):
    from mailmoat.context import Envelope

    return Envelope(mail_from=sender, rcpt_to=["alice@example.test"])


@pytest.mark.parametrize(("rule", "matches"), [
    ({"sender": ["@sender.example"]}, True),
    ({"sender": ["@other.example"]}, False),
    ({"countries": ["jp"]}, True),
    ({"countries": ["US"]}, False),
    ({"min_size": 10_000_000}, False),
    ({"max_size": 10_000_000, "sender": ["x@sender.example"]}, True),
])
def test_custom_html_to_text_rule(runtime, rule, matches) -> None:
    from mailmoat.config import RuleConfig
    from mailmoat.context import Envelope, Hop

    tenant = runtime.services.config.tenants[0]
    tenant.rules = [RuleConfig(name="r", action="html-to-text", **rule)]
    ctx = MessageContext(id="t3", raw=b"From: a@b\r\n\r\nhi\r\n",
                         envelope=Envelope(mail_from="x@sender.example"),
                         route=[Hop(ip="203.0.113.5", country="JP")])
    run_pipeline(ctx, runtime.services, ("isolate",))
    assert ("html-to-text" in ctx.actions) is matches


@pytest.mark.parametrize(("rule", "verdict", "symbols", "action"), [
    ({"action": "isolate", "sender": ["@sender.example"]}, "safe", [], "isolate"),
    ({"action": "isolate", "sender": ["@other.example"]}, "safe", [], "keep"),
    ({"action": "delete", "min_size": 1000}, "safe", [], "delete"),
    ({"action": "delete", "min_size": 100_000}, "safe", [], "keep"),
    ({"action": "keep"}, "risky", ["MACRO"], "keep"),
    ({"action": "keep"}, "danger", ["VIRUS"], "delete"),          # never lets danger through
    ({"action": "keep"}, "risky", ["SCAN_FAILED"], "isolate"),    # never keeps an unchecked file
])
def test_custom_attachment_rules(runtime, rule, verdict, symbols, action) -> None:
    from mailmoat.config import RuleConfig
    from mailmoat.context import AttachmentReport, Envelope, Verdict

    tenant = runtime.services.config.tenants[0]
    tenant.rules = [RuleConfig(name="r", **rule)]
    ctx = MessageContext(id="t4", raw=b"From: a@b\r\n\r\nhi\r\n",
                         envelope=Envelope(mail_from="x@sender.example"))
    ctx.attachments.append(AttachmentReport(path="2", filename="a.bin", declared_type="x/y",
                                            size=5000, sha256="0", verdict=Verdict(verdict),
                                            symbols=list(symbols)))
    from mailmoat.policy import decide

    decide(ctx, tenant)
    assert ctx.attachments[0].action == action


def test_analysis_writes_what_it_isolates_without_fsync(analyse, runtime, monkeypatch) -> None:
    """`mailmoat process` promises no durability: its isolated files skip fsync, yet are there."""
    import os

    analyse("plain.eml")  # the first message makes the ARC key, durably, once per data directory
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    ctx = analyse("attached-message.eml")
    isolated = [k for k in runtime.services.blobs.keys() if ctx.id in k]
    assert isolated and synced == []
    assert getattr(runtime.services.blobs, "durable", True)  # the root's own store still syncs
