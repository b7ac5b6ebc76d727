"""PPAP pairing through `mailmoat serve` (issue 17 acceptance): an AES zip, then a follow-up
with its password, over SMTP on loopback; the portal then lists the member without asking for a
password, and the password is nowhere in the page, the log or the store."""

from __future__ import annotations

import json
import os
import re
import smtplib
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from tests.adapters.test_clamd import EICAR
from tests.adapters.test_clamd import clamd as clamd
from tests.conftest import DEMO_CONFIG, free_port, stop_process, wait_for_smtp
from tests.unit.isolation.builders import aes_zip

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Tq4-vz81Lm"
MEMBER = "御見積金額 12,000 円\n".encode()
# sender.example authorises loopback, where the test's SMTP client connects from.
ZONE = {"sender.example": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]}}


@dataclass
class Serve:
    smtp: int
    portal: int
    data: Path
    log: Path
    browser: urllib.request.OpenerDirector

    def send(self, raw: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp, timeout=30) as smtp:
            smtp.sendmail("sender@sender.example", ["alice@example.test"], raw)

    def delivered(self, count: int, timeout: float = 90.0) -> list[bytes]:
        box = self.data / "maildir" / "example.test" / "alice" / "new"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = sorted(box.iterdir(), key=lambda p: p.stat().st_mtime_ns) if box.exists() else []
            if len(files) >= count:
                return [f.read_bytes() for f in files]
            time.sleep(0.2)
        raise AssertionError(f"{count} deliveries not seen: {self.log.read_text()[-3000:]}")

    def get(self, path: str) -> str:
        with self.browser.open(f"http://127.0.0.1:{self.portal}{path}", timeout=20) as r:
            return str(r.read().decode())

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, bytes]:
        body = urllib.parse.urlencode(fields).encode()
        try:
            with self.browser.open(f"http://127.0.0.1:{self.portal}{path}", data=body,
                                   timeout=20) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as refused:
            return int(refused.code), bytes(refused.read())


@pytest.fixture
def serve(tmp_path: Path, clamd: str) -> Iterator[Serve]:
    smtp_port, portal_port = free_port(), free_port()
    zone = tmp_path / "zone.json"
    zone.write_text(json.dumps(ZONE))
    env = {**os.environ, "MAILMOAT_DATA_DIR": str(tmp_path / "var"), "MAILMOAT_CONFIG": str(DEMO_CONFIG),
           "MAILMOAT_MODE": "test", "MAILMOAT_WORKERS": "1", "MAILMOAT_SMTP_PORT": str(smtp_port),
           "MAILMOAT_PORTAL_PORT": str(portal_port), "MAILMOAT_DNS_ZONE": str(zone),
           "MAILMOAT_PORTAL_URL": f"http://127.0.0.1:{portal_port}", "MAILMOAT_LOG_LEVEL": "DEBUG", "MAILMOAT_CLAMD_SOCKET": clamd}
    yield from running_serve(tmp_path, env)


def running_serve(tmp_path: Path, env: dict[str, str]) -> Iterator[Serve]:
    """`mailmoat serve` with `env` (its MAILMOAT_SMTP_PORT and MAILMOAT_PORTAL_PORT set), its
    output in tmp_path/serve.log, stopped after the test; a browser that keeps the portal's
    cookies (CSRF)."""
    output = tmp_path / "serve.log"
    smtp_port, portal_port = int(env["MAILMOAT_SMTP_PORT"]), int(env["MAILMOAT_PORTAL_PORT"])
    with output.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "mailmoat.local.cli", "serve"], cwd=ROOT,
                                env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        assert wait_for_smtp(smtp_port, proc, timeout=90), f"serve did not start: {output.read_text()[-3000:]}"
        # The portal binds after the SMTP listener (and the worker, preloaded, may deliver
        # before it does): the portal links are followed only once it listens too.
        assert _wait_for_port(portal_port, timeout=60), f"no portal: {output.read_text()[-3000:]}"
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        yield Serve(smtp_port, portal_port, Path(env["MAILMOAT_DATA_DIR"]), output, browser)
    finally:
        stop_process(proc, timeout=30)


def _wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _mail(body: str, *, message_id: str, zipped: bytes | None = None,
          in_reply_to: str | None = None, subject: str = "見積書送付の件") -> bytes:
    msg = EmailMessage()
    msg["From"] = "営業部 <sender@sender.example>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    msg.set_content(body)
    if zipped is not None:
        msg.add_attachment(zipped, maintype="application", subtype="zip", filename="見積書.zip")
    return msg.as_bytes(policy=policy.SMTP)  # CRLF: smtplib sends bytes as they are


def _text(raw: bytes) -> str:
    msg = message_from_bytes(raw, policy=policy.default)
    return "".join(str(n.get_content()) for n in msg.walk() if n.get_content_type() == "text/plain")


@pytest.mark.clamd
@pytest.mark.timeout(240)
def test_an_aes_zip_then_its_password_in_a_follow_up(serve: Serve) -> None:
    serve.send(_mail("見積書を送付します。パスワードは別途お送りします。", message_id="<q1@sender.example>",
                     zipped=aes_zip({"見積書.txt": MEMBER, "tool.com": EICAR}, PASSWORD)))
    (first,) = serve.delivered(1)
    link = re.search(rf"http://127\.0\.0\.1:{serve.portal}(/m/[A-Za-z0-9_-]+)", _text(first))
    assert link, _text(first)
    page = serve.get(link.group(1))
    assert 'type="password"' in page and "見積書.zip" in page

    serve.send(_mail(f"先ほどの見積書のパスワードです。\n\nパスワード：{PASSWORD}\n",
                     message_id="<q2@sender.example>", in_reply_to="<q1@sender.example>",
                     subject="【パスワード】見積書送付の件"))
    follow = serve.delivered(2)[1]
    assert "【パスワードの利用】" in _text(follow) and "見積書.zip" in _text(follow)

    page = serve.get(link.group(1))  # the same link, reloaded
    assert 'type="password"' not in page
    assert "後から届いたメールに書かれていたパスワード" in page and "見積書.txt" in page
    assert PASSWORD not in page
    opened = page.split('class="unlocked opened"', 1)[1].split("</div>", 1)[0]
    members = re.findall(r'<li class="member verdict-(\w+)">\s*<span class="name">([^<]+)</span>', opened)
    assert members == [("safe", "見積書.txt"), ("danger", "tool.com")]
    assert opened.count('/opened"') == 1  # a download form for the clean member only
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    file_path = re.search(r'action="/m/[^/]+/f/([^/]+)/opened"', opened).group(1)  # type: ignore[union-attr]
    base = link.group(1)
    assert serve.post(f"{base}/f/{file_path}/opened", {"csrf": csrf, "index": "0"}) == (200, MEMBER)
    status, body = serve.post(f"{base}/f/{file_path}/opened", {"csrf": csrf, "index": "1"})
    assert status == 403 and EICAR not in body
    assert serve.post(f"{base}/f/{file_path}/opened", {"csrf": "forged", "index": "0"})[0] == 403

    time.sleep(0.5)  # the worker's last log lines
    assert PASSWORD not in serve.log.read_text(errors="replace")
    database = (serve.data / "mailmoat.sqlite3").read_bytes()
    assert PASSWORD.encode() not in database
    # The store's blobs: the opened member is kept, the password is not. Only the follow-up
    # mail itself holds it: its original (raw/) and the recipient's keep-mail copy (keep/).
    blobs = [p for p in (serve.data / "blobs").rglob("*") if p.is_file()]
    assert any(p.read_bytes() == MEMBER for p in blobs)
    holding = [p for p in blobs if PASSWORD.encode() in p.read_bytes()]
    assert holding and all(p.relative_to(serve.data / "blobs").parts[0] in ("raw", "keep")
                           for p in holding), holding
