"""`make bench-peers`' rspamd configs, as rspamd itself reads them (rspamadm, no daemon): the
issue's setup leaves SPF/DKIM/DMARC/ARC off; the same-work peer turns them on and signs ARC."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from bench import rspamd_server

pytestmark = pytest.mark.skipif(shutil.which("rspamadm") is None,
                                reason="rspamd is not installed (make bench-peers installs it)")


def _modules(tmp_path: Path, *, same_work: bool) -> tuple[set[str], set[str]]:
    conf = tmp_path / "local"
    rspamd_server.RspamdServer(same_work=same_work, resolver=False)._write_config(conf)
    out = subprocess.run(["rspamadm", f"--var=LOCAL_CONFDIR={conf}", "configdump", "-m", "-c",
                          "/etc/rspamd/rspamd.conf"], capture_output=True, text=True, timeout=60,
                         check=True).stdout

    def listed(label: str) -> set[str]:
        match = re.search(rf"^{re.escape(label)}: (.*)$", out, re.M)
        assert match, out
        return {m.strip() for m in match.group(1).split(",") if m.strip()}

    return listed("Modules enabled"), listed("Modules disabled (explicitly)")


def test_the_issue_setup_leaves_authentication_off(tmp_path: Path) -> None:
    enabled, disabled = _modules(tmp_path, same_work=False)
    assert set(rspamd_server.SAME_WORK_MODULES) <= disabled
    assert not set(rspamd_server.SAME_WORK_MODULES) & enabled


def test_the_same_work_peer_authenticates_and_signs_arc(tmp_path: Path) -> None:
    enabled, disabled = _modules(tmp_path, same_work=True)
    assert set(rspamd_server.SAME_WORK_MODULES) <= enabled
    assert "dkim_signing" in disabled  # we seal with ARC only; so does the peer
    arc = (tmp_path / "local" / "override.d" / "arc.conf").read_text()
    assert "sign_inbound = true;" in arc
    key = re.search(r'path = "([^"]+)";', arc)
    assert key and b"BEGIN RSA PRIVATE KEY" in Path(key.group(1)).read_bytes()
