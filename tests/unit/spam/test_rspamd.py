"""The rspamd connector against recorded rspamd 3.4 replies (httpx MockTransport), and against a
real rspamd from Debian on loopback (bench/rspamd config, no network checks)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailmoat.context import Envelope, MessageContext
from mailmoat.spam import rspamd
from tests.unit.spam.helpers import FIXTURES, GTUBE, message, spam_runtime

URL = "http://rspamd.test:11333"


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"rspamd-{name}.json").read_text())
    return data


def mock_client(reply: Callable[[httpx.Request], httpx.Response],
                seen: list[httpx.Request] | None = None) -> rspamd.RspamdClient:
    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        if seen is not None:
            seen.append(request)
        return reply(request)

    return rspamd.RspamdClient(URL, 5.0, transport=httpx.MockTransport(handler))


@pytest.fixture
def with_rspamd(monkeypatch: pytest.MonkeyPatch) -> Callable[[rspamd.RspamdClient], None]:
    def install(client: rspamd.RspamdClient) -> None:
        monkeypatch.setitem(rspamd._CLIENTS, (URL, 15.0), client)

    return install


def analyse(tmp_path: Path, raw: bytes, url: str = URL, **overrides: Any) -> MessageContext:
    runtime = spam_runtime(tmp_path, rspamd_url=url, dnsbl_ip_zones=[], dnsbl_domain_zones=[],
                           **overrides)
    envelope = Envelope(client_ip="81.2.69.160", helo="mx.sender.example",
                        mail_from="promo@sender.example",
                        rcpt_to=["alice@example.test", "bob@example.test"])
    return runtime.analyse(raw, envelope, stages=("authenticate",), message_id="q-1")


def test_request_carries_message_and_envelope(tmp_path: Path, with_rspamd: Any) -> None:
    seen: list[httpx.Request] = []
    with_rspamd(mock_client(lambda _r: httpx.Response(200, json=recorded("ham")), seen))
    raw = message()
    ctx = analyse(tmp_path, raw)
    (request,) = seen
    assert request.method == "POST" and request.url.path == "/checkv2"
    assert request.content == raw
    assert request.headers["IP"] == "81.2.69.160"
    assert request.headers["Helo"] == "mx.sender.example"
    assert request.headers["From"] == "promo@sender.example"
    assert request.headers.get_list("Rcpt") == ["alice@example.test", "bob@example.test"]
    assert request.headers["Queue-Id"] == "q-1"
    assert ctx.spam.verdict == "ham"
    assert ctx.spam.score == -0.1
    assert ctx.spam.checks["rspamd"] == "no action -0.1"


@pytest.mark.parametrize(("action", "verdict"), [
    ("reject", "spam"), ("add header", "spam"), ("rewrite subject", "spam"),
    ("no action", "ham"), ("greylist", "ham"), ("soft reject", "unknown")])
def test_actions(tmp_path: Path, with_rspamd: Any, action: str, verdict: str) -> None:
    reply = {**recorded("gtube"), "action": action, "score": 9.5}
    with_rspamd(mock_client(lambda _r: httpx.Response(200, json=reply)))
    ctx = analyse(tmp_path, message())
    assert ctx.spam.verdict == verdict
    assert ctx.spam.score == 9.5
    assert (ctx.spam.sources == ["rspamd"]) == (verdict == "spam")


def test_recorded_gtube_reply_is_spam(tmp_path: Path, with_rspamd: Any) -> None:
    with_rspamd(mock_client(lambda _r: httpx.Response(200, json=recorded("gtube"))))
    ctx = analyse(tmp_path, message(body=GTUBE + "\n"))
    assert (ctx.spam.verdict, ctx.spam.score, ctx.spam.sources) == ("spam", 15.0, ["rspamd"])
    (finding,) = [f for f in ctx.findings if f.symbol == "RSPAMD_SPAM"]
    assert finding.detail.startswith("reject score=15.0/15.0 GTUBE")


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _slow(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


@pytest.mark.parametrize("reply", [
    _refused, _slow,
    lambda _r: httpx.Response(500, text="internal error"),
    lambda _r: httpx.Response(200, text="<html>not json</html>"),
    lambda _r: httpx.Response(200, json={"error": "message too big"}),
    lambda _r: httpx.Response(200, json=["not", "an", "object"]),
])
def test_a_failed_check_is_a_finding_never_spam(tmp_path: Path, with_rspamd: Any,
                                                reply: Callable[[httpx.Request], httpx.Response]
                                                ) -> None:
    with_rspamd(mock_client(reply))
    ctx = analyse(tmp_path, message())
    assert ctx.spam.verdict == "unknown"
    assert ctx.spam.checks["rspamd"] == "failed"
    assert any(f.symbol == "SPAM_CHECK_FAILED" and f.detail.startswith("rspamd: ")
               for f in ctx.findings)


def test_envelope_values_cannot_inject_headers(with_rspamd: Any) -> None:
    seen: list[httpx.Request] = []
    client = mock_client(lambda _r: httpx.Response(200, json=recorded("ham")), seen)
    client.check(b"x", client_ip="81.2.69.160", helo="evil\r\nX-Injected: 1",
                 mail_from="a@b.example", rcpts=["ü@例え.jp"], queue_id="q")
    assert "X-Injected" not in seen[0].headers
    assert (b"Helo", b"evilX-Injected: 1") in seen[0].headers.raw
    assert (b"Rcpt", "ü@例え.jp".encode()) in seen[0].headers.raw  # SMTPUTF8 as UTF-8


# --- a real rspamd --------------------------------------------------------------------------

@pytest.mark.slow
def test_rspamd_url_says_gtube_is_spam_and_a_note_is_not(tmp_path: Path, rspamd_url: str) -> None:
    ctx = analyse(tmp_path / "a", message(body=f"{GTUBE}\n"), url=rspamd_url)
    assert (ctx.spam.verdict, ctx.spam.sources) == ("spam", ["rspamd"])
    assert ctx.spam.score is not None and ctx.spam.score >= 15
    ctx = analyse(tmp_path / "b", message(subject="Lunch", body="See you at noon.\n"),
                  url=rspamd_url)
    assert ctx.spam.verdict == "ham"
    assert ctx.spam.checks["rspamd"].startswith("no action")
