"""The SQLite message log shared by processes (`mailmoat serve` with worker processes): claims
and attempt counts stay atomic when two processes race on the same rows of a real database."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailmoat.adapters.sqlite import SqliteDatabase, SqliteMessageLog
from mailmoat.ports import MessageRecord
from mailmoat.states import MessageState
from tests.conftest import ROOT

KEYS = 60

_RACER = """
import json, sys, time
from pathlib import Path
from mailmoat.adapters.sqlite import SqliteDatabase, SqliteMessageLog
db_path, go, keys = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
log = SqliteMessageLog(SqliteDatabase(db_path))
while not go.exists():
    time.sleep(0.001)
won = [k for k in range(keys) if log.claim_delivery(f"m{k}", "alice@example.test")]
attempts = [log.begin_attempt("shared", "deliver") for _ in range(keys)]
print(json.dumps({"won": won, "attempts": attempts}))
"""


def _race(tmp_path: Path, processes: int = 2) -> list[dict[str, list[int]]]:
    db_path, go = tmp_path / "mailmoat.sqlite3", tmp_path / "go"
    log = SqliteMessageLog(SqliteDatabase(db_path))
    log.accept(MessageRecord(id="shared", received_at=datetime.now(UTC), state=MessageState.ACCEPTED,
                             mail_from="s@sender.example", rcpt_to=["alice@example.test"],
                             client_ip=None, helo=None, tenant="example", size=1))
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(db_path), str(go), str(KEYS)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for _ in range(processes)]
    time.sleep(1.0)  # both imported and waiting
    go.touch()
    out = []
    for racer in racers:
        stdout, stderr = racer.communicate(timeout=120)
        assert racer.returncode == 0, stderr.decode(errors="replace")[-2000:]
        out.append(json.loads(stdout))
    return out


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_processes_never_win_the_same_delivery_claim(tmp_path: Path) -> None:
    first, second = _race(tmp_path)
    assert not set(first["won"]) & set(second["won"])
    assert sorted(first["won"] + second["won"]) == list(range(KEYS))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_attempt_counts_from_two_processes_add_up(tmp_path: Path) -> None:
    first, second = _race(tmp_path)
    counts = first["attempts"] + second["attempts"]
    assert sorted(counts) == list(range(1, 2 * KEYS + 1))  # every increment seen exactly once
    log = SqliteMessageLog(SqliteDatabase(tmp_path / "mailmoat.sqlite3"))
    record = log.get("shared")
    assert record is not None and record.attempts == 2 * KEYS


def test_the_database_waits_for_another_writer_instead_of_failing(tmp_path: Path) -> None:
    import sqlite3

    db = SqliteDatabase(tmp_path / "mailmoat.sqlite3")
    timeout = db.query("PRAGMA busy_timeout")[0][0]
    assert timeout >= 10_000
    other = sqlite3.connect(tmp_path / "mailmoat.sqlite3", isolation_level=None,
                            check_same_thread=False)
    log = SqliteMessageLog(db)
    other.execute("BEGIN IMMEDIATE")  # a writer that does not take the lock file (the shell)
    started = time.monotonic()
    import threading

    threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
    log.claim_delivery("m", "alice@example.test")  # waits for the other's commit
    assert time.monotonic() - started >= 0.4
    other.close()
