"""The `mailmoat process` path (scan + isolate) on a fresh result cache, for every test here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailmoat.context import Envelope
from mailmoat.scan.engine import CACHE
from mailmoat.settings import Settings

try:  # before the composition root moved to mailmoat.bootstrap (so the old commit runs these)
    from mailmoat.runtime import bootstrap  # type: ignore[attr-defined]
except ImportError:
    from mailmoat.bootstrap import bootstrap  # type: ignore[no-redef]


@pytest.fixture
def analyse(tmp_path: Path) -> Any:
    CACHE.clear()
    runtime = bootstrap(Settings(mode="test"), data_dir=tmp_path)

    def run(raw: bytes) -> dict[str, Any]:
        return runtime.analyse(raw, Envelope(), stages=["scan", "isolate"]).to_report()

    return run
