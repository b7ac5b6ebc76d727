"""Fixtures for scan tests: a fresh result cache and the `mailmoat process` path (scan + isolate)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailmoat.bootstrap import bootstrap
from mailmoat.context import Envelope
from mailmoat.runtime import Runtime
from mailmoat.scan.engine import CACHE
from mailmoat.settings import Settings


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    CACHE.clear()


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    return bootstrap(Settings(mode="test"), data_dir=tmp_path)


@pytest.fixture
def analyse(runtime: Runtime) -> Callable[..., dict[str, Any]]:
    """Run scan + isolate the way `mailmoat process` does and return the JSON report."""

    def run(raw: bytes, **kwargs: Any) -> dict[str, Any]:
        ctx = runtime.analyse(raw, Envelope(), stages=["scan", "isolate"], **kwargs)
        return ctx.to_report()

    return run
