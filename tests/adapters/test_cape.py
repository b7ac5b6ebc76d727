"""CapeSandbox against a real HTTP server on loopback that answers with CAPE-shaped JSON
(tests/fixtures/cape/, shapes from CAPEv2's web/apiv2/views.py; docs/sandbox.md)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mailmoat.adapters.cape import CapeError, CapeSandbox, CircuitBreaker
from mailmoat.scan.sandbox import SandboxConfig, SandboxReport, SandboxUnavailable, consult

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cape"
TOKEN = "cape-secret-token-3f9a"
CREATE = "/apiv2/tasks/create/file/"
VIEW = "/apiv2/tasks/view/42/"
REPORT = "/apiv2/tasks/get/report/42/"


@dataclass
class Answer:
    status: int = 200
    fixture: str | None = None
    body: bytes = b""
    delay: float = 0.0
    declare_length: bool = True

    def payload(self) -> bytes:
        return (FIXTURES / self.fixture).read_bytes() if self.fixture else self.body


@dataclass
class FakeCape:
    """Scripted answers per path: each request takes the next, the last one repeats."""

    url: str = ""
    script: dict[str, list[Answer]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    def answer(self, path: str, *answers: Answer) -> None:
        self.script[path] = list(answers)

    def hits(self, path: str) -> int:
        return sum(1 for _, p, _, _ in self.requests if p == path)

    def next(self, path: str) -> Answer:
        queue = self.script.get(path)
        if not queue:
            return Answer(404, body=b'{"detail": "Not found."}')
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def cape() -> Iterator[FakeCape]:
    fake = FakeCape()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fake.requests.append((self.command, self.path, dict(self.headers), body))
            answer = fake.next(self.path)
            if answer.delay:
                time.sleep(answer.delay)
            payload = answer.payload()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                if answer.declare_length:
                    self.send_header("Content-Length", str(len(payload)))
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def sandbox(cape: FakeCape, **kwargs: object) -> CapeSandbox:
    options: dict[str, object] = {"timeout_seconds": 2.0, "retries": 2, "backoff_seconds": 0.01,
                                  "breaker": CircuitBreaker(5, 60.0)}
    options.update(kwargs)
    return CapeSandbox(cape.url, TOKEN, **options)  # type: ignore[arg-type]


FAST = SandboxConfig(enabled=True, timeout_seconds=5.0, poll_seconds=0.01)


def detonation(cape: FakeCape, report: str) -> None:
    cape.answer(CREATE, Answer(fixture="create.json"))
    cape.answer(VIEW, Answer(fixture="view-pending.json"), Answer(fixture="view-running.json"),
                Answer(fixture="view-completed.json"), Answer(fixture="view-reported.json"))
    cape.answer(REPORT, Answer(fixture=report))


# --- verdicts -----------------------------------------------------------------------------------

def test_clean_file_polls_pending_running_reported_and_passes(cape: FakeCape) -> None:
    detonation(cape, "report-clean.json")
    assert consult(sandbox(cape), b"MZ...", "invoice.exe", FAST) is None
    assert [p for _, p, _, _ in cape.requests] == [CREATE, VIEW, VIEW, VIEW, VIEW, REPORT]
    method, _, _, body = cape.requests[0]
    assert method == "POST" and b'name="file"; filename="invoice.exe"' in body
    assert all(h["Authorization"] == f"Token {TOKEN}" for _, _, h, _ in cape.requests)


def test_malicious_report_names_score_family_and_signatures(cape: FakeCape) -> None:
    detonation(cape, "report-malicious.json")
    symbol, detail = consult(sandbox(cape), b"MZ...", "invoice.exe", FAST) or ("", "")
    assert symbol == "SANDBOX_MALICIOUS"
    assert detail.startswith("42: CAPE task 42 malscore 9.5")
    assert "family AgentTesla" in detail
    assert "antivm_generic_disk" in detail and "agenttesla_behavior" in detail


@pytest.mark.parametrize(("report", "danger", "suspicious", "verdict"), [
    ("report-malicious.json", 7.0, 4.0, "malicious"),   # 9.5 > 7
    ("report-malicious.json", 9.5, 4.0, "suspicious"),  # danger is *above* the threshold
    ("report-malicious.json", 10.0, 9.6, "clean"),
    ("report-clean.json", 7.0, 4.0, "clean"),           # 1.0
    ("report-clean.json", 7.0, 1.0, "suspicious"),      # at least the suspicious score
    ("report-clean.json", 0.5, 0.0, "malicious"),
])
def test_score_to_verdict_by_thresholds(cape: FakeCape, report: str, danger: float,
                                        suspicious: float, verdict: str) -> None:
    cape.answer(VIEW, Answer(fixture="view-reported.json"))
    cape.answer(REPORT, Answer(fixture=report))
    answer = sandbox(cape, danger_score=danger, suspicious_score=suspicious).poll("42")
    assert isinstance(answer, SandboxReport) and answer.verdict == verdict


def test_failed_task_is_scan_failed_never_clean(cape: FakeCape) -> None:
    cape.answer(CREATE, Answer(fixture="create.json"))
    cape.answer(VIEW, Answer(fixture="view-running.json"), Answer(fixture="view-failed-analysis.json"))
    symbol, detail = consult(sandbox(cape), b"x", "a.exe", FAST) or ("", "")
    assert symbol == "SCAN_FAILED" and "failed_analysis" in detail and "win10" in detail
    assert cape.hits(REPORT) == 0


def test_error_answers_with_200_are_failures(cape: FakeCape) -> None:
    cape.answer(CREATE, Answer(fixture="create-disabled.json"))
    symbol, detail = consult(sandbox(cape), b"x", "a.exe", FAST) or ("", "")
    assert symbol == "SCAN_FAILED" and "File Create API is Disabled" in detail
    cape.answer(VIEW, Answer(fixture="view-not-found.json"))
    with pytest.raises(CapeError, match="Task not found"):
        sandbox(cape).poll("42")


def test_a_task_that_never_reports_times_out(cape: FakeCape) -> None:
    cape.answer(CREATE, Answer(fixture="create.json"))
    cape.answer(VIEW, Answer(fixture="view-running.json"))
    started = time.monotonic()
    outcome = consult(sandbox(cape), b"x", "a.exe",
                      SandboxConfig(enabled=True, timeout_seconds=0.3, poll_seconds=0.05))
    assert outcome == ("SANDBOX_TIMEOUT", "no verdict in 0.3 s")
    assert time.monotonic() - started < 2.0
    assert cape.hits(VIEW) >= 3 and cape.hits(REPORT) == 0


# --- retries, timeouts, the breaker -------------------------------------------------------------

@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_5xx_and_429_are_retried_then_recover(cape: FakeCape, status: int) -> None:
    cape.answer(CREATE, Answer(status, body=b"<html>busy</html>"), Answer(status),
                Answer(fixture="create.json"))
    assert sandbox(cape, retries=2).submit(b"x", "a.exe") == "42"
    assert cape.hits(CREATE) == 3


def test_persistent_5xx_is_scan_failed_after_the_retries(cape: FakeCape) -> None:
    cape.answer(CREATE, Answer(503))
    symbol, detail = consult(sandbox(cape, retries=2), b"x", "a.exe", FAST) or ("", "")
    assert symbol == "SCAN_FAILED" and detail.startswith("sandbox unavailable:") and "503" in detail
    assert cape.hits(CREATE) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_4xx_is_not_retried(cape: FakeCape, status: int) -> None:
    cape.answer(CREATE, Answer(status, fixture="unauthorized.json"))
    box = sandbox(cape, retries=3)
    with pytest.raises(CapeError, match=f"HTTP {status}"):
        box.submit(b"x", "a.exe")
    assert cape.hits(CREATE) == 1
    assert box.breaker.state == "closed"  # it answered: the service is up


def test_slow_answers_hit_the_request_timeout_and_fail_within_a_bound(cape: FakeCape) -> None:
    cape.answer(CREATE, Answer(fixture="create.json", delay=1.5))
    started = time.monotonic()
    with pytest.raises(SandboxUnavailable, match="ReadTimeout"):
        sandbox(cape, timeout_seconds=0.2, retries=1).submit(b"x", "a.exe")
    assert time.monotonic() - started < 1.2  # 2 tries × 0.2 s + back-off, not the server's 1.5 s
    assert cape.hits(CREATE) == 2


def test_one_slow_answer_is_retried(cape: FakeCape) -> None:
    cape.answer(CREATE, Answer(fixture="create.json", delay=1.0), Answer(fixture="create.json"))
    assert sandbox(cape, timeout_seconds=0.2, retries=1).submit(b"x", "a.exe") == "42"


def test_nothing_listening_is_unavailable() -> None:
    box = CapeSandbox("http://127.0.0.1:9", TOKEN, timeout_seconds=0.5, retries=1,
                      breaker=CircuitBreaker(5, 60.0), backoff_seconds=0.01)
    symbol, detail = consult(box, b"x", "a.exe", FAST) or ("", "")
    assert symbol == "SCAN_FAILED" and "ConnectionError" in detail


def test_breaker_opens_after_n_failures_and_half_opens_after_the_cooldown(cape: FakeCape) -> None:
    now = [1000.0]
    breaker = CircuitBreaker(failures=2, cooldown_seconds=30.0, clock=lambda: now[0])
    box = sandbox(cape, retries=0, breaker=breaker)
    cape.answer(CREATE, Answer(500))
    for _ in range(2):
        with pytest.raises(SandboxUnavailable, match="HTTP 500"):
            box.submit(b"x", "a.exe")
    assert breaker.state == "open" and cape.hits(CREATE) == 2
    symbol, detail = consult(box, b"x", "a.exe", FAST) or ("", "")  # refused at once: no request
    assert symbol == "SCAN_FAILED" and detail.startswith("sandbox unavailable: CAPE circuit open")
    assert cape.hits(CREATE) == 2

    now[0] += 31  # half-open: one trial; it fails, so the circuit opens again at once
    assert breaker.state == "half-open"
    with pytest.raises(SandboxUnavailable, match="HTTP 500"):
        box.submit(b"x", "a.exe")
    assert breaker.state == "open" and cape.hits(CREATE) == 3

    now[0] += 31  # the next trial succeeds: closed
    cape.answer(CREATE, Answer(fixture="create.json"))
    assert box.submit(b"x", "a.exe") == "42"
    assert breaker.state == "closed"


# --- the token, the size cap --------------------------------------------------------------------

def test_token_is_sent_as_header_and_never_logged(cape: FakeCape,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    detonation(cape, "report-malicious.json")
    box = sandbox(cape, retries=1)
    outcomes = [consult(box, b"x", "a.exe", FAST)]
    cape.answer(CREATE, Answer(503))
    outcomes.append(consult(box, b"y", "a.exe", FAST))
    cape.answer(CREATE, Answer(401, fixture="unauthorized.json"))
    outcomes.append(consult(box, b"z", "a.exe", FAST))
    assert [o[0] for o in outcomes if o] == ["SANDBOX_MALICIOUS", "SCAN_FAILED", "SCAN_FAILED"]
    assert all(h.get("Authorization") == f"Token {TOKEN}" for _, _, h, _ in cape.requests)
    assert all(TOKEN not in p for _, p, _, _ in cape.requests)  # never in a URL
    assert "CAPE request failed" in caplog.text and "CAPE verdict" in caplog.text
    records = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert TOKEN not in records and TOKEN not in caplog.text
    assert TOKEN not in repr(box) and TOKEN not in str(outcomes)


def test_no_token_no_header(cape: FakeCape) -> None:
    cape.answer(CREATE, Answer(fixture="create.json"))
    CapeSandbox(cape.url, None).submit(b"x", None)
    _, _, headers, body = cape.requests[0]
    assert "Authorization" not in headers and b'filename="sample.bin"' in body


@pytest.mark.parametrize("declare_length", [True, False])
def test_oversized_report_is_capped(cape: FakeCape, declare_length: bool) -> None:
    cape.answer(VIEW, Answer(fixture="view-reported.json"))
    huge = b'{"malscore": 0.0, "pad": "' + b"A" * 200_000 + b'"}'
    cape.answer(REPORT, Answer(body=huge, declare_length=declare_length))
    box = sandbox(cape, max_report_bytes=4096)
    with pytest.raises(CapeError, match="over the cap of 4096"):
        box.poll("42")
    assert cape.hits(REPORT) == 1  # not retried
    cape.answer(CREATE, Answer(fixture="create.json"))
    symbol, detail = consult(box, b"x", "a.exe", FAST) or ("", "")
    assert symbol == "SCAN_FAILED" and "over the cap" in detail  # never "clean" unread


def test_oversized_report_falls_back_to_the_task_views_malscore(cape: FakeCape) -> None:
    cape.answer(VIEW, Answer(fixture="view-reported-mongo.json"))
    cape.answer(REPORT, Answer(body=b'{"pad": "' + b"A" * 10_000 + b'"}'))
    answer = sandbox(cape, max_report_bytes=4096).poll("42")
    assert answer == SandboxReport("malicious", 8.2, "CAPE task 42 malscore 8.2; family Emotet")


def test_one_detonation_per_file(cape: FakeCape) -> None:
    detonation(cape, "report-malicious.json")
    box = sandbox(cape)
    first = consult(box, b"same bytes", "a.exe", FAST)
    again = consult(box, b"same bytes", "copy-for-another-recipient.exe", FAST)
    assert first == again and first is not None and first[0] == "SANDBOX_MALICIOUS"
    assert (cape.hits(CREATE), cape.hits(REPORT)) == (1, 1)
    consult(box, b"other bytes", "b.exe", FAST)
    assert cape.hits(CREATE) == 2


def test_a_failed_task_is_not_reused(cape: FakeCape) -> None:
    cape.answer(CREATE, Answer(fixture="create.json"))
    cape.answer(VIEW, Answer(fixture="view-failed-analysis.json"), Answer(fixture="view-reported.json"))
    cape.answer(REPORT, Answer(fixture="report-clean.json"))
    box = sandbox(cape)
    assert (consult(box, b"x", "a.exe", FAST) or ("",))[0] == "SCAN_FAILED"
    assert consult(box, b"x", "a.exe", FAST) is None
    assert cape.hits(CREATE) == 2


def test_hostile_filename_is_reduced_to_a_name(cape: FakeCape) -> None:
    cape.answer(CREATE, Answer(fixture="create.json"))
    sandbox(cape).submit(b"x", '..\\..\\evil"\r\nX-Injected: 1.docm')
    body = cape.requests[0][3]
    assert b'filename="evil___X-Injected: 1.docm"' in body


# --- through the scan engine and the composition root -------------------------------------------

def test_engine_with_cape_marks_a_risky_file_malicious(cape: FakeCape) -> None:
    from mailmoat.context import Verdict
    from mailmoat.scan.engine import Engine, ResultCache
    from mailmoat.scan.lists import Lists
    from mailmoat.settings import Limits

    detonation(cape, "report-malicious.json")
    engine = Engine(Limits(), sandbox=sandbox(cape), sandbox_config=FAST, cache=ResultCache())
    assert engine.analyse(b"plain text", "notes.txt", Lists()).verdict == Verdict.SAFE
    assert cape.hits(CREATE) == 0  # only risky files are detonated
    result = engine.analyse(b"MZ" + b"\0" * 100, "invoice.exe", Lists())
    assert "SANDBOX_MALICIOUS" in result.symbols and result.verdict == Verdict.DANGER
    assert cape.hits(CREATE) == 1


def test_settings_build_cape_in_the_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailmoat.bootstrap.common import sandbox as from_settings
    from mailmoat.settings import Settings

    for name in ("MAILMOAT_CAPE_URL", "MAILMOAT_CAPE_TOKEN", "MAILMOAT_CAPE_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert from_settings(Settings()) == (None, SandboxConfig())
    token = tmp_path / "cape.token"
    token.write_text(TOKEN + "\n")
    monkeypatch.setenv("MAILMOAT_CAPE_URL", "http://cape.example.invalid:8000/")
    monkeypatch.setenv("MAILMOAT_CAPE_TOKEN_FILE", str(token))
    monkeypatch.setenv("MAILMOAT_CAPE_DANGER_SCORE", "8.5")
    monkeypatch.setenv("MAILMOAT_CAPE_ANALYSIS_SECONDS", "120")
    settings = Settings()
    assert TOKEN not in repr(settings)
    box, config = from_settings(settings)
    assert isinstance(box, CapeSandbox) and box.base_url == "http://cape.example.invalid:8000/apiv2"
    assert box.danger_score == 8.5 and box._headers["Authorization"] == f"Token {TOKEN}"
    assert config == SandboxConfig(enabled=True, timeout_seconds=120.0, poll_seconds=10.0,
                                   wait_inline_seconds=5.0,  # the poll job decides the rest
                                   danger_score=8.5, suspicious_score=4.0)  # tenants' default
    # AWS has its poll job too (SandboxPollFunction): its scan stage waits only as briefly.
    assert from_settings(settings.model_copy(update={"runtime": "aws"}))[1].wait_inline_seconds == 5.0
