"""The optional sandbox port: submit, poll, give up at a timeout. No built-in backend."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mailmoat.ports import Sandbox

SandboxVerdict = Literal["malicious", "suspicious", "clean"]


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Disabled by default; a deployment that has a sandbox service turns it on."""

    enabled: bool = False
    timeout_seconds: float = 300.0
    poll_seconds: float = 5.0
    # Only files the static checks already call risky are detonated (cost and latency).
    verdicts: frozenset[str] = frozenset({"risky"})


def consult(sandbox: Sandbox, data: bytes, filename: str | None, config: SandboxConfig, *,
            sleep: Callable[[float], None] = time.sleep,
            monotonic: Callable[[], float] = time.monotonic) -> tuple[str, str] | None:
    """(symbol, detail) for what the sandbox said, or None when it found nothing."""
    deadline = monotonic() + config.timeout_seconds
    try:
        ticket = sandbox.submit(data, filename)
        while True:
            verdict = sandbox.poll(ticket)
            if verdict == "malicious":
                return ("SANDBOX_MALICIOUS", ticket)
            if verdict == "suspicious":
                return ("SANDBOX_SUSPICIOUS", ticket)
            if verdict == "clean":
                return None
            if monotonic() >= deadline:
                return ("SANDBOX_TIMEOUT", f"no verdict in {config.timeout_seconds:g} s")
            sleep(config.poll_seconds)
    except Exception as exc:  # a failed sandbox is recorded, never silent
        return ("SCAN_FAILED", f"sandbox: {type(exc).__name__}: {exc}"[:200])
