"""SES's X-SES-Spam-Verdict as a verdict source: trusted where SES wrote it (the AWS runtime)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailmoat.context import Envelope
from tests.unit.spam.helpers import CLEAN_IP, spam_runtime

SES_HEADERS = ("Received: from mail.sender.example (mail.sender.example [81.2.69.161]) by "
               "inbound-smtp.us-east-1.amazonaws.com with SMTP id abc for alice@example.test; "
               "Fri, 27 Nov 2026 10:00:01 +0000 (UTC)\r\n"
               "X-SES-Spam-Verdict: {verdict}\r\nX-SES-Virus-Verdict: PASS\r\n")


def raw(verdict: str) -> bytes:
    return (SES_HEADERS.format(verdict=verdict) +
            "From: a@sender.example\r\nTo: alice@example.test\r\nSubject: s\r\n\r\nhi\r\n").encode()


@pytest.mark.parametrize(("header", "trusted", "verdict", "sources"), [
    ("FAIL", True, "spam", ["ses"]),
    ("PASS", True, "ham", []),
    ("GRAY", True, "unknown", []),
    ("PROCESSING_FAILED", True, "unknown", []),
    # Outside AWS anyone could have written the header: not a source unless configured.
    ("FAIL", None, "unknown", []),
])
def test_ses_verdicts(tmp_path: Path, header: str, trusted: bool | None, verdict: str,
                      sources: list[str]) -> None:
    runtime = spam_runtime(tmp_path, dnsbl_ip_zones=[], dnsbl_domain_zones=[],
                           ses_spam_verdict=trusted)
    ctx = runtime.analyse(raw(header), Envelope(client_ip=CLEAN_IP, rcpt_to=["alice@example.test"]),
                          stages=("authenticate",))
    assert (ctx.spam.verdict, ctx.spam.sources) == (verdict, sources)
    assert ("ses" in ctx.spam.checks) == bool(trusted)
