"""Received parsing: the header variants MTAs write, public vs private addresses, the envelope."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.auth.received import (
    envelope_from_message,
    is_public,
    parse_chain,
    parse_received,
)
from mailmoat.context import Envelope


@pytest.mark.parametrize(("value", "ip", "from_name", "helo", "by"), [
    ("from mail.example.org (mail.example.org [192.0.2.10])\r\n\tby mx.example.net (Postfix)"
     " with ESMTPS id 4AB; Fri, 27 Nov 2026 10:00:00 +0000",
     "192.0.2.10", "mail.example.org", "mail.example.org", "mx.example.net"),
    ("from foo.example ([203.0.113.9] helo=bar.example) by mx.example with esmtp (Exim 4.96)",
     "203.0.113.9", "foo.example", "bar.example", "mx.example"),
    ("from unknown (HELO hello.example) ([198.51.100.7]) by mx id 1",
     "198.51.100.7", "unknown", "hello.example", "mx"),
    ("from mail-ed1-f42.google.com (mail-ed1-f42.google.com [209.85.208.42]) by"
     " inbound-smtp.us-east-1.amazonaws.com with SMTP id abc for u@example.com; Fri",
     "209.85.208.42", "mail-ed1-f42.google.com", "mail-ed1-f42.google.com",
     "inbound-smtp.us-east-1.amazonaws.com"),
    ("from AM0PR01MB1.eurprd01.prod.exchangelabs.com (2603:10a6:208:ac::11) by"
     " AM0PR02MB.outlook.com with HTTPS; Fri",
     "2603:10a6:208:ac::11", "am0pr01mb1.eurprd01.prod.exchangelabs.com",
     "AM0PR01MB1.eurprd01.prod.exchangelabs.com", "am0pr02mb.outlook.com"),
    ("from [IPv6:2001:db8::25] (port=1234) by x.example", "2001:db8::25",
     "[IPv6:2001:db8::25]", "[IPv6:2001:db8::25]", "x.example"),
    ("from x (y [::ffff:192.0.2.3]) by z", "192.0.2.3", "x", "x", "z"),
    ("from a (b [300.1.2.3]) by c", None, "a", "a", "c"),
    ("by mx.example.net (Postfix, from userid 0) id 1; Fri", None, None, None, "mx.example.net"),
    ("(((((( garbage [999.1.1.1]", None, None, None, None),
    ("", None, None, None, None),
])
def test_parse_received(value: str, ip: str | None, from_name: str | None, helo: str | None,
                        by: str | None) -> None:
    hop = parse_received(value)
    assert (hop.ip, hop.from_name, hop.helo, hop.by_name) == (ip, from_name, helo, by)


@pytest.mark.parametrize(("ip", "public"), [
    ("203.0.113.5", True), ("8.8.8.8", True), ("2a00:1450::1", True), ("2001:db8::1", True),
    ("10.0.0.1", False), ("172.16.5.4", False), ("192.168.1.1", False), ("127.0.0.1", False),
    ("100.64.0.1", False), ("169.254.1.1", False), ("::1", False), ("fd00::1", False),
    ("fe80::1", False), ("0.0.0.0", False), ("224.0.0.1", False), ("not-an-ip", False),
    (None, False),
])
def test_is_public(ip: str | None, public: bool) -> None:
    assert is_public(ip) is public


def _msg(head: str) -> object:
    return message_from_bytes((head.replace("\n", "\r\n") + "\r\nbody\r\n").encode(),
                              policy=policy.default)


TOP = "Received: from mail.a.example (mail.a.example [203.0.113.5]) by mx.b.example; Fri\n"
INTERNAL = "Received: from relay (relay [10.0.0.2]) by mx2.b.example; Fri\n"
FORGED = "Received: from forged (forged [198.51.100.1]) by mail.a.example; Thu\n"


@pytest.mark.parametrize(("head", "given", "expected"), [
    (f"Return-Path: <x@a.example>\n{TOP}{FORGED}", Envelope(),
     ("203.0.113.5", "mail.a.example", "x@a.example")),
    # the receiving side's internal relay on top is skipped, never the sender's lines
    (f"{INTERNAL}{TOP}{FORGED}", Envelope(), ("203.0.113.5", "mail.a.example", None)),
    ("Return-Path: <>\n" + TOP, Envelope(), ("203.0.113.5", "mail.a.example", "")),
    (TOP, Envelope(client_ip="192.0.2.9", helo="given.example", mail_from="g@x.example"),
     ("192.0.2.9", "given.example", "g@x.example")),
    (TOP, Envelope(client_ip="192.0.2.9"), ("192.0.2.9", "mail.a.example", None)),
    ("Subject: no route\n", Envelope(), (None, None, None)),
])
def test_envelope_from_message_fills_only_missing_fields(head: str, given: Envelope,
                                                         expected: tuple[str | None, ...]) -> None:
    env = envelope_from_message(_msg(head), given)  # type: ignore[arg-type]
    assert (env.client_ip, env.helo, env.mail_from) == expected


def test_chain_is_bounded() -> None:
    hops, total = parse_chain(_msg(TOP * 80))  # type: ignore[arg-type]
    assert total == 80 and len(hops) == 50


def test_envelope_from_raw_bytes() -> None:
    raw = (f"Return-Path: <x@a.example>\n{TOP}Subject: s\n\nbody\n").encode()
    env = envelope_from_message(raw, Envelope(rcpt_to=["r@b.example"]))
    assert (env.client_ip, env.helo, env.mail_from, env.rcpt_to) == (
        "203.0.113.5", "mail.a.example", "x@a.example", ["r@b.example"])


def test_raw_utf8_in_return_path_and_received_is_decoded_not_surrogates() -> None:
    from mailmoat.auth.received import envelope_from_message, parse_chain
    from mailmoat.context import Envelope
    from mailmoat.message import parse_bytes

    raw = ("Return-Path: <Marilù@università.example>\r\n"
           "Received: from mx.università.example (mx.università.example [203.0.113.9])\r\n"
           "\tby mx.example.test; Mon, 05 Oct 2015 12:00:00 +0200\r\n"
           "From: a@b.example\r\n\r\nbody\r\n").encode()
    envelope = envelope_from_message(raw, Envelope())
    assert envelope.mail_from == "Marilù@università.example"
    msg, _ = parse_bytes(raw)
    hops, _ = parse_chain(msg)
    assert hops[0].from_name == "mx.università.example"
    for hop in hops:
        for value in (hop.from_name or "", hop.by_name or "", hop.helo or "", hop.raw):
            value.encode("utf-8")  # no lone surrogates left


def _split_clauses_by_characters(value: str) -> tuple[str, str]:
    """The character-by-character split _split_clauses replaced, kept as the oracle."""
    depth, starts, i = 0, {}, 0
    lowered = value.lower()
    while i < len(value):
        ch = value[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == ";" and depth == 0:
            break
        elif depth == 0 and (i == 0 or value[i - 1].isspace()):
            for keyword in ("from", "by", "via", "with", "id", "for"):
                end = i + len(keyword)
                if (lowered.startswith(keyword, i) and end < len(value)
                        and value[end].isspace() and keyword not in starts):
                    starts[keyword] = end
                    break
        i += 1

    def clause(keyword: str) -> str:
        if keyword not in starts:
            return ""
        later = [s - len(k) for k, s in starts.items() if s > starts[keyword]]
        return value[starts[keyword]:min([*later, i])].strip()

    return clause("from"), clause("by")


@settings(max_examples=800, deadline=None)
@given(st.lists(st.sampled_from(["from", "FROM", "by", "By", "via", "with", "id", "for", " ",
                                 "(", ")", ";", "x", "mx.example", "[192.0.2.1]", "helo=a",
                                 "fromage", "by(", "\t", "é"]), max_size=25).map("".join))
def test_the_clause_split_is_the_character_loop_it_replaced(text: str) -> None:
    from mailmoat.auth.received import _split_clauses

    value = " ".join(text.split())  # as parse_received hands it over
    assert _split_clauses(value) == _split_clauses_by_characters(value)
