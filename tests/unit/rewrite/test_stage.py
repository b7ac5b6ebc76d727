"""The rewrite stage through the real pipeline: bootstrap, policy, rewrite; failures hold the message."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import dkim
import pytest

from mailmoat.bootstrap import bootstrap
from mailmoat.config import GatewayConfig
from mailmoat.context import Disposition, Envelope, MessageContext
from mailmoat.pipeline import run_pipeline
from mailmoat.rewrite.rewriter import arc_key
from mailmoat.rewrite.seal import SealError
from mailmoat.runtime import Runtime
from mailmoat.settings import AwsSettings, Settings
from tests.conftest import FIXTURES
from tests.unit.rewrite.helpers import leaf, message, multipart, parse, text_parts

LINK = "https://example.com/login"
RAW = message(multipart(
    "alternative",
    leaf("text/plain", f"ご確認ください {LINK}\n", "iso-2022-jp", cte="7bit"),
    leaf("text/html", f'<p>ご確認ください</p><a href="{LINK}">こちら</a>', "shift_jis",
         cte="base64"),
))


def run(rt: Runtime, raw: bytes, *, warn: bool, defang: bool, dmarc_policy: str | None = "reject",
        tenant: str | None = None) -> MessageContext:
    ctx = MessageContext(id="m1", raw=raw, tenant=tenant,
                         envelope=Envelope(client_ip="192.0.2.10", mail_from="taro@example.com",
                                           rcpt_to=["alice@example.test"]))
    ctx.auth.spf, ctx.auth.dkim, ctx.auth.dmarc = "fail", "none", "fail"
    ctx.auth.dmarc_policy = dmarc_policy
    ctx.auth.warn, ctx.auth.defang = warn, defang
    return run_pipeline(ctx, rt.services, ["isolate", "rewrite"])


def dns_from_public_txt(data_dir: Path):  # type: ignore[no-untyped-def]
    record = (data_dir / "arc" / "public.txt").read_text()
    assert record.startswith("mailmoat._domainkey.mailmoat.localhost. IN TXT ")
    value = re.search(r'"(v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]+)"', record)
    assert value
    return lambda name, timeout=5: value.group(1).encode()


@pytest.mark.parametrize(("warn", "defang", "policy", "banner", "links_left"), [
    (True, True, "reject", True, False),  # SPF/DMARC failed: banner and dead links
    (True, False, "none", True, True),  # DMARC p=none only: banner, links left alone
    (False, False, None, False, True),  # authenticated: only our headers and the seal
])
def test_pipeline_isolate_then_rewrite(tmp_path: Path, warn: bool, defang: bool,
                                       policy: str | None, banner: bool, links_left: bool) -> None:
    rt = bootstrap(Settings(mode="test"), data_dir=tmp_path)
    ctx = run(rt, RAW, warn=warn, defang=defang, dmarc_policy=policy)
    assert ctx.disposition == Disposition.DELIVER
    assert [t.outcome for t in ctx.trace] == ["ok", "ok", "ok"]
    assert ctx.output is not None
    assert ("banner" in ctx.actions) is banner
    assert ("defang" in ctx.actions) is (not links_left)
    assert "arc-seal" in ctx.actions
    for ctype, text in text_parts(ctx.output):
        assert "ご確認ください" in text
        assert ("【注意】" in text) is banner
        assert (LINK in text) is links_left, ctype
    # the locally generated key: private 0600, public record published beside it
    private = tmp_path / "arc" / "private.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    cv, _, reason = dkim.arc_verify(ctx.output, dnsfunc=dns_from_public_txt(tmp_path))
    assert cv == dkim.CV_Pass, reason
    assert ctx.to_report()["actions"] == ctx.actions


def test_key_is_generated_once(tmp_path: Path) -> None:
    rt = bootstrap(Settings(mode="test"), data_dir=tmp_path)
    run(rt, RAW, warn=False, defang=False)
    first = (tmp_path / "arc" / "private.pem").read_bytes()
    rt2 = bootstrap(Settings(mode="test"), data_dir=tmp_path)
    ctx = run(rt2, RAW, warn=False, defang=False)
    assert (tmp_path / "arc" / "private.pem").read_bytes() == first
    assert ctx.output is not None
    cv, _, _ = dkim.arc_verify(ctx.output, dnsfunc=dns_from_public_txt(tmp_path))
    assert cv == dkim.CV_Pass


def test_english_tenant_through_pipeline(tmp_path: Path) -> None:
    config = GatewayConfig.model_validate(
        {"tenant": [{"name": "acme", "domains": ["example.test"], "language": "en",
                     "html_to_text": True}]})
    rt = bootstrap(Settings(mode="test"), data_dir=tmp_path, config=config)
    ctx = run(rt, RAW, warn=True, defang=True, tenant="acme")
    assert ctx.output is not None
    parts = text_parts(ctx.output)
    assert [c for c, _ in parts] == ["text/plain", "text/plain"]  # HTML alternative rendered
    assert all("CAUTION: the sender" in t and "【注意】" not in t for _, t in parts)
    assert "html-to-text" in ctx.actions


def test_broken_key_holds_the_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    rt = bootstrap(Settings(mode="test", arc_key_file=bad), data_dir=tmp_path)
    ctx = run(rt, RAW, warn=True, defang=True)
    assert ctx.disposition == Disposition.HELD
    assert ctx.has("REWRITE_FAILED") and ctx.has("HELD")
    assert ctx.output is None  # never half-rewritten
    assert "arc-seal" not in ctx.actions


def test_without_key_generation_a_key_must_be_configured(tmp_path: Path) -> None:
    """AWS never generates keys (each instance would seal with its own)."""
    with pytest.raises(SealError):
        arc_key(AwsSettings(mode="test", data_dir=tmp_path))
    assert not (tmp_path / "arc").exists()


def _deep(depth: int) -> bytes:
    body = leaf("text/html", "<a href='https://x.example'>x</a>")
    for i in range(depth):
        body = f'Content-Type: multipart/mixed; boundary="d{i}"\r\n\r\n--d{i}\r\n'.encode() + body \
            + f"\r\n--d{i}--\r\n".encode()
    return message(body)


def _arc_sets(count: int) -> str:
    return "".join(f"ARC-Seal: i={i}; cv=pass; a=rsa-sha256; d=x.example; s=s; b=AAAA\r\n"
                   for i in range(1, count + 1))


HOSTILE = {
    "empty": b"",
    "no-headers": b"just some text https://example.com\r\n",
    "headers-only": b"From: a@example.com\r\nSubject: x",
    "mbox-from-line": b"From someone Fri Nov 27\r\n" + RAW,
    "deep-nesting": _deep(120),
    "broken-base64": message(b"Content-Type: text/html; charset=utf-8\r\n"
                             b"Content-Transfer-Encoding: base64\r\n\r\n@@@!!!===\r\nPGE+\r\n"),
    "control-chars-html": message(leaf("text/html", "<p>\x00\x01\x0b<a href='https://x.example'>"
                                       "\x0c</a>\x1f</p>")),
    "comment-only-html": message(leaf("text/html", "<!-- only a comment -->")),
    "unknown-8bit": message(b"Content-Type: text/plain; charset=unknown-8bit\r\n\r\n"
                            + "壊れた https://x.example".encode("cp932") + b"\r\n"),
    "bogus-charset": message(leaf("text/plain", "hello https://x.example\n")
                             .replace(b"charset=utf-8", b"charset=x-no-such-charset")),
    "utf16-declared": message(b"Content-Type: text/plain; charset=utf-16\r\n"
                              b"Content-Transfer-Encoding: base64\r\n\r\n"
                              b"//5oAGkAIABoAHQAdABwAHMAOgAvAC8AeAAuAGUAeABhAG0AcABsAGUA\r\n"),
    "long-header": message(leaf("text/plain", "x\n"), extra_headers="X-Long: " + "a" * 5000
                           + "\r\n"),
    "too-many-arc-sets": message(leaf("text/plain", "x\n"), extra_headers=_arc_sets(50)),
    "non-utf8-auth-results": message(leaf("text/plain", "x\n")).replace(
        b"MIME-Version", b"Authentication-Results: x.example; spf=pass \xff\xfe\r\nMIME-Version"),
    "8bit-subject": message(leaf("text/plain", "x\n")).replace(
        b"Subject: test message", "Subject: 件名".encode("cp932") + b"\xff"),
}


# Fail closed where a complete, sealed rewrite is impossible: ARC allows no instance above 50.
HELD = {"too-many-arc-sets"}
# Parts past the walk's bounds would keep live links: such a message is quarantined as
# received, and the rewrite stage never touches it.
QUARANTINED_UNTOUCHED = {"deep-nesting"}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_never_raises(tmp_path: Path, name: str) -> None:
    rt = bootstrap(Settings(mode="test"), data_dir=tmp_path)
    ctx = run(rt, HOSTILE[name], warn=True, defang=True)  # must not raise
    if name in HELD:
        assert ctx.disposition == Disposition.HELD
        assert ctx.output is None
        assert ctx.has("REWRITE_FAILED")
        return
    if name in QUARANTINED_UNTOUCHED:
        assert ctx.disposition == Disposition.QUARANTINE and ctx.has("UNSCANNABLE")
        assert ctx.output is None  # nothing rewritten: the raw message is what is kept
        assert [t.outcome for t in ctx.trace if t.stage == "rewrite"] == ["skipped"]
        return
    assert ctx.disposition != Disposition.HELD, ctx.findings
    assert ctx.output is not None
    msg = parse(ctx.output)
    assert any(str(v).startswith("mailmoat;") for v in msg.get_all("Authentication-Results", []))
    for ctype, text in text_parts(ctx.output):
        if ctype == "text/plain":
            assert "https://" not in text, name


SHARED_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.eml"))


@pytest.mark.parametrize("name", SHARED_FIXTURES)
def test_shared_fixtures_rewrite_cleanly(tmp_path: Path, name: str) -> None:
    rt = bootstrap(Settings(mode="test"), data_dir=tmp_path)
    raw = (FIXTURES / name).read_bytes()
    ctx = run(rt, raw, warn=True, defang=True)
    assert ctx.disposition != Disposition.HELD, ctx.findings
    assert ctx.output is not None and "banner" in ctx.actions
    texts = text_parts(ctx.output)
    assert any("【注意】" in text for _, text in texts)
    for ctype, text in texts:
        if ctype == "text/plain":
            assert "https://" not in text and "http://" not in text
        else:
            assert not re.search(r"(?i)href\s*=", text)


def _key_in_subprocess(arc_dir: str) -> str:
    from mailmoat.rewrite.seal import ensure_local_key

    return ensure_local_key(Path(arc_dir), "mailmoat", "gw.example.test").public_b64


def test_concurrent_processes_agree_on_one_generated_key(tmp_path: Path) -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(4) as pool:
        keys = set(pool.map(_key_in_subprocess, [str(tmp_path / "arc")] * 4))
    assert len(keys) == 1
    assert sorted(p.name for p in (tmp_path / "arc").iterdir()) == ["private.pem", "public.txt"]
    assert keys.pop() in (tmp_path / "arc" / "public.txt").read_text()


def test_each_recipients_copy_is_rewritten_and_sealed_with_portal_link_alive(
        tmp_path: Path) -> None:
    from tests.conftest import make_settings

    rt = bootstrap(make_settings(tmp_path))
    exe = (b'Content-Type: application/octet-stream; name="invoice.exe"\r\n'
           b'Content-Disposition: attachment; filename="invoice.exe"\r\n'
           b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAA==\r\n")
    raw = message(multipart("mixed", leaf("text/plain", f"請求書です {LINK}\n", "iso-2022-jp",
                                          cte="7bit"), exe))
    ctx = MessageContext(id="m2", raw=raw, envelope=Envelope(
        client_ip="192.0.2.10", mail_from="taro@example.com",
        rcpt_to=["alice@example.test", "bob@example.test"]))
    ctx.auth.spf, ctx.auth.warn, ctx.auth.defang = "fail", True, True
    run_pipeline(ctx, rt.services, ["scan", "isolate", "rewrite"])
    assert ctx.disposition == Disposition.DELIVER, ctx.findings
    assert set(ctx.outputs) == {"alice@example.test", "bob@example.test"}
    dns = dns_from_public_txt(rt.settings.data_dir)
    links = set()
    for data in ctx.outputs.values():
        assert dkim.arc_verify(data, dnsfunc=dns)[0] == dkim.CV_Pass
        [(_, text)] = text_parts(data)
        assert "【注意】" in text and "hxxps://example[.]com/login" in text
        portal = re.findall(r"http://127\.0\.0\.1:8080/m/[\w-]+", text)
        assert len(portal) == 1  # the recipient's own link, still clickable
        links.add(portal[0])
    assert len(links) == 2
    assert ctx.output in ctx.outputs.values()
