"""Fixtures for the admin console tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailmoat.runtime import Runtime
from tests.unit.admin.helpers import Console, Geo, add_admin, make_runtime, open_console


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    rt = make_runtime(tmp_path)
    rt.services.geoip = Geo()
    add_admin(rt, "admin@example.test", "example.test")
    add_admin(rt, "admin@other.test", "other.test")
    return rt


@pytest.fixture
def console(runtime: Runtime) -> Console:
    return open_console(runtime)


@pytest.fixture
def signed_in(console: Console) -> Console:
    response = console.login("admin@example.test")
    assert response.status_code == 303, response.text
    return console
