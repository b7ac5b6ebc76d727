"""Keep-mail retention at delivery (issue 9): what is kept, its outcome, idempotence, the sweep."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from mailmoat.keepmail import blob_key, sweep
from mailmoat.ports import DeliveryError
from tests.unit.isolation.builders import EICAR_LIKE, message
from tests.unit.keepmail.helpers import deliver, maildir, make_runtime


def test_each_recipient_keeps_the_copy_they_were_sent(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    raw = message(("tool.exe", b"MZ\x90\x00" + b"\x00" * 64, "application/octet-stream"),
                  ("virus.pdf", b"%PDF-1.4\n" + EICAR_LIKE, "application/pdf"))
    message_id, ctx = deliver(runtime, raw)
    store = runtime.services.keepmail
    assert store is not None and "keepmail" in ctx.actions
    for rcpt in ("alice@example.test", "bob@example.test"):
        kept = store.get(message_id, rcpt)
        assert kept is not None and kept.kind == "delivered" and kept.tenant == "example.test"
        copy = runtime.services.blobs.get(blob_key(rcpt, message_id))
        assert copy == ctx.outputs[rcpt]  # after isolation + rewrite: the recipient's own link
        assert EICAR_LIKE not in copy and b"TVqQ" not in copy  # neither the virus nor the exe
        (delivered,) = maildir(runtime, rcpt)
        assert delivered.read_bytes().endswith(copy.replace(b"\r\n", b"\n"))
    assert (kept.kept_until - kept.received_at) == timedelta(days=14)


def test_a_rerun_keeps_the_settled_copy(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    raw = message(("tool.exe", b"MZ\x90\x00", "application/octet-stream"))
    message_id, _ctx = deliver(runtime, raw)
    first = runtime.services.blobs.get(blob_key("alice@example.test", message_id))
    runtime.runner.redrive(message_id)  # every stage again
    runtime.process_stored(message_id)
    # The link in the kept copy is still the one alice's mailbox got (and still works).
    assert runtime.services.blobs.get(blob_key("alice@example.test", message_id)) == first
    assert len(maildir(runtime, "alice@example.test")) == 1


class RefusingMailer:
    """Refuses bob for good (as a mailbox over quota or refusing an extension would) and
    defers alice until `open` is set."""

    idempotent = True

    def __init__(self) -> None:
        self.open = False
        self.sent: list[str] = []

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        if recipient == "bob@example.test":
            raise DeliveryError("552 5.3.4 message size exceeds mailbox limit", permanent=True, code=552)
        if not self.open:
            raise DeliveryError("451 4.3.0 mailbox busy", permanent=False, code=451)
        self.sent.append(recipient)
        return "relay"


def test_refused_and_pending_mail_is_kept_and_settles_on_retry(tmp_path: Path) -> None:
    mailer = RefusingMailer()
    runtime = make_runtime(tmp_path, mailer=mailer)
    message_id, _ctx = deliver(runtime, message(subject="big report"))
    store = runtime.services.keepmail
    assert store is not None
    bob = store.get(message_id, "bob@example.test")
    alice = store.get(message_id, "alice@example.test")
    assert bob is not None and bob.kind == "refused" and "552 5.3.4" in bob.outcome
    assert alice is not None and alice.kind == "pending"
    mailer.open = True
    runtime.process_stored(message_id)
    alice = store.get(message_id, "alice@example.test")
    assert alice is not None and alice.kind == "delivered"
    assert mailer.sent == ["alice@example.test"]


def test_keepmail_days_zero_keeps_nothing(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, keepmail_days=0)
    message_id, ctx = deliver(runtime, message())
    store = runtime.services.keepmail
    assert store is not None and store.get(message_id, "alice@example.test") is None
    assert "keepmail" not in ctx.actions
    assert not list(runtime.services.blobs.keys("keep/"))


def test_sweep_deletes_copies_past_the_tenants_days(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, keepmail_days=3)
    message_id, _ctx = deliver(runtime, message())
    store = runtime.services.keepmail
    assert store is not None
    now = runtime.services.clock.now()
    assert sweep(store, runtime.services.blobs, now + timedelta(days=2)) == 0
    assert sweep(store, runtime.services.blobs, now + timedelta(days=3, minutes=1)) == 2
    assert store.get(message_id, "alice@example.test") is None
    assert not list(runtime.services.blobs.keys("keep/"))


class BrokenStore:
    def get(self, message_id: str, recipient: str) -> None:
        raise OSError("database is locked")


def test_a_failing_keep_store_never_breaks_delivery(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    runtime.services.keepmail = BrokenStore()  # type: ignore[assignment]
    message_id, ctx = deliver(runtime, message())
    assert ctx.has("KEEPMAIL_FAILED")
    record = runtime.services.log.get(message_id)
    assert record is not None and record.state == "delivered"
    assert maildir(runtime, "alice@example.test")


class DefersBob:
    idempotent = True

    def __init__(self) -> None:
        self.copies: dict[str, bytes] = {}

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        if recipient == "bob@example.test" and "bob@example.test" not in self.copies:
            self.copies[recipient] = b""
            raise DeliveryError("451 4.3.0 try later", permanent=False, code=451)
        self.copies[recipient] = data
        return "relay"


def test_a_recipient_is_never_kept_with_another_recipients_copy(tmp_path: Path) -> None:
    mailer = DefersBob()
    runtime = make_runtime(tmp_path, mailer=mailer)
    message_id, _ctx = deliver(runtime, message(("tool.exe", b"MZ\x90\x00", "application/octet-stream")))
    store = runtime.services.keepmail
    # As if the process had died after delivering to alice and before keeping her copy.
    store.delete(message_id, "alice@example.test")
    runtime.services.blobs.delete(blob_key("alice@example.test", message_id))
    runtime = make_runtime(tmp_path, mailer=mailer)  # the restart: stages run again from the log
    again = runtime.process_stored(message_id)
    assert again is not None and set(again.outputs) == {"bob@example.test"}
    assert store.get(message_id, "alice@example.test") is None
    bob = store.get(message_id, "bob@example.test")
    assert bob is not None and bob.kind == "delivered"
    assert runtime.services.blobs.get(bob.blob_key) == mailer.copies["bob@example.test"]


def test_spam_quarantined_recipients_are_not_kept(tmp_path: Path) -> None:
    from mailmoat.context import Envelope, MessageContext
    from mailmoat.keepmail import retain

    runtime = make_runtime(tmp_path)
    raw = message(subject="cheap pills")
    ctx = MessageContext(id="20261127T100000Z-00000000000000aa", raw=raw, tenant="example.test",
                         envelope=Envelope(rcpt_to=["alice@example.test", "bob@example.test"]))
    ctx.output = raw
    ctx.deliveries = {"alice@example.test": "quarantined: spam", "bob@example.test": "delivered: relay"}
    retain(ctx, runtime.services)
    store = runtime.services.keepmail
    assert store.get(ctx.id, "alice@example.test") is None
    assert store.get(ctx.id, "bob@example.test") is not None
