"""A restart charges an attempt only to the stage that was running (make soak's finding).

The row used to keep naming the stage a message had *finished* until the next one began, so
every message waiting in the queue at a crash was resumed at a finished stage and charged an
attempt of it; three restarts held the whole queue as poison (239 of 300 in `make soak`)."""

from __future__ import annotations

from pathlib import Path

from mailmoat.bootstrap import bootstrap
from mailmoat.context import Envelope
from mailmoat.runner import STAGE_NAMES
from tests.conftest import make_settings

RAW = (b"From: a@sender.example\r\nTo: alice@example.test\r\nSubject: waiting\r\n"
       b"Message-ID: <w1@sender.example>\r\n\r\nhello\r\n")


def test_messages_waiting_at_a_crash_are_not_charged_and_are_not_held(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    runtime = bootstrap(settings)
    message_id = runtime.accept(RAW, Envelope(client_ip="192.0.2.1", helo="h", mail_from="a@sender.example",
                                              rcpt_to=["alice@example.test"]))
    assert runtime.inbox is not None
    ref = runtime.inbox.take(0.0, message=message_id, due_only=False)
    assert ref is not None and ref.stage == STAGE_NAMES[0]
    runtime.runner.step(ref)  # the first stage ran and handed on; the next waits in the queue
    for _ in range(settings.stage_max_attempts + 2):  # then the process dies, again and again
        runtime = bootstrap(settings)  # a new process: the in-process queue and ledger are gone
        assert runtime.recover() == 1
        record = runtime.services.log.get(message_id)
        assert record is not None
        assert (record.stage, record.attempts, record.state) == (STAGE_NAMES[1], 0, "processing")
    runtime.process_stored(message_id)
    record = runtime.services.log.get(message_id)
    assert record is not None and record.state == "delivered", record.error


def test_a_stage_interrupted_every_time_is_still_held_as_poison(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    runtime = bootstrap(settings)
    message_id = runtime.accept(RAW, Envelope(client_ip="192.0.2.1", helo="h", mail_from="a@sender.example",
                                              rcpt_to=["alice@example.test"]))
    for _ in range(settings.stage_max_attempts):
        # The stage begins (its attempt is counted) and the process dies before it finishes.
        runtime.services.log.begin_attempt(message_id, STAGE_NAMES[0])
        runtime = bootstrap(settings)
        runtime.recover()
    runtime.process_stored(message_id)
    record = runtime.services.log.get(message_id)
    assert record is not None and record.state == "held"
    assert "did not complete" in (record.error or "")
