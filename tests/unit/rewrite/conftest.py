"""Fixtures for rewrite tests: a sealing key, its DNS record, and the rewrite step on its own."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailmoat.config import TenantConfig
from mailmoat.context import Envelope, MessageContext
from mailmoat.message import header_text
from mailmoat.message import parse as parse_message
from mailmoat.rewrite.rewriter import RewriteResult, rewrite
from mailmoat.settings import Settings
from tests.unit.rewrite.helpers import public_txt


@pytest.fixture(scope="session")
def arc_key_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A PKCS#8 key file (the form `openssl genpkey` writes) and its DNS TXT value."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("arc") / "arc.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, public_txt(base64.b64encode(spki).decode())


@pytest.fixture()
def settings(tmp_path: Path, arc_key_file: tuple[Path, bytes]) -> Settings:
    return Settings(mode="test", data_dir=tmp_path, arc_key_file=arc_key_file[0],
                    arc_domain="gw.example.test", authserv_id="mx.example.test")


@pytest.fixture()
def dnsfunc(arc_key_file: tuple[Path, bytes]) -> Callable[..., bytes]:
    zone = {"mailmoat._domainkey.gw.example.test.": arc_key_file[1]}

    def lookup(name: bytes | str, timeout: int = 5) -> bytes:
        key = name.decode() if isinstance(name, bytes) else name
        return zone.get(key if key.endswith(".") else key + ".", b"")

    return lookup


RunRewrite = Callable[..., tuple[MessageContext, RewriteResult]]


@pytest.fixture()
def run_rewrite(settings: Settings) -> RunRewrite:
    """The rewrite step alone, with the actions policy would have decided given as arguments."""

    def run(raw: bytes, *, actions: tuple[str, ...] = (), language: str = "ja",
            html_to_text: bool = False, spf: str = "fail", dkim: str = "none",
            dmarc: str = "fail", arc: str = "none", output: bytes | None = None,
            score: float | None = None) -> tuple[MessageContext, RewriteResult]:
        ctx = MessageContext(id="t", raw=raw, output=output,
                             envelope=Envelope(mail_from="taro@example.com",
                                               rcpt_to=["alice@example.test"]))
        ctx.auth.spf, ctx.auth.dkim, ctx.auth.dmarc, ctx.auth.arc = spf, dkim, dmarc, arc
        ctx.spam.score = score
        ctx.actions.extend(actions)
        ctx.parsed = parse_message(raw)
        ctx.from_header = header_text(ctx.parsed.message, "from")
        tenant = TenantConfig(name="t", domains=["example.test"], language=language,  # type: ignore[arg-type]
                              html_to_text=html_to_text)
        return ctx, rewrite(ctx, settings, tenant)

    return run


