"""deploy/mailmoat.service: its own user, the data dir, restart on failure, hardening (issue 18,
item 4); `systemd-analyze verify` when the machine has it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "mailmoat.service"


def _parse(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: [Section], Key=Value, a key may repeat; # and ; start comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not Key=Value: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_runs_as_its_own_user_with_the_data_dir_and_hardening() -> None:
    unit = _parse(UNIT.read_text())
    service = unit["Service"]
    assert service["User"] == ["mailmoat"]
    assert service["Restart"] == ["on-failure"]
    assert "MAILMOAT_DATA_DIR=/var/lib/mailmoat" in service["Environment"]
    assert service["ExecStart"][0].endswith("mailmoat serve")
    assert service["ProtectSystem"] == ["strict"]
    assert "/var/lib/mailmoat" in service["ReadWritePaths"]
    for switch in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert service[switch] == ["yes"], switch
    assert service["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    # verify checks that ExecStart exists: point it at a stand-in so only the unit is judged.
    copy = tmp_path / "mailmoat.service"
    copy.write_text(UNIT.read_text().replace("/opt/mailmoat/.venv/bin/mailmoat", "/bin/true"))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [line for line in done.stderr.splitlines() if "mailmoat.service" in line]
    assert done.returncode == 0 and not problems, done.stderr
