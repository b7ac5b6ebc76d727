"""The faster authres tokenizer parses exactly as authres's own, and the seal's filter of
foreign Authentication-Results fields changes no byte of the ARC set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import authres
import authres.arc
import authres.dmarc
import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat import authres_speedups
from mailmoat.rewrite import seal as seal_module

REAL = [
    "mx.google.com; dkim=pass header.i=@example.com header.s=s1 header.b=AbCd; "
    "spf=pass (google.com: domain of a@example.com designates 192.0.2.1 as permitted sender) "
    "smtp.mailfrom=a@example.com; dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.com",
    "mx.example.org 1; none",
    "example.net; spf=fail smtp.mailfrom=\"odd local\"@example.net",
    "mx.test (comment (nested) here); arc=pass (i=1 spf=pass) header.oldest-pass=0",
    "gateway.example; iprev=pass policy.iprev=192.0.2.9; auth=pass smtp.auth=user",
    "x; dkim=neutral (bad format) header.d=example.com; dkim=pass reason=\"ok\" header.d=a.b",
    "broken; spf=",
    "; spf=pass",
    "a.example; dmarc=fail (p=REJECT) header.from=example.jp policy.dmarc=reject",
]
pieces = st.lists(st.sampled_from([
    "mx.example", " ", ";", "spf", "=", "pass", "dkim", "fail", "(", ")", "\"", "q", "\\",
    "header.d", ".", "smtp.mailfrom", "a@b.example", "1", "\r\n ", "\t", "none", "reason",
    "arc", "dmarc", "policy.x", "é"]), max_size=30).map("".join)


def _parse(text: str, step: Any) -> Any:
    original = authres.core.AuthenticationResultsHeader._parse_pattern
    authres.core.AuthenticationResultsHeader._parse_pattern = step
    try:
        header = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + text)
        return ("ok", header.authserv_id, str(header), [str(r) for r in header.results])
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))
    finally:
        authres.core.AuthenticationResultsHeader._parse_pattern = original


@pytest.mark.parametrize("text", REAL)
def test_real_headers_parse_the_same(text: str) -> None:
    assert _parse(text, authres_speedups._parse_pattern) == \
        _parse(text, authres_speedups.original_parse_pattern())


@settings(max_examples=600, deadline=None)
@given(pieces)
def test_generated_headers_parse_the_same(text: str) -> None:
    assert _parse(text, authres_speedups._parse_pattern) == \
        _parse(text, authres_speedups.original_parse_pattern())


@pytest.mark.parametrize(("value", "expected"), [
    (b"mx.google.com; spf=pass", False),
    (b" other.example 1; none", False),
    (b"ours.example; spf=pass", True),
    (b"OURS.example; spf=pass", True),
    (b"(c) other.example; spf=pass", True),  # a comment: only a parser can tell
    (b"\"ours.example\"; spf=pass", True),
    (b"no-semicolon-at-all", True),
    (b"; spf=pass", True),
])
def test_could_be_ours_keeps_every_field_a_parser_might_read_as_ours(value: bytes,
                                                                     expected: bool) -> None:
    assert seal_module.could_be_ours(value, b"ours.example") is expected


def test_the_filter_changes_no_byte_of_the_seal(tmp_path: Path) -> None:
    foreign = [f"Authentication-Results: relay{i}.example; spf=pass smtp.mailfrom=a@b.example; "
               f"dkim=pass (good) header.d=b.example\r\n" for i in range(8)]
    message = ("".join(foreign)
               + "Authentication-Results: (odd) relay.example; spf=fail\r\n"
               + "Authentication-Results: ours.example; spf=pass smtp.mailfrom=a@b.example;"
                 " arc=none\r\n"
               + "From: a@b.example\r\nTo: c@d.example\r\nSubject: hi\r\n\r\nbody\r\n").encode()
    key = seal_module.ensure_local_key(tmp_path / "arc", "s1", "ours.example")
    filtered = seal_module.seal(message, key, selector="s1", domain="ours.example",
                                authserv_id="ours.example", linesep=b"\r\n", timestamp=1700000000)
    signer = dkim.ARC(message, signature_algorithm=b"rsa-sha256", linesep=b"\r\n")
    unfiltered = signer.sign(b"s1", b"ours.example", key.private_pem, b"ours.example",
                             include_headers=seal_module._signed_headers(signer),
                             timestamp=1700000000)
    assert filtered == b"".join(reversed(unfiltered)) + message


def _as_sign_reads(header: Any) -> tuple[Any, ...]:
    """What dkimpy's ARC sign() reads of a parsed header: the authserv-id and, per result, its
    text (copied into the ARC-Authentication-Results), method and result (the cv= value)."""
    return (header.authserv_id,
            [(str(r), r.method, r.result) for r in header.results])


tokens = st.sampled_from(["pass", "fail", "none", "softfail", "neutral", "temperror",
                          "permerror", "policy", "PASS", "bad value", "", "x;y", "é"])
addresses = st.one_of(st.none(), st.sampled_from([
    "a@b.example", "o'brien+tag@mail.example.jp", "odd local@x.example", "a@b@c.example",
    "a;b@c.example", "=?utf-8?q?x?=@y.example", "a(b)@c.example", "\"q\"@d.example"]))
domains = st.one_of(st.none(), st.sampled_from([
    "example.com", "sub.example.co.jp", "xn--eckwd4c7c.example", "bad domain", "a;b",
    "(c)example", "é.example"]))


@settings(max_examples=300, deadline=None)
@given(spf=tokens, dkim_result=tokens, dmarc=tokens, arc=tokens,
       policy=st.one_of(st.none(), tokens), mail_from=addresses, from_domain=domains,
       dkim_domain=domains, linesep=st.sampled_from(["\r\n", "\n"]))
def test_our_remembered_field_is_what_parsing_it_reads(spf: str, dkim_result: str, dmarc: str,
                                                      arc: str, policy: str | None,
                                                      mail_from: str | None,
                                                      from_domain: str | None,
                                                      dkim_domain: str | None,
                                                      linesep: str) -> None:
    from mailmoat.context import AuthResult
    from mailmoat.rewrite.headers import our_results_field

    auth = AuthResult(spf=spf, dkim=dkim_result, dmarc=dmarc, dmarc_policy=policy)
    field = our_results_field("mx.ours.example", auth, mail_from=mail_from,
                              header_from_domain=from_domain, dkim_domain=dkim_domain,
                              arc_result=arc, linesep=linesep)
    # Exactly what dkimpy passes to parse() for this field of the message (CRLF folds).
    asked = "Authentication-Results: " + field.partition(":")[2].strip().replace(linesep, "\r\n")
    remembered = authres.AuthenticationResultsHeader.parse(asked)
    parsed = authres_speedups._original_parse(asked)
    assert remembered is not parsed
    assert _as_sign_reads(remembered) == _as_sign_reads(parsed)


@pytest.mark.parametrize("linesep", ["\r\n", "\n"])
def test_a_remembered_field_is_not_parsed_again_and_seals_to_the_same_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linesep: str) -> None:
    from mailmoat.context import AuthResult
    from mailmoat.rewrite.headers import our_results_field

    field = our_results_field("ours.example", AuthResult(spf="pass", dkim="fail", dmarc="fail",
                                                         dmarc_policy="reject"),
                              mail_from="a@b.example", header_from_domain="b.example",
                              dkim_domain="b.example", arc_result="none", linesep=linesep)
    message = (field + linesep + f"From: a@b.example{linesep}To: c@d.example{linesep}"
               f"Subject: hi{linesep}{linesep}body{linesep}").encode()
    key = seal_module.ensure_local_key(tmp_path / "arc", "s1", "ours.example")
    grammar_runs: list[str] = []
    original = authres_speedups._original_parse

    def counted(string: str) -> Any:
        grammar_runs.append(string)
        return original(string)

    monkeypatch.setattr(authres_speedups, "_original_parse", counted)

    def sealed() -> bytes:
        return seal_module.seal(message, key, selector="s1", domain="ours.example",
                                authserv_id="ours.example", linesep=linesep.encode(),
                                timestamp=1700000000)

    with_lookup = sealed()
    assert grammar_runs == []  # the signer's parse of our field was the lookup
    authres_speedups._remembered.clear()
    assert sealed() == with_lookup
    assert len(grammar_runs) == 1
