"""Builders for the admin console tests: two tenants on a real data directory, accounts, mail."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from mailmoat.adapters.sqlite import SqliteDatabase
from mailmoat.adapters.sqlite_admin import SqliteAdminStore
from mailmoat.admin.accounts import ALL_TENANTS, create_account
from mailmoat.bootstrap import bootstrap
from mailmoat.context import Envelope
from mailmoat.runtime import Runtime
from mailmoat.scan.engine import CACHE
from mailmoat.settings import Settings
from tests.webforms import form_csrf

ROOT = Path(__file__).resolve().parents[3]
ZONE = ROOT / "tests" / "fixtures" / "empty-zone.json"
PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "another long passphrase"

CONFIG = """
[[tenant]]
name = "example.test"
domains = ["example.test"]
language = "ja"
isolation = "risky"

[[tenant.users]]
address = "alice@example.test"
name = "Alice Example"

[[tenant.users]]
address = "bob@example.test"
name = "Bob Example"

[[tenant]]
name = "other.test"
domains = ["other.test"]
language = "en"

[[tenant.users]]
address = "carol@other.test"
name = "Carol Other"
"""


def make_runtime(tmp: Path, **settings: Any) -> Runtime:
    CACHE.clear()
    config = tmp / "tenants.toml"
    if not config.exists():
        config.write_text(CONFIG, encoding="utf-8")
    values: dict[str, Any] = {"mode": "test", "config": config, "dns_zone": ZONE,
                              "data_dir": tmp / "var", **settings}
    return bootstrap(Settings(**values))


def admin_store(runtime: Runtime) -> SqliteAdminStore:
    db = runtime.services.directory.db  # type: ignore[attr-defined]
    assert isinstance(db, SqliteDatabase)
    return SqliteAdminStore(db)


def add_admin(runtime: Runtime, email: str, tenant: str, password: str = PASSWORD) -> None:
    create_account(admin_store(runtime), email=email, tenant=tenant, password=password,
                   now=runtime.services.clock.now(), known_tenants=["example.test", "other.test"])


def add_operator(runtime: Runtime, email: str = "ops@provider.example") -> None:
    add_admin(runtime, email, ALL_TENANTS)


def mail(*, to: str = "alice@example.test", sender: str = "sender@sender.example",
         subject: str = "月次レポート", attachments: tuple[tuple[str, bytes, str], ...] = ()) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sender <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Fri, 27 Nov 2026 10:00:00 +0900"
    msg["Message-ID"] = f"<{abs(hash((to, subject)))}@sender.example>"
    msg["Received"] = ("from mx.sender.example (mx.sender.example [203.0.113.5]) by "
                       "mx.example.test with ESMTP id abc; Fri, 27 Nov 2026 10:00:01 +0900")
    msg.set_content("本文です。\nhttps://example.com/report\n")
    for name, data, ctype in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def receive(runtime: Runtime, raw: bytes, rcpt: list[str], sender: str = "sender@sender.example") -> str:
    """As the SMTP listener does: store, log, then process through every stage."""
    message_id = runtime.accept(raw, Envelope(client_ip="203.0.113.5", helo="mx.sender.example",
                                             mail_from=sender, rcpt_to=rcpt))
    runtime.process_stored(message_id)
    return message_id


def until_final(runtime: Runtime, message_id: str, tries: int = 10) -> str:
    """Run a message's retries now, one after another, until it ends (a failing stage is
    retried stage_max_attempts times before the message is held)."""
    for _ in range(tries):
        record = runtime.services.log.get(message_id)
        assert record is not None
        if record.state not in ("accepted", "processing", "deferred"):
            return record.state
        runtime.process_stored(message_id)
    raise AssertionError(f"{message_id} did not finish in {tries} tries")


class Geo:
    def country(self, ip: str) -> str | None:
        return {"203.0.113.5": "JP", "198.51.100.7": "US"}.get(ip)


@dataclass
class Console:
    runtime: Runtime
    client: TestClient

    @property
    def csrf(self) -> str:
        # Bound to the session: read from a page rendered in the current state (signed in or not).
        page = self.client.get("/admin/", follow_redirects=True)
        if 'name="csrf"' not in page.text:
            page = self.client.get("/admin/login")
        return form_csrf(page.text)

    def login(self, email: str, password: str = PASSWORD) -> Any:
        return self.client.post("/admin/login", data={"csrf": self.csrf, "email": email,
                                                      "password": password}, follow_redirects=False)

    def post(self, path: str, **form: Any) -> Any:
        data = {"csrf": self.csrf, **form}
        return self.client.post(path, data=data, follow_redirects=False)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, follow_redirects=False, **kwargs)


def open_console(runtime: Runtime, base_url: str = "http://testserver") -> Console:
    from mailmoat_web.app import create_app

    return Console(runtime, TestClient(create_app(runtime, sweep_every=None), base_url=base_url))


def text_of(html: str) -> str:
    """Visible text, tags dropped, whitespace folded (for assertions on what a page says)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
