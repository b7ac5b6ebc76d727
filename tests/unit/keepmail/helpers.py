"""Builders for keep-mail tests: a runtime on a temporary data directory, messages made here."""

from __future__ import annotations

from pathlib import Path

from mailmoat.bootstrap import bootstrap
from mailmoat.config import GatewayConfig, load_config
from mailmoat.context import Envelope, MessageContext
from mailmoat.ports import Mailer
from mailmoat.runtime import Runtime
from mailmoat.scan.engine import CACHE
from mailmoat.settings import Settings
from tests.unit.isolation.builders import DEMO, ZONE, SignatureAntivirus

RCPTS = ["alice@example.test", "bob@example.test"]
PASSWORD = "correct horse battery"
REMOTE = "tracker.remote.example"
SCRIPTED_HTML = (
    f"<html><head><style>body{{background:url(https://{REMOTE}/bg.png)}}</style>"
    "<script>document.title='pwned'</script></head><body>"
    "<p onclick=\"alert(1)\">Hello <b>Alice</b></p>"
    f"<img src=\"https://{REMOTE}/pixel.png\" onerror=\"document.title='pwned'\" alt=\"logo\">"
    "<a href=\"https://phish.example/login\">sign in</a>"
    f"<iframe src=\"https://{REMOTE}/frame\"></iframe><form action=\"https://{REMOTE}/f\"><input name=q></form>"
    "<svg><script>document.title='pwned'</script></svg>"
    "</body></html>"
)


def config(**tenant: object) -> GatewayConfig:
    base = load_config(DEMO)
    return GatewayConfig(tenant=[base.tenants[0].model_copy(update=tenant)])


def make_runtime(tmp_path: Path, *, mailer: Mailer | None = None, **tenant: object) -> Runtime:
    CACHE.clear()
    settings = Settings(mode="test", config=DEMO, dns_zone=ZONE, data_dir=tmp_path / "var",
                        portal_base_url="http://127.0.0.1:8080")
    runtime = bootstrap(settings, config=config(**tenant), mailer=mailer)
    runtime.services.antivirus = SignatureAntivirus()
    return runtime


def deliver(runtime: Runtime, raw: bytes, rcpts: list[str] | None = None) -> tuple[str, MessageContext]:
    message_id = runtime.accept(raw, Envelope(mail_from="sender@sender.example", rcpt_to=list(rcpts or RCPTS)))
    ctx = runtime.process_stored(message_id)
    assert ctx is not None
    return message_id, ctx


def maildir(runtime: Runtime, address: str) -> list[Path]:
    local, _, domain = address.partition("@")
    box = runtime.settings.data_dir / "maildir" / domain / local / "new"
    return sorted(box.iterdir()) if box.exists() else []
