"""The ARC seal survives SES sending: SES replaces Message-ID and Date and adds its own trace and
signature headers (SES developer guide, header fields), none of which the AMS may cover."""

from __future__ import annotations

from collections.abc import Callable

import dkim
import pytest

from mailmoat.aws.forwarder import forwarded
from mailmoat.rewrite.headers import RawMessage
from tests.unit.rewrite.conftest import RunRewrite
from tests.unit.rewrite.helpers import leaf, message

RELAY = "relay@gw.example.test"
SES_MESSAGE_ID = "Message-ID: <0100018c2f5e7a1b-1d2e3f40-aaaa-bbbb-cccc-1234567890ab-000000@email.amazonses.com>"
SES_DATE = "Date: Wed, 2 Dec 2026 05:50:01 +0000"
SES_ADDED = [
    "Return-Path: <0100018c2f5e7a1b-1d2e@amazonses.com>",
    "DKIM-Signature: v=1; a=rsa-sha256; q=dns/txt; c=relaxed/simple; s=224i4yxa5dv7c2xz3womw6peuasteono;"
    " d=amazonses.com; t=1796190601; h=From:To:Subject:Date:Message-ID; bh=AAAA; b=BBBB",
    "Feedback-ID: 1.eu-west-1.abcdefghijklmnopqrstuvwxyz0123456789ABC=:AmazonSES",
    "X-SES-Outgoing: 2026.12.02-54.240.4.1",
]


def ses_sent(data: bytes, *, message_id: bool = True, date: bool = True,
             added: bool = True) -> bytes:
    """The message as the mailbox receives it from SES: Message-ID and Date replaced by SES's
    own, SES's Return-Path, DKIM-Signature, Feedback-ID and X-SES-Outgoing on top."""
    msg = RawMessage.split(data)
    replaced = {b"message-id"} if message_id else set()
    if date:
        replaced.add(b"date")
    msg.remove(lambda name, _value: name in replaced)
    msg.prepend([*(SES_ADDED if added else []), *([SES_MESSAGE_ID] if message_id else []),
                 *([SES_DATE] if date else [])])
    return msg.to_bytes()


@pytest.mark.parametrize(("changes", "message_id", "date", "added"), [
    ("Message-ID replaced", True, False, False),
    ("Date replaced", False, True, False),
    ("Return-Path, DKIM-Signature, Feedback-ID, X-SES-Outgoing added", False, False, True),
    ("everything SES does", True, True, True),
])
def test_seal_of_a_forwarded_message_verifies_after_ses(
        run_rewrite: RunRewrite, dnsfunc: Callable[..., bytes], changes: str,
        message_id: bool, date: bool, added: bool) -> None:
    raw = message(leaf("text/plain", "請求書をお送りします https://example.com\n", "iso-2022-jp",
                       cte="7bit"))
    # ses mode: forwarder rewriting happens before the seal (stages/rewrite.py).
    _, result = run_rewrite(raw, actions=("banner", "defang"), output=forwarded(raw, RELAY))
    delivered = ses_sent(result.data, message_id=message_id, date=date, added=added)
    assert delivered != result.data

    cv, results, reason = dkim.arc_verify(delivered, dnsfunc=dnsfunc)

    assert cv == dkim.CV_Pass, f"{changes}: {reason}"
    assert results[0]["as-domain"] == b"gw.example.test"


def test_the_seal_still_covers_what_it_vouches_for(run_rewrite: RunRewrite,
                                                    dnsfunc: Callable[..., bytes]) -> None:
    _, result = run_rewrite(message(leaf("text/plain", "hi\n")))
    signed = dkim.ARC(result.data)
    ams = next(v for k, v in signed.headers if k.lower() == b"arc-message-signature")
    h = {f.strip().lower() for f in dkim.util.parse_tag_value(ams)[b"h"].split(b":")}
    assert {b"from", b"to", b"subject", b"mime-version", b"content-type"} <= h
    assert not h & {b"message-id", b"date", b"return-path", b"dkim-signature", b"feedback-id"}
    # A changed Subject still breaks it.
    cv, _, _ = dkim.arc_verify(ses_sent(result.data).replace(b"Subject: test", b"Subject: TEST"),
                               dnsfunc=dnsfunc)
    assert cv == dkim.CV_Fail
