"""Property tests: the parsers that read attacker-written headers never raise."""

from __future__ import annotations

from email import message_from_bytes, policy

from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.auth import dkim, dmarc, received, ses
from mailmoat.context import Envelope
from tests.unit.auth.helpers import resolver

# Header-ish text: the characters Received/Authentication-Results parsing cares about.
header_text = st.text(alphabet=st.sampled_from(list("fromby ()[];:=.@<>-_aZ09\t\r\nIPv6:ßあ")),
                      max_size=300)


@settings(max_examples=200, deadline=None)
@given(header_text)
def test_parse_received_never_raises(value: str) -> None:
    hop = received.parse_received(value)
    assert hop.ip is None or received.parse_ip(hop.ip) == hop.ip


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["Received", "Return-Path", "From", "DKIM-Signature",
                                           "Authentication-Results", "X-SES-Spam-Verdict",
                                           "ARC-Seal"]), header_text), max_size=8))
def test_header_readers_never_raise(headers: list[tuple[str, str]]) -> None:
    lines = [f"{name}: {' '.join(value.split())}" for name, value in headers]
    raw = ("\r\n".join([*lines, "Subject: x"]) + "\r\n\r\nbody\r\n").encode("utf-8")
    msg = message_from_bytes(raw, policy=policy.default)
    received.envelope_from_message(msg, Envelope())
    ses.upstream_verdicts(msg)
    assert dkim.verify_all(raw, resolver({})).result in {"none", "fail", "permerror",
                                                         "temperror", "neutral"}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_dmarc_record_parser_never_raises(text: str) -> None:
    record = dmarc.parse_record("v=DMARC1; " + text)
    assert record is None or record.p in dmarc.POLICIES
