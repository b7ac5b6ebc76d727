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
