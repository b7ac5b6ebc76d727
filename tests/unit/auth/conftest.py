"""Fixtures for the auth tests: keys made once per session, a real runtime on a zone dict."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailmoat.bootstrap import bootstrap
from mailmoat.config import GatewayConfig
from mailmoat.context import Envelope, MessageContext
from mailmoat.runtime import Runtime
from mailmoat.settings import Settings
from tests.unit.auth.helpers import Key, make_ed25519_key, make_rsa_key


class DiscardMailer:
    """Unit tests of authentication never deliver; this mailer refuses to pretend it did."""

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        raise AssertionError("authentication tests must not deliver")


@pytest.fixture(scope="session")
def rsa_key() -> Key:
    return make_rsa_key()


@pytest.fixture(scope="session")
def ed25519_key() -> Key:
    return make_ed25519_key()


@pytest.fixture
def make_runtime(tmp_path: Path) -> Callable[[dict[str, Any]], Runtime]:
    """A real runtime (bootstrap) whose DNS is the given zone dict, written as a zone file."""

    def build(zone: dict[str, Any]) -> Runtime:
        path = tmp_path / "zone.json"
        path.write_text(json.dumps(zone), encoding="utf-8")
        settings = Settings(mode="test", data_dir=tmp_path / "var", dns_zone=path)
        return bootstrap(settings, config=GatewayConfig(), mailer=DiscardMailer())

    return build


@pytest.fixture
def analyse(make_runtime: Callable[[dict[str, Any]], Runtime]) -> Callable[..., MessageContext]:
    """bootstrap(...).analyse(...) on raw bytes with a zone dict and an SMTP envelope."""

    def run(raw: bytes, zone: dict[str, Any], *, client_ip: str | None = None,
            helo: str | None = None, mail_from: str | None = None,
            stages: tuple[str, ...] = ("authenticate", "scan", "isolate")) -> MessageContext:
        runtime = make_runtime(zone)
        envelope = Envelope(client_ip=client_ip, helo=helo, mail_from=mail_from,
                            rcpt_to=["bob@example.test"])
        return runtime.analyse(raw, envelope, stages=stages)

    return run
