"""Local adapters against the real thing: files, SQLite, Maildir, DNS zone files."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailmoat.adapters.dns import ZoneFileResolver
from mailmoat.adapters.fs import FsBlobStore
from mailmoat.adapters.maildir import MaildirMailer
from mailmoat.adapters.sqlite import SqliteDatabase, SqliteDirectory, SqliteMessageLog
from mailmoat.ports import DnsTimeout, MessageRecord, NoData, NXDomain, Recipient


def test_blob_store_round_trip_and_refuses_escapes(tmp_path) -> None:
    store = FsBlobStore(tmp_path / "blobs")
    store.put("raw/abc", b"data")
    assert store.get("raw/abc") == b"data" and store.exists("raw/abc")
    assert list(store.keys("raw/")) == ["raw/abc"]
    assert not list((tmp_path / "blobs" / "raw").glob(".*.tmp"))  # no temp file left behind
    for bad in ("../x", "raw/../../x", "", "a/\x00"):
        with pytest.raises(ValueError):
            store.put(bad, b"x")
    store.delete("raw/abc")
    assert not store.exists("raw/abc")


def test_blob_store_fsyncs_only_when_durability_is_promised(tmp_path, monkeypatch) -> None:
    import os

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    store = FsBlobStore(tmp_path / "blobs")
    store.put("raw/a", b"data")
    assert len(synced) == 2  # the file, then its directory (the rename)
    scratch = store.scratch()
    assert scratch.scratch() is scratch and store.scratch() is scratch
    scratch.put("isolated/b", b"more")
    assert len(synced) == 2 and store.get("isolated/b") == b"more"  # same tree, no fsync
    assert not list((tmp_path / "blobs" / "isolated").glob(".*.tmp"))


def test_message_log_survives_reopen_and_lists_unfinished(tmp_path) -> None:
    db_path = tmp_path / "m.sqlite3"
    log = SqliteMessageLog(SqliteDatabase(db_path))
    now = datetime.now(UTC)
    log.accept(MessageRecord(id="m1", received_at=now, state="accepted", rcpt_to=["a@x.test"]))
    log.accept(MessageRecord(id="m2", received_at=now, state="accepted", rcpt_to=["b@x.test"]))
    log.update("m2", state="delivered", disposition="deliver", timings={"scan": 1.5},
               message_id="<hdr@x>")
    reopened = SqliteMessageLog(SqliteDatabase(db_path))
    assert [r.id for r in reopened.unfinished()] == ["m1"]
    m2 = reopened.get("m2")
    assert m2 is not None and m2.state == "delivered" and m2.timings == {"scan": 1.5}
    assert m2.message_id == "<hdr@x>"
    with pytest.raises(ValueError):
        reopened.update("m1", **{"state = 'x'; --": 1})


def test_delivery_bookkeeping_is_per_recipient(tmp_path) -> None:
    log = SqliteMessageLog(SqliteDatabase(tmp_path / "m.sqlite3"))
    assert log.claim_delivery("m1", "A@x.test") is True
    assert log.claim_delivery("m1", "a@x.test") is False
    assert log.delivery_outcome("m1", "a@x.test") is None
    log.finish_delivery("m1", "a@x.test", "delivered: here")
    assert log.delivery_outcome("m1", "A@X.TEST") == "delivered: here"
    assert log.delivery_outcome("m1", "b@x.test") is None


def test_directory(tmp_path) -> None:
    d = SqliteDirectory(SqliteDatabase(tmp_path / "d.sqlite3"))
    d.ensure_tenant("t1", ["Example.TEST"])
    assert d.tenant_for_domain("example.test") == "t1"
    d.upsert_recipients([Recipient("alice@example.test", "t1", name="Alice")])
    assert d.recipient("ALICE@example.test").name == "Alice"
    d.replace_recipients("t1", [Recipient("bob@example.test", "t1")])
    assert [r.address for r in d.recipients("t1")] == ["bob@example.test"]


def test_maildir_delivery_is_exactly_once_per_message_and_recipient(tmp_path) -> None:
    mailer = MaildirMailer(tmp_path / "maildir")
    first = mailer.deliver("id1", "alice@example.test", "s@x.test", b"Subject: a\r\n\r\nbody\r\n")
    again = mailer.deliver("id1", "alice@example.test", "s@x.test", b"Subject: a\r\n\r\nbody\r\n")
    other = mailer.deliver("id1", "bob@example.test", "s@x.test", b"Subject: a\r\n\r\nbody\r\n")
    assert first == again != other
    new = list((tmp_path / "maildir" / "example.test" / "alice" / "new").iterdir())
    assert len(new) == 1
    text = new[0].read_bytes()
    assert text.startswith(b"Return-Path: <s@x.test>\nDelivered-To: alice@example.test\n")
    assert b"\r\n" not in text
    assert not list((tmp_path / "maildir" / "example.test" / "alice" / "tmp").iterdir())


def test_maildir_refuses_traversal(tmp_path) -> None:
    from mailmoat.ports import DeliveryError

    with pytest.raises(DeliveryError):
        MaildirMailer(tmp_path).deliver("id", "../../etc@x", None, b"x")


ZONE = {
    "example.com": {"TXT": ["v=spf1 -all"], "A": ["192.0.2.1"], "MX": ["10 mx.example.com"]},
    "slow.example": {"A": ["192.0.2.2"], "TXT": "TIMEOUT"},
    "allslow.example": {"A": ["192.0.2.3"], "*": "TIMEOUT"},
}


@pytest.mark.parametrize(("name", "rdtype", "outcome"), [
    ("example.com", "TXT", ["v=spf1 -all"]),
    ("EXAMPLE.com.", "MX", ["10 mx.example.com"]),
    ("missing.example", "A", NXDomain),
    ("example.com", "AAAA", NoData),
    ("slow.example", "TXT", DnsTimeout),
    ("slow.example", "A", ["192.0.2.2"]),
    ("slow.example", "MX", NoData),
    ("allslow.example", "MX", DnsTimeout),
    ("allslow.example", "A", ["192.0.2.3"]),
])
def test_zone_file_semantics(name, rdtype, outcome) -> None:
    resolver = ZoneFileResolver(ZONE)
    if isinstance(outcome, list):
        assert resolver.query(name, rdtype) == outcome
    else:
        with pytest.raises(outcome):
            resolver.query(name, rdtype)


def test_overlay_answers_listed_names_from_the_zone_and_the_rest_from_the_fallback() -> None:
    from mailmoat.adapters.dns import OverlayResolver, ZoneFileResolver
    from mailmoat.ports import NoData, NXDomain

    asked: list[tuple[str, str]] = []

    class Live:
        def query(self, name: str, rdtype: str) -> list[str]:
            asked.append((name, rdtype))
            if name == "gone.example":
                raise NXDomain(name)
            return ["v=spf1 include:live.example ~all"]

    overlay = OverlayResolver(ZoneFileResolver({"example.com": {"TXT": ["v=spf1 -all"]}}), Live())
    assert overlay.query("Example.COM.", "TXT") == ["v=spf1 -all"]
    with pytest.raises(NoData):  # a listed name keeps the zone's meaning: no MX there
        overlay.query("example.com", "MX")
    assert overlay.query("mail.example.org", "TXT") == ["v=spf1 include:live.example ~all"]
    with pytest.raises(NXDomain):
        overlay.query("gone.example", "A")
    assert asked == [("mail.example.org", "TXT"), ("gone.example", "A")]


def test_make_run_uses_the_demo_zone_over_live_dns(tmp_path) -> None:
    from mailmoat.adapters.dns import OverlayResolver
    from mailmoat.bootstrap.common import resolver as make_resolver
    from tests.conftest import ROOT, make_settings

    settings = make_settings(tmp_path, dns_zone=ROOT / "config" / "demo-zone.json", dns_zone_overlay=True)
    resolver = make_resolver(settings)
    assert isinstance(resolver, OverlayResolver)
    assert resolver.query("example.com", "TXT") == ["v=spf1 -all"]  # as example.com really publishes
    assert "ip4:127.0.0.1" in resolver.query("sender.example", "TXT")[0]
