"""The Sandbox port on CAPE (CAPEv2's REST API, /apiv2/): submit a file, poll its task, turn the
report's malscore into a verdict. Bounded: per-request timeouts, a few retries, a circuit
breaker, a cap on what is read (docs/sandbox.md)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import requests

from mailmoat.scan.sandbox import SandboxReport, SandboxUnavailable, SandboxVerdict

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
DEFAULT_MAX_REPORT_BYTES = 20 * 1024 * 1024
ANSWER_MAX_BYTES = 1024 * 1024  # create and view answers are small JSON
KNOWN_FILES = 1024  # SHA-256 → task remembered per process: one detonation per file
# Task states (CAPEv2 lib/cuckoo/core/data/task.py): not done yet, done, or never done.
FAILED = frozenset({"failed_analysis", "failed_processing", "failed_reporting", "banned"})
_PRINTABLE = re.compile(r"[^\w .,:;()/+@#-]")


class CapeError(Exception):
    """CAPE answered, but not with what we asked for (4xx, an `error` answer, a failed task)."""


class _Transient(Exception):
    """A failure worth another try: no connection, a timeout, 5xx or 429."""


class CircuitBreaker:
    """Closed until `failures` requests in a row fail; then open for `cooldown_seconds` (every
    call refused at once), then half-open: one trial call closes it again or re-opens it."""

    def __init__(self, failures: int = 5, cooldown_seconds: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures, self.cooldown_seconds, self._clock = failures, cooldown_seconds, clock
        self._count = 0
        self._opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "open" if self._clock() - self._opened_at < self.cooldown_seconds else "half-open"

    def before(self) -> None:
        """Raises SandboxUnavailable while open (and while a half-open trial is under way)."""
        with self._lock:
            if self._opened_at is None:
                return
            left = self.cooldown_seconds - (self._clock() - self._opened_at)
            if left > 0:
                raise SandboxUnavailable(f"CAPE circuit open for {left:.0f} s more "
                                         f"after {self._count} failures")
            if self._trial:
                raise SandboxUnavailable("CAPE circuit half-open: a trial request is under way")
            self._trial = True

    def success(self) -> None:
        with self._lock:
            self._count, self._opened_at, self._trial = 0, None, False

    def failure(self) -> None:
        with self._lock:
            self._count += 1
            if self._trial or self._count >= self.failures:
                if self._opened_at is None or self._trial:
                    log.warning("CAPE circuit opens for %g s", self.cooldown_seconds,
                                extra={"failures": self._count})
                self._opened_at, self._trial = self._clock(), False


class CapeSandbox:
    """CAPEv2's /apiv2/: POST tasks/create/file/, GET tasks/view/<id>/, GET tasks/get/report/<id>/.

    `timeout_seconds` bounds each request (connect, and the whole answer); `retries` more tries
    follow a connection error, timeout, 5xx or 429 (never another 4xx), `backoff_seconds`
    doubling. malscore above `danger_score` is malicious, at least `suspicious_score` suspicious."""

    def __init__(self, base_url: str, api_token: str | None, *, timeout_seconds: float = 30.0,
                 retries: int = 2, breaker: CircuitBreaker | None = None,
                 danger_score: float = 7.0, suspicious_score: float = 4.0,
                 session: requests.Session | None = None,
                 analysis_timeout_seconds: int | None = None, priority: int | None = None,
                 max_report_bytes: int = DEFAULT_MAX_REPORT_BYTES, backoff_seconds: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("the CAPE URL must start with http:// or https://")
        if suspicious_score > danger_score:
            raise ValueError("the CAPE suspicious score must not be above the danger score")
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/apiv2"):
            self.base_url += "/apiv2"
        self.timeout_seconds, self.retries = timeout_seconds, max(0, retries)
        self.breaker = breaker or CircuitBreaker()
        self.danger_score, self.suspicious_score = danger_score, suspicious_score
        self.analysis_timeout_seconds, self.priority = analysis_timeout_seconds, priority
        self.max_report_bytes, self.backoff_seconds = max_report_bytes, backoff_seconds
        self._sleep = sleep
        self._session = session or requests.Session()
        # The same attachment to many recipients (or again later) joins the task already made.
        self._tasks: OrderedDict[str, str] = OrderedDict()
        self._verdicts: OrderedDict[str, SandboxReport] = OrderedDict()
        self._lock = threading.Lock()
        # The token goes only into this header: never into a URL, a log line or an error text.
        self._headers = {"Accept": "application/json"}
        if api_token:
            self._headers["Authorization"] = f"Token {api_token}"

    def __repr__(self) -> str:
        return f"CapeSandbox({self.base_url!r})"

    # --- the port -----------------------------------------------------------------------------
    def submit(self, data: bytes, filename: str | None) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        with self._lock:
            known = self._tasks.get(sha256)
            if known is not None:
                self._tasks.move_to_end(sha256)
                return known
        ticket = self._create(data, filename)
        with self._lock:
            _remember(self._tasks, sha256, ticket)
        return ticket

    def poll(self, ticket: str) -> SandboxReport | None:
        with self._lock:
            known = self._verdicts.get(ticket)
        if known is not None:
            return known
        try:
            verdict = self._poll(ticket)
        except CapeError:
            self._forget(ticket)  # a failed task is not reused: the next message submits again
            raise
        if verdict is not None:
            with self._lock:
                _remember(self._verdicts, ticket, verdict)
        return verdict

    def _forget(self, ticket: str) -> None:
        with self._lock:
            for sha256 in [k for k, v in self._tasks.items() if v == ticket]:
                del self._tasks[sha256]

    def _create(self, data: bytes, filename: str | None) -> str:
        form: dict[str, str] = {}
        if self.analysis_timeout_seconds:
            form["timeout"] = str(self.analysis_timeout_seconds)
        if self.priority:
            form["priority"] = str(self.priority)
        answer = self._json("POST", "/tasks/create/file/", ANSWER_MAX_BYTES,
                            files={"file": (_safe_name(filename), data)}, data=form)
        created = answer.get("data")
        task_ids = created.get("task_ids") if isinstance(created, dict) else None
        if not isinstance(task_ids, list) or not task_ids or not isinstance(task_ids[0], int):
            raise CapeError("CAPE created no task")
        log.info("CAPE task submitted", extra={"task_id": task_ids[0], "bytes": len(data)})
        return str(task_ids[0])

    def _poll(self, ticket: str) -> SandboxReport | None:
        task_id = _task_id(ticket)
        task = self._json("GET", f"/tasks/view/{task_id}/", ANSWER_MAX_BYTES).get("data")
        if not isinstance(task, dict):
            raise CapeError(f"CAPE task {task_id}: no task in the answer")
        status = str(task.get("status", ""))
        if status in FAILED:
            errors = "; ".join(str(e) for e in task.get("errors") or [])[:120]
            raise CapeError(f"CAPE task {task_id} {status}" + (f": {errors}" if errors else ""))
        if status != "reported":
            return None  # pending, running, completed (processing), distributed …
        try:
            report = self._json("GET", f"/tasks/get/report/{task_id}/", self.max_report_bytes)
        except _TooLarge:
            if "malscore" not in task:
                raise
            # The task view carries malscore and detections when CAPE keeps results in MongoDB.
            log.warning("CAPE report over the cap; verdict from the task view",
                        extra={"task_id": task_id, "cap": self.max_report_bytes})
            report = task
        verdict = self.verdict(report, task_id)
        log.info("CAPE verdict", extra={"task_id": task_id, "verdict": verdict.verdict,
                                        "score": verdict.score})
        return verdict

    # --- score → verdict ----------------------------------------------------------------------
    def verdict(self, report: dict[str, Any], task_id: int) -> SandboxReport:
        score = report.get("malscore")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise CapeError(f"CAPE task {task_id}: the report has no malscore")
        word: SandboxVerdict = ("malicious" if score > self.danger_score else
                                "suspicious" if score >= self.suspicious_score else "clean")
        families = [str(d.get("family")) for d in report.get("detections") or []
                    if isinstance(d, dict) and d.get("family")]
        signatures = [str(s.get("name")) for s in report.get("signatures") or []
                      if isinstance(s, dict) and s.get("name")]
        parts = [f"CAPE task {task_id} malscore {float(score):g}"]
        if families:
            parts.append("family " + ", ".join(_PRINTABLE.sub("?", f)[:60] for f in families[:5]))
        if signatures:
            parts.append("signatures " + ", ".join(_PRINTABLE.sub("?", s)[:60] for s in signatures[:10]))
        return SandboxReport(word, float(score), "; ".join(parts)[:300])

    # --- HTTP ---------------------------------------------------------------------------------
    def _json(self, method: str, path: str, cap: int, **kwargs: Any) -> dict[str, Any]:
        body = self._request(method, path, cap, **kwargs)
        try:
            answer = json.loads(body)
        except ValueError:
            raise CapeError(f"CAPE {path}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise CapeError(f"CAPE {path}: the answer is not a JSON object")
        if answer.get("error") is True:  # CAPE answers its refusals with 200 and error_value
            raise CapeError(f"CAPE {path}: {str(answer.get('error_value', 'error'))[:120]}")
        return answer

    def _request(self, method: str, path: str, cap: int, **kwargs: Any) -> bytes:
        self.breaker.before()
        url = self.base_url + path
        for attempt in range(self.retries + 1):
            try:
                body = self._once(method, url, cap, **kwargs)
            except _Transient as exc:
                log.warning("CAPE request failed", extra={"path": path, "attempt": attempt + 1,
                                                          "reason": str(exc)})
                if attempt == self.retries:
                    self.breaker.failure()
                    raise SandboxUnavailable(f"CAPE {path}: {exc}") from None
                self._sleep(self.backoff_seconds * (2 ** attempt))
                continue
            except BaseException:
                self.breaker.success()  # it answered: the service is up, the request was wrong
                raise
            self.breaker.success()
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, method: str, url: str, cap: int, **kwargs: Any) -> bytes:
        started = time.monotonic()
        try:
            response = self._session.request(method, url, headers=self._headers, stream=True,
                                             timeout=self.timeout_seconds, allow_redirects=False,
                                             **kwargs)
        except requests.RequestException as exc:
            raise _Transient(type(exc).__name__) from None
        with response:
            status = response.status_code
            if status == 429 or status >= 500:
                raise _Transient(f"HTTP {status}")
            if status != 200:
                raise CapeError(f"CAPE answered HTTP {status}")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > cap:
                raise _TooLarge(f"CAPE answer of {declared} bytes is over the cap of {cap}")
            chunks: list[bytes] = []
            size = 0
            try:
                for chunk in response.iter_content(CHUNK):
                    size += len(chunk)
                    if size > cap:
                        raise _TooLarge(f"CAPE answer is over the cap of {cap} bytes")
                    if time.monotonic() - started > self.timeout_seconds:
                        raise _Transient("answer slower than the request timeout")
                    chunks.append(chunk)
            except requests.RequestException as exc:
                raise _Transient(type(exc).__name__) from None
            return b"".join(chunks)


class _TooLarge(CapeError):
    """An answer over its cap: not read further, never retried."""


def _remember(cache: OrderedDict[str, Any], key: str, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > KNOWN_FILES:
        cache.popitem(last=False)


def _task_id(ticket: str) -> int:
    if not ticket.isdigit():
        raise CapeError("not a CAPE task id")
    return int(ticket)


def _safe_name(filename: str | None) -> str:
    """The name CAPE picks its analysis package by (the extension): no path, no control chars."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c if c.isprintable() and c not in '"\r\n' else "_" for c in name).strip(". ")
    return name[-120:] or "sample.bin"
