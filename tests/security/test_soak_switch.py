"""`make soak` must soak (issue 19, item 11): the test session's environment scrub kept
deleting MAILMOAT_SOAK, so the fault tests ran their short version and reported it as a soak."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _probe(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A test file of its own beside the fault tests (so tests/conftest.py applies to it as it does
    # to them), run in a child pytest the way `make soak` runs tests/faults: the switch is read
    # where the fault tests read it, at import, after pytest_configure.
    probe = ROOT / "tests" / "faults" / f"test_soak_probe_{uuid.uuid4().hex}.py"
    probe.write_text("from tests.faults.harness import SOAK\n"
                     "from tests.faults.test_gateway_faults import MESSAGES\n"
                     "def test_probe():\n"
                     "    print(f'SOAK={SOAK} MESSAGES={MESSAGES}')\n", encoding="utf-8")
    try:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                               "-p", "no:xdist", str(probe)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    finally:
        probe.unlink()


def test_make_soak_switch_reaches_the_fault_tests(tmp_path: Path) -> None:
    env = {**os.environ, "MAILMOAT_SOAK": "1", "MAILMOAT_CONFIG": "/nonexistent.toml"}
    result = _probe(tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SOAK=True MESSAGES=1000" in result.stdout


def test_without_the_switch_the_short_run_stays_short(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MAILMOAT_SOAK"}
    result = _probe(tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SOAK=False MESSAGES=100" in result.stdout
