"""Our Authentication-Results, spoofed copies removed, X-Spam-*, the ARC seal, and byte preservation."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import authres
import dkim
import pytest

from mailmoat.rewrite.headers import RawMessage, authserv_id_of
from tests.unit.rewrite.conftest import RunRewrite
from tests.unit.rewrite.helpers import leaf, message, multipart, parse

PLAIN = message(leaf("text/plain", "hello https://example.com\n", "utf-8"))


def ours(data: bytes, authserv_id: str = "mx.example.test") -> list[str]:
    msg = parse(data)
    return [str(v) for v in msg.get_all("Authentication-Results", [])
            if authserv_id_of(str(v)) == authserv_id]


def test_authentication_results_from_auth_result(run_rewrite: RunRewrite) -> None:
    _, result = run_rewrite(PLAIN, spf="softfail", dkim="fail", dmarc="fail")
    [value] = ours(result.data)
    header = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {value}")
    assert header.authserv_id == "mx.example.test"
    got = {r.method: r.result for r in header.results}
    assert got == {"spf": "softfail", "dkim": "fail", "dmarc": "fail", "arc": "none"}
    assert "smtp.mailfrom=taro@example.com" in value
    assert "header.from=example.com" in value


@pytest.mark.parametrize("spoof", [
    "Authentication-Results: mx.example.test; spf=pass; dkim=pass; dmarc=pass",
    "authentication-results: MX.EXAMPLE.TEST; dmarc=pass",
    "Authentication-Results: (injected) mx.example.test;\r\n\tdmarc=pass header.from=bank.example",
    "Authentication-Results: mx.example.test 1; none",
    "Authentication-Results: (a (b (c \\) d) e) f) mx.example.test; dmarc=pass",
    "Authentication-Results: " + "(" * 5000 + ")" * 5000 + " mx.example.test; dmarc=pass",
])
def test_incoming_results_claiming_to_be_ours_are_removed(run_rewrite: RunRewrite,
                                                          spoof: str) -> None:
    upstream = "Authentication-Results: amazonses.com; spf=pass smtp.mailfrom=x@example.com"
    raw = message(leaf("text/plain", "hi\n"), extra_headers=f"{spoof}\r\n{upstream}\r\n")
    _, result = run_rewrite(raw, spf="fail", dmarc="fail")
    values = ours(result.data)
    assert len(values) == 1 and "spf=fail" in values[0] and "pass" not in values[0]
    assert upstream.split(": ", 1)[1] in [str(v) for v in parse(result.data).get_all(
        "Authentication-Results", [])]
    assert ("SPOOFED_RESULTS_REMOVED", "1 header(s) claimed ours") in result.findings


@pytest.mark.parametrize(("actions", "flag"), [(("x-spam-flag",), "YES"), ((), None)])
def test_spam_flag(run_rewrite: RunRewrite, actions: tuple[str, ...], flag: str | None) -> None:
    raw = message(leaf("text/plain", "hi\n"), extra_headers="X-Spam-Flag: NO\r\n")
    _, result = run_rewrite(raw, actions=actions, score=7.25)
    msg = parse(result.data)
    assert msg.get_all("X-Spam-Flag") == ([flag] if flag else None)
    if flag:
        assert msg["X-Spam-Status"] == "Yes, score=7.2"


def test_headers_only_preserves_body_bytes(run_rewrite: RunRewrite) -> None:
    body = leaf("text/plain", "行末の空白   \n\n  indented\n", "iso-2022-jp", cte="7bit")
    raw = message(body, extra_headers="X-Odd:   spaced   value\r\n")
    _, result = run_rewrite(raw)
    assert result.data.endswith(raw.split(b"\r\n\r\n", 1)[1])
    assert b"X-Odd:   spaced   value\r\n" in result.data
    assert result.actions == ["arc-seal"]


@pytest.mark.parametrize("actions", [(), ("banner", "defang")])
@pytest.mark.parametrize("linesep", [b"\r\n", b"\n"])
def test_output_line_endings_consistent_and_clean_parse(run_rewrite: RunRewrite,
                                                        actions: tuple[str, ...],
                                                        linesep: bytes) -> None:
    raw = message(multipart("alternative", leaf("text/plain", "a https://x.example\n"),
                            leaf("text/html", "<a href='https://x.example'>x</a>")))
    raw = raw.replace(b"\r\n", linesep)
    _, result = run_rewrite(raw, actions=actions)
    if linesep == b"\r\n":
        assert re.search(rb"(?<!\r)\n", result.data) is None
    else:
        assert b"\r" not in result.data
    msg = parse(result.data)
    assert [type(d).__name__ for p in msg.walk() for d in p.defects] == []


@pytest.mark.parametrize("actions", [(), ("banner",), ("banner", "defang"), ("x-spam-flag",)])
def test_arc_seal_verifies(run_rewrite: RunRewrite, dnsfunc: Callable[..., bytes],
                           actions: tuple[str, ...]) -> None:
    _, result = run_rewrite(alternative_html(), actions=actions)
    assert "arc-seal" in result.actions
    cv, results, reason = dkim.arc_verify(result.data, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
    assert results[0]["as-domain"] == b"gw.example.test"
    assert results[0]["aar-value"].startswith(b"i=1; mx.example.test;")


def test_arc_seal_fails_against_a_tampered_message(run_rewrite: RunRewrite,
                                                   dnsfunc: Callable[..., bytes]) -> None:
    _, result = run_rewrite(PLAIN)
    tampered = result.data.replace(b"hello", b"HELLO")
    cv, _, _ = dkim.arc_verify(tampered, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Fail


def test_second_seal_extends_an_existing_chain(run_rewrite: RunRewrite,
                                               dnsfunc: Callable[..., bytes]) -> None:
    _, first = run_rewrite(PLAIN)
    # The next hop validated our chain (arc=pass) and seals again with i=2.
    _, second = run_rewrite(first.data, arc="pass")
    cv, results, reason = dkim.arc_verify(second.data, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
    assert [r["instance"] for r in results] == [2, 1]


def test_unvalidated_existing_chain_is_sealed_as_failed(run_rewrite: RunRewrite) -> None:
    _, first = run_rewrite(PLAIN)
    _, second = run_rewrite(first.data, arc="none")  # authenticate did not validate it
    assert b"arc=fail" in second.data
    assert re.search(rb"ARC-Seal: i=2; cv=fail", second.data)


@pytest.mark.parametrize(("raw", "fields", "rest"), [
    (b"From nobody Mon\nA: 1\nB:  two\n\tfolded\n\nbody\n",
     [b"A: 1\n", b"B:  two\n\tfolded\n"], b"\nbody\n"),
    # like the stdlib parser: the first line that is no field starts the body
    (b"A: 1\r\nnot a header\r\n\r\nbody\r\n", [b"A: 1\r\n"],
     b"\r\nnot a header\r\n\r\nbody\r\n"),
    (b"Subject: x", [b"Subject: x\n"], b"\n"),
    (b"", [], b"\n"),
])
def test_raw_message_split(raw: bytes, fields: list[bytes], rest: bytes) -> None:
    split = RawMessage.split(raw)
    assert (split.fields, split.rest) == (fields, rest)
    if raw:
        assert parse(split.to_bytes()).get_payload() == parse(raw).get_payload()


def alternative_html() -> bytes:
    return message(multipart("alternative", leaf("text/plain", "本文 https://example.com\n",
                                                 "iso-2022-jp", cte="7bit"),
                             leaf("text/html", "<p>本文</p><a href='https://example.com'>x</a>",
                                  "shift_jis", cte="8bit")))


def test_openssl_signing_gives_dkimpy_bytes(arc_key_file: tuple[Path, bytes]) -> None:
    import hashlib

    from dkim.crypto import RSASSA_PKCS1_v1_5_sign as pure_python_sign
    from dkim.crypto import parse_pem_private_key

    from mailmoat.rewrite.seal import load_key, openssl_pkcs1_sign

    private = parse_pem_private_key(load_key(arc_key_file[0]).private_pem)
    for algorithm in ("sha256", "sha1"):
        digest = hashlib.new(algorithm, b"message to sign")
        assert openssl_pkcs1_sign(digest, private) == bytes(pure_python_sign(digest, private))


def test_unparseable_foreign_results_are_dropped_and_the_message_is_still_sealed(
        run_rewrite: RunRewrite, dnsfunc: Callable[..., bytes]) -> None:
    # Seen in the wild (rspamd's test corpus): an unknown version makes authres raise, and
    # dkimpy's arc_sign parses every Authentication-Results field.
    odd = "Authentication-Results: other.example 2; spf=fail smtp.mailfrom=a.example"
    fine = "Authentication-Results: other.example; spf=pass smtp.mailfrom=a.example"
    raw = message(leaf("text/plain", "hi\n"), extra_headers=f"{odd}\r\n{fine}\r\n")
    _, result = run_rewrite(raw)
    assert "arc-seal" in result.actions
    values = [str(v) for v in parse(result.data).get_all("Authentication-Results", [])]
    assert not any("other.example 2" in v for v in values)
    assert any(v.startswith("other.example; spf=pass") for v in values)
    assert dkim.arc_verify(result.data, dnsfunc=dnsfunc)[0] == dkim.CV_Pass


def test_seal_with_the_key_parsed_once_is_byte_identical_to_plain_dkimpy(
        arc_key_file: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    import dkim.crypto

    from mailmoat.rewrite import seal as sealing

    key = sealing.load_key(arc_key_file[0])
    raw = (b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=a.example\r\n"
           b"From: a@a.example\r\nTo: b@b.example\r\nSubject: hi\r\n\r\nhello\r\n")
    monkeypatch.setattr(dkim.time, "time", lambda: 1_700_000_000)

    def sealed() -> bytes:
        return sealing.seal(raw, key, selector="arc", domain="gw.example.test",
                            authserv_id="mx.example.test", linesep=b"\r\n")

    fast = [sealed(), sealed()]  # the second seal takes the parsed key from the cache
    assert key.private_pem in sealing._parsed_pems
    monkeypatch.setattr(dkim, "parse_pem_private_key", dkim.crypto.parse_pem_private_key)
    monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_sign", dkim.crypto.RSASSA_PKCS1_v1_5_sign)
    assert fast == [sealed(), sealed()]


def test_an_unparseable_key_is_refused_on_every_seal() -> None:
    from mailmoat.rewrite import seal as sealing

    bad = sealing.ArcKey(b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                         "", Path("bad.pem"))
    for _ in range(2):
        with pytest.raises(sealing.SealError):
            sealing.seal(b"Authentication-Results: mx.example.test; spf=pass\r\nFrom: a@a.example\r\n"
                         b"\r\nhi\r\n", bad, selector="arc", domain="gw.example.test",
                         authserv_id="mx.example.test", linesep=b"\r\n")
    assert bad.private_pem not in sealing._parsed_pems


_AR = b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=a.example"


@pytest.mark.parametrize(("raw", "linesep"), [
    (_AR + b"\r\nFrom: a@a.example\r\nSubject: hi\r\n\r\nhello\r\nworld\r\n", b"\r\n"),
    (_AR + b"\nFrom: a@a.example\nSubject: hi\n\nhello\nworld\n", b"\n"),
    (_AR + b"\r\nFrom: a@a.example\r\n\r\nmixed\nline ends\r\nhere\n", b"\r\n"),
    (_AR + b"\r\nFrom: a@a.example\r\n\r\ntrailing  \t \r\nspace\t\tand\r\n\r\n\r\n", b"\r\n"),
    (_AR + b"\r\nFrom: a@a.example\r\n\r\nno final line end", b"\r\n"),
    (_AR + b"\r\nFrom: a@a.example\r\n\r\n", b"\r\n"),
    (_AR + b"\r\nFrom: a@a.example\r\n", b"\r\n"),
    (_AR + b"\r\nFrom: a@a.example\r\n\r\nCR\r\r\nCR\r\n", b"\r\n"),
    (_AR + b"\r\nFrom: a@a.example\r\n\r\nbare\rCR\r\n", b"\r\n"),
])
def test_seal_of_a_body_view_is_dkimpys_seal_of_the_whole_message(
        arc_key_file: tuple[Path, bytes], raw: bytes, linesep: bytes) -> None:
    """seal() hands dkimpy the header block and a view of the body (issue 15: a 25 MB body is
    not copied to be hashed); the result is byte for byte dkimpy's seal of the whole message."""
    import dkim

    from mailmoat.rewrite import seal as sealing

    key = sealing.load_key(arc_key_file[0])
    signer = dkim.ARC(raw, signature_algorithm=b"rsa-sha256", linesep=linesep)
    arc_set = signer.sign(b"arc", b"gw.example.test", key.private_pem, b"mx.example.test",
                          include_headers=sealing._signed_headers(signer), timestamp=1_700_000_000)
    whole = b"".join(line if line.endswith(b"\n") else line + linesep
                     for line in reversed(arc_set)) + raw
    assert sealing.seal(raw, key, selector="arc", domain="gw.example.test",
                        authserv_id="mx.example.test", linesep=linesep,
                        timestamp=1_700_000_000) == whole


def test_a_crlf_body_is_hashed_as_a_view_of_the_message(
        arc_key_file: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    import dkim.canonicalization as canon

    from mailmoat.rewrite import seal as sealing

    seen: list[type] = []
    strip = canon.strip_trailing_lines

    def spy(content: bytes | memoryview) -> bytes | memoryview:
        seen.append(type(content))
        return strip(content)

    monkeypatch.setattr(canon, "strip_trailing_lines", spy)
    raw = _AR + b"\r\nFrom: a@a.example\r\n\r\n" + b"QUJD" * 19 + b"\r\n"
    sealing.seal(raw, sealing.load_key(arc_key_file[0]), selector="arc",
                 domain="gw.example.test", authserv_id="mx.example.test", linesep=b"\r\n")
    assert seen == [memoryview]
