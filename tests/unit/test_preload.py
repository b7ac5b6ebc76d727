"""A local worker imports what the stages load on first use before it takes mail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailmoat import preload as preload_module

ROOT = Path(__file__).resolve().parents[2]

_WORKER_START = """
import json, sys
from pathlib import Path
from mailmoat.bootstrap import bootstrap
from mailmoat.local.server import Worker
from mailmoat.settings import Settings

data = Path(sys.argv[1])
zone = data / "zone.json"
zone.write_text("{}")
runtime = bootstrap(Settings(data_dir=data, config=Path(sys.argv[2]), dns_zone=zone))
watched = ["pikepdf", "oletools.olevba", "msoffcrypto", "mailmoat.stages.scan",
           "mailmoat.stages.rewrite", "mailmoat.rewrite.body"]
before = {m: m in sys.modules for m in watched}
worker = Worker(runtime)
worker.start()
worker.stop()
from mailmoat.auth.dmarc import _psl
print(json.dumps({"before": before, "after": {m: m in sys.modules for m in watched},
                  "key": (data / "arc" / "private.pem").exists(),
                  "psl": _psl.cache_info().currsize}))
"""


def test_a_started_worker_has_imported_the_first_use_modules_and_its_key(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _WORKER_START, str(tmp_path),
                           str(ROOT / "config" / "demo.toml")],
                          capture_output=True, text=True, timeout=120, check=True)
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not any(state["before"].values()), state["before"]  # the runtime alone loads none
    assert all(state["after"].values()), state["after"]
    assert state["key"]
    assert state["psl"] == 1  # the public suffix list is parsed already


def test_a_missing_library_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    from mailmoat.settings import Settings

    monkeypatch.setattr(preload_module, "FIRST_USE_MODULES", ("json", "no_such_module_here"))
    missing = preload_module.preload(Settings(data_dir=tmp_path))
    assert missing == ["no_such_module_here"]
