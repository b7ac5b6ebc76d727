"""Spam is decided per recipient: filter off and allowed senders untouched, the rest tagged or held."""

from __future__ import annotations

import email
import email.policy
from email.header import Header, decode_header, make_header
from pathlib import Path
from typing import Any

import pytest

from mailmoat.context import Envelope, MessageContext
from mailmoat.rewrite.headers import RawMessage, prefix_subject
from tests.unit.spam.helpers import (
    CLEAN_IP,
    LISTED_IP,
    SENDER_SPF_PASS,
    message,
    spam_runtime,
    tenant_config,
)

STAGES = ("authenticate", "scan", "isolate", "rewrite")


def run(tmp_path: Path, rcpts: list[str], *, raw: bytes | None = None, client_ip: str = LISTED_IP,
        runtime: Any = None, **config: Any) -> MessageContext:
    runtime = runtime or spam_runtime(tmp_path, tenant_config(**config))
    envelope = Envelope(client_ip=client_ip, helo="mx.sender.example",
                        mail_from="promo@sender.example", rcpt_to=rcpts)
    return runtime.analyse(raw or message(), envelope, stages=STAGES)


def copy_of(ctx: MessageContext, rcpt: str) -> email.message.Message:
    data = ctx.outputs.get(rcpt, ctx.output)
    assert data is not None
    return email.message_from_bytes(data, policy=email.policy.default)


def subject(msg: email.message.Message) -> str:
    return str(make_header(decode_header(msg["Subject"])))


def test_quarantine_holds_filtered_recipients_only(tmp_path: Path) -> None:
    ctx = run(tmp_path, ["alice@example.test", "carol@example.test"], action="quarantine")
    assert ctx.spam.recipients == {"alice@example.test": "quarantine",
                                   "carol@example.test": "off"}
    report = ctx.to_report()
    assert report["spam"]["verdict"] == "spam" and report["spam"]["action"] == "quarantine"
    assert report["disposition"] == "deliver"  # carol still gets it
    assert "spam-quarantine" in report["actions"] and "x-spam-flag" not in report["actions"]
    held = copy_of(ctx, "alice@example.test")
    assert held["X-Spam-Flag"] == "YES"  # the held copy says why it was held ...
    assert subject(held) == "Cheap watches"  # ... without a changed subject
    untouched = copy_of(ctx, "carol@example.test")
    assert untouched["X-Spam-Flag"] is None and untouched["X-Spam-Status"] is None
    assert untouched["Authentication-Results"] is not None and untouched["ARC-Seal"] is not None


def test_every_recipient_held_means_the_message_is_quarantined(tmp_path: Path) -> None:
    ctx = run(tmp_path, ["alice@example.test", "bob@example.test"], action="quarantine")
    assert ctx.to_report()["disposition"] == "quarantine"


def test_tag_with_subject_prefix(tmp_path: Path) -> None:
    ctx = run(tmp_path, ["alice@example.test", "bob@example.test", "carol@example.test"],
              action="tag", prefix="[SPAM] ")
    assert ctx.spam.action == "tag"
    for rcpt in ("alice@example.test", "bob@example.test"):
        tagged = copy_of(ctx, rcpt)
        assert tagged["X-Spam-Flag"] == "YES"
        assert subject(tagged) == "[SPAM] Cheap watches"
    untouched = copy_of(ctx, "carol@example.test")
    assert untouched["X-Spam-Flag"] is None
    assert subject(untouched) == "Cheap watches"
    assert "x-spam-flag" in ctx.actions and "subject-prefix" in ctx.actions


def test_recipient_with_filter_off_alone_gets_no_action(tmp_path: Path) -> None:
    ctx = run(tmp_path, ["carol@example.test"], action="quarantine")
    assert ctx.spam.verdict == "spam" and ctx.spam.action == "none"
    assert ctx.to_report()["disposition"] == "deliver"
    assert copy_of(ctx, "carol@example.test")["X-Spam-Flag"] is None


def test_tenant_allowed_sender_skips_the_spam_action(tmp_path: Path) -> None:
    runtime = spam_runtime(tmp_path, tenant_config(action="quarantine", allowed=["@sender.example"]),
                           zone_extra=SENDER_SPF_PASS)
    ctx = run(tmp_path, ["alice@example.test"], runtime=runtime)
    assert ctx.spam.verdict == "spam" and ctx.spam.action == "none"
    assert ctx.spam.recipients == {"alice@example.test": "allowed"}
    assert copy_of(ctx, "alice@example.test")["X-Spam-Flag"] is None


def test_recipients_own_allowed_sender(tmp_path: Path) -> None:
    runtime = spam_runtime(tmp_path, tenant_config(action="quarantine"), zone_extra=SENDER_SPF_PASS)
    store = runtime.services.spam
    assert store is not None
    store.allow_sender("alice@example.test", "promo@sender.example", runtime.services.clock.now())
    ctx = run(tmp_path, ["alice@example.test", "bob@example.test"], runtime=runtime)
    assert ctx.spam.recipients == {"alice@example.test": "allowed", "bob@example.test": "quarantine"}


def test_allowed_sender_that_fails_authentication_is_not_trusted(tmp_path: Path) -> None:
    runtime = spam_runtime(tmp_path, tenant_config(action="quarantine"),
                           zone_extra={"sender.example": {"TXT": ["v=spf1 -all"]}})
    store = runtime.services.spam
    assert store is not None
    store.allow_sender("alice@example.test", "sender.example", runtime.services.clock.now())
    ctx = run(tmp_path, ["alice@example.test"], runtime=runtime)
    assert ctx.auth.spf == "fail"
    assert ctx.spam.recipients == {"alice@example.test": "quarantine"}


def test_ham_is_untouched(tmp_path: Path) -> None:
    ctx = run(tmp_path, ["alice@example.test"], client_ip=CLEAN_IP, action="tag", prefix="[SPAM] ")
    assert (ctx.spam.verdict, ctx.spam.action, ctx.spam.recipients) == ("ham", "none", {})
    assert copy_of(ctx, "alice@example.test")["X-Spam-Flag"] is None


def test_incoming_spam_headers_are_replaced_by_ours(tmp_path: Path) -> None:
    raw = message(extra_headers="X-Spam-Flag: NO\r\nX-Spam-Score: -100\r\n")
    ctx = run(tmp_path, ["carol@example.test"], raw=raw, action="tag")
    assert copy_of(ctx, "carol@example.test")["X-Spam-Score"] is None  # a sender's claim goes


def test_japanese_tenant_prefix_on_an_iso2022jp_subject(tmp_path: Path) -> None:
    encoded = Header("お得な情報", "iso-2022-jp").encode()
    ctx = run(tmp_path, ["alice@example.test"], raw=message(subject=encoded), action="tag",
              prefix="【迷惑メール】", language="ja")
    tagged = copy_of(ctx, "alice@example.test")
    assert subject(tagged) == "【迷惑メール】 お得な情報"  # one space after a prefix, always
    raw_subject = next(line for line in ctx.outputs.get("alice@example.test", ctx.output or b"")
                       .split(b"\r\n") if line.startswith(b"Subject:"))
    assert raw_subject.isascii()  # encoded words, never raw 8-bit, in the header


@pytest.mark.parametrize(("original", "prefix", "shown"), [
    (b"Subject: Hello\r\n", "[SPAM] ", "[SPAM] Hello"),
    (b"Subject: Hello\r\n", "[SPAM]", "[SPAM] Hello"),
    (b"Subject: Hello\r\n", "【迷惑】", "【迷惑】 Hello"),
    (b"Subject: =?utf-8?b?5Lu25ZCN?=\r\n", "【迷惑】 ", "【迷惑】 件名"),
    (b"Subject: =?utf-8?b?5Lu25ZCN?=\r\n", "[SPAM] ", "[SPAM] 件名"),
    (b"Subject: \r\n", "[SPAM] ", "[SPAM]"),
])
def test_prefix_subject(original: bytes, prefix: str, shown: str) -> None:
    raw = b"From: a@b.example\r\n" + original + b"\r\nbody\r\n"
    msg = RawMessage.split(raw)
    current = str(make_header(decode_header(original.split(b":", 1)[1].strip().decode())))
    assert prefix_subject(msg, prefix, current)
    out = email.message_from_bytes(msg.to_bytes(), policy=email.policy.default)
    assert subject(out).strip() == shown
    assert msg.to_bytes().endswith(b"\r\n\r\nbody\r\n")


def test_prefix_subject_added_when_missing_and_not_doubled() -> None:
    msg = RawMessage.split(b"From: a@b.example\r\n\r\nbody\r\n")
    assert prefix_subject(msg, "【迷惑】", None)
    out = email.message_from_bytes(msg.to_bytes(), policy=email.policy.default)
    assert subject(out) == "【迷惑】"
    again = RawMessage.split(b"Subject: [SPAM] Re: hi\r\n\r\nbody\r\n")
    assert not prefix_subject(again, "[SPAM] ", "[SPAM] Re: hi")


def test_prefix_folds_a_long_first_line() -> None:
    long = "x" * 990
    msg = RawMessage.split(f"Subject: {long}\r\n\r\nb\r\n".encode())
    assert prefix_subject(msg, "[SPAM] ", long)
    assert all(len(line) <= 998 for line in msg.to_bytes().split(b"\r\n"))
