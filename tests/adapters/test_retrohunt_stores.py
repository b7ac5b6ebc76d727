"""The retro-hunt's IsolationStore methods (mailmoat.retrohunt) on SQLite and on DynamoDB (moto)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mailmoat.adapters.aws_dynamodb_isolation import DynamoIsolationStore
from mailmoat.adapters.sqlite import SqliteDatabase
from mailmoat.adapters.sqlite_isolation import SqliteIsolationStore
from mailmoat.context import Verdict
from mailmoat.isolation import DownloadRecord, IsolatedFile, PortalMessage
from mailmoat.services.downloads import offer_for

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def _file(message_id: str, path: str, *, kept: bool = True, days: int = 30) -> IsolatedFile:
    return IsolatedFile(message_id=message_id, path=path, filename=f"{path}.js", size=3, sha256="00",
                        declared_type="application/javascript", detected_type="text/plain",
                        verdict=Verdict.RISKY, symbols=["DANGEROUS_EXTENSION"], action="isolate",
                        expires_at=NOW + timedelta(days=days),
                        blob_key=f"isolated/{message_id}/{path}" if kept else None)


def _round_trip(store: Any) -> None:
    def message(message_id: str) -> PortalMessage:
        return PortalMessage(id=message_id, tenant="corp", language="ja", from_header=None,
                             subject=None, date=None, mail_from=None, route=[], created_at=NOW,
                             expires_at=NOW + timedelta(days=30))

    store.save(message("m1"), [_file("m1", "2"), _file("m1", "3", kept=False)])
    store.save(message("m2"), [_file("m2", "2", days=1)])
    held = store.held_files(NOW, 10)
    assert sorted((f.message_id, f.path) for f in held) == [("m1", "2"), ("m2", "2")]
    assert [f.message_id for f in store.held_files(NOW + timedelta(days=2), 10)] == ["m1"]
    assert len(store.held_files(NOW, 1)) == 1

    store.record_download(DownloadRecord(NOW - timedelta(days=20), "m1", "2", "original", None, "old@corp.example"))
    store.record_download(DownloadRecord(NOW - timedelta(hours=1), "m1", "2", "original", None, "bob@corp.example"))
    store.record_download(DownloadRecord(NOW, "m2", "2", "opened:a.js", None, "eve@corp.example"))
    recent = store.downloaded_since(NOW - timedelta(days=14), 10)
    assert sorted(d.recipient for d in recent) == ["bob@corp.example", "eve@corp.example"]

    assert store.mark_danger("m1", "2", ["VIRUS", "RETROHUNT"])
    after = next(f for f in store.files("m1") if f.path == "2")
    assert after.verdict == Verdict.DANGER and after.blob_key is None
    assert after.symbols == ["DANGEROUS_EXTENSION", "VIRUS", "RETROHUNT"]
    assert offer_for(after).actions == ()
    assert [f.path for f in store.files("m1")] == ["2", "3"]  # the other file untouched
    assert not store.mark_danger("nope", "2", ["VIRUS"])
    assert [(f.message_id, f.path) for f in store.held_files(NOW, 10)] == [("m2", "2")]

    assert store.get_marker("state") is None
    store.put_marker("state", "av=1;yara=a", None)
    store.put_marker("state", "av=2;yara=a", None)
    assert store.get_marker("state") == "av=2;yara=a"
    store.put_marker("notified#x", "t", datetime.now(UTC) - timedelta(seconds=1))
    assert store.get_marker("notified#x") is None  # expired


def test_retrohunt_methods_on_sqlite(tmp_path: Path) -> None:
    store = SqliteIsolationStore(SqliteDatabase(tmp_path / "db.sqlite3"))
    _round_trip(store)
    store.put_marker("notified#y", "t", NOW + timedelta(days=1))
    store.delete_expired(NOW + timedelta(days=2))
    assert store.get_marker("state") is not None  # no expiry: kept


def test_retrohunt_methods_on_dynamodb(isolated_table: None) -> None:
    _round_trip(DynamoIsolationStore("isolated"))
