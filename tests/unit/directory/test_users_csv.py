"""Recipients CSV with the aliases and kind columns (at the end, so older files stay valid)."""

from __future__ import annotations

from mailmoat.local.users import COLUMNS, export_csv, import_csv
from mailmoat.ports import Recipient
from tests.unit.directory.helpers import m365_tenant, sqlite_directory


def directory_with_tenant(tmp_path):
    return sqlite_directory(tmp_path, m365_tenant())


def test_the_column_order_keeps_the_products_and_adds_at_the_end() -> None:
    assert COLUMNS[:7] == ("address", "name", "organisation", "department", "title", "memo", "spam_filter")
    assert COLUMNS[7:] == ("aliases", "kind")


def test_aliases_and_kind_import_and_export(tmp_path) -> None:
    directory = directory_with_tenant(tmp_path)
    data = ("address,name,organisation,department,title,memo,spam_filter,aliases,kind\r\n"
            "sales@corp.example,営業部,Corp KK,,,,on,eigyo@corp.example; Vertrieb@corp.example,メーリングリスト\r\n"
            "info@corp.example,Info,,,,,off,,shared\r\n").encode("cp932")
    result = import_csv(directory, data)
    assert result.errors == [] and result.added == ["sales@corp.example", "info@corp.example"]
    sales = directory.recipient("vertrieb@corp.example")
    assert (sales.address, sales.kind, sales.source, sales.aliases) == (
        "sales@corp.example", "list", "csv", ["eigyo@corp.example", "vertrieb@corp.example"])
    exported = export_csv(directory, "corp")
    assert "sales@corp.example,営業部,Corp KK,,,,on,eigyo@corp.example vertrieb@corp.example,list" in exported
    assert "info@corp.example,Info,,,,,off,,shared" in exported
    again = import_csv(directory, exported.encode("utf-8-sig"))  # an export imports back unchanged
    assert again.errors == [] and again.changed == [] and len(again.unchanged) == 2


def test_a_file_without_the_new_columns_keeps_aliases_kind_and_owner(tmp_path) -> None:
    directory = directory_with_tenant(tmp_path)
    directory.upsert_recipients([Recipient("sales@corp.example", "corp", kind="group", aliases=["eigyo@corp.example"],
                                           source="m365", external_id="g1")])
    result = import_csv(directory, b"sales@corp.example,Sales (renamed),Corp KK,,,,off\n")
    assert result.changed == ["sales@corp.example"]
    sales = directory.recipient("eigyo@corp.example")
    assert (sales.name, sales.spam_filter, sales.kind, sales.aliases, sales.source, sales.external_id) == (
        "Sales (renamed)", False, "group", ["eigyo@corp.example"], "m365", "g1")
    # An empty aliases cell, present, clears them.
    import_csv(directory, b"sales@corp.example,Sales,,,,,on,,group\n")
    assert directory.recipient("eigyo@corp.example") is None


def test_bad_aliases_and_kinds_are_reported_by_line_and_nothing_is_imported(tmp_path) -> None:
    directory = directory_with_tenant(tmp_path)
    directory.upsert_recipients([Recipient("bob@corp.example", "corp", aliases=["robert@corp.example"])])
    data = (b"ok@corp.example,OK\n"
            b"a@corp.example,A,,,,,on,a2@elsewhere.example\n"
            b"b@corp.example,B,,,,,on,,robot\n"
            b"c@corp.example,C,,,,,on,robert@corp.example\n"
            b"d@corp.example,D,,,,,on,ok@corp.example\n")
    result = import_csv(directory, data)
    assert [e.split(":")[0] for e in result.errors] == ["line 2", "line 3", "line 4", "line 5"]
    assert any("robert@corp.example already belongs to bob@corp.example" in e for e in result.errors)
    assert any("ok@corp.example repeats line 1" in e for e in result.errors)
    assert directory.recipient("ok@corp.example") is None


def test_replace_leaves_rows_a_directory_sync_manages(tmp_path) -> None:
    directory = directory_with_tenant(tmp_path)
    directory.upsert_recipients([Recipient("synced@corp.example", "corp", source="m365", external_id="u1"),
                                 Recipient("old@corp.example", "corp", source="csv")])
    result = import_csv(directory, b"new@corp.example,New\n", replace=True)
    assert result.removed == ["old@corp.example"]
    assert [r.address for r in directory.recipients("corp")] == ["new@corp.example", "synced@corp.example"]


def test_an_alias_can_move_between_rows_of_the_same_file(tmp_path) -> None:
    directory = directory_with_tenant(tmp_path)
    directory.upsert_recipients([Recipient("bob@corp.example", "corp", aliases=["desk@corp.example"])])
    result = import_csv(directory, b"bob@corp.example,Bob,,,,,on,\ncarol@corp.example,Carol,,,,,on,desk@corp.example\n")
    assert result.errors == []
    assert directory.recipient("desk@corp.example").address == "carol@corp.example"
    clash = import_csv(directory, b"desk@corp.example,Desk\n")
    assert clash.errors == ["line 1: desk@corp.example is an alias of carol@corp.example"]
