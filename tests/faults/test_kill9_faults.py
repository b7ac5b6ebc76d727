"""`mailmoat serve` killed with SIGKILL at random points while mail comes in and goes out to a
flaky smarthost, then restarted: every accepted message still ends delivered, held, quarantined
or failed exactly once, and the log accounts for every copy the smarthost holds.

Short: 40 messages, a few kills. `MAILMOAT_SOAK=1`: 300 messages, a kill every few seconds.
Each runs with the stages in the SMTP process (MAILMOAT_WORKERS=1) and in two worker processes,
where a kill hits either the whole gateway or one worker (which the gateway starts again)."""

from __future__ import annotations

import os
import random
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.faults.harness import (
    FINAL,
    SOAK,
    Sent,
    Smarthost,
    SmarthostPlan,
    account,
    check_every_message_accounted,
    dns_zone,
    make_message,
    send_with_retries,
    serve_env,
    smtp_config,
)

MESSAGES = 300 if SOAK else 40
SEND_GAP = 0.1 if SOAK else 0.0  # seconds between messages


class Serve:
    """A `mailmoat serve` process that can be killed and started again on the same ports."""

    def __init__(self, env: dict[str, str], smtp_port: int, log: Path) -> None:
        self.env, self.smtp_port, self.log = env, smtp_port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.worker_kills = 0

    def start(self) -> None:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "mailmoat.local.cli", "serve"], cwd=ROOT,
                                     env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: "
                                     f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=2) as smtp:
                    smtp.noop()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("serve did not start listening")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # by pid, the only process we started
            self.proc.wait(timeout=10)
            self.kills += 1

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def worker_pids(self) -> list[int]:
        """The worker processes this serve started (not multiprocessing's resource tracker)."""
        if self.proc is None:
            return []
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                try:
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"spawn_main" in cmdline:
                    pids.append(int(child))
        return pids

    def kill_worker(self, rng: random.Random) -> bool:
        pids = self.worker_pids()
        if not pids:
            return False
        os.kill(rng.choice(pids), signal.SIGKILL)  # a child of the serve we started, by pid
        self.kills += 1
        self.worker_kills += 1
        return True


def _unfinished(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db, timeout=10)
    try:
        placeholders = ",".join("?" for _ in FINAL)
        return int(conn.execute(f"SELECT count(*) FROM messages WHERE state NOT IN ({placeholders})",
                                sorted(FINAL)).fetchone()[0])
    finally:
        conn.close()


def _setup(tmp_path: Path, plan: SmarthostPlan, workers: str) -> tuple[Smarthost, Serve, Path]:
    smarthost_port, smtp_port = free_port(), free_port()
    data_dir = tmp_path / "var"
    env = serve_env(data_dir, smtp_config(tmp_path, smarthost_port), dns_zone(tmp_path), smtp_port,
                    free_port(), MAILMOAT_DELIVERY_RETRY_BASE_SECONDS="0.2",
                    MAILMOAT_DELIVERY_MAX_ATTEMPTS="12", MAILMOAT_WORKERS=workers)
    return Smarthost(smarthost_port, plan), Serve(env, smtp_port, tmp_path / "serve.log"), data_dir


def _kill(serve: Serve, rng: random.Random, workers: str) -> None:
    """The whole gateway (then started again), or with worker processes every other time one
    worker (the gateway starts it again itself)."""
    if workers != "1" and rng.random() < 0.5 and serve.kill_worker(rng):
        return
    serve.kill()
    serve.start()


@pytest.mark.slow
@pytest.mark.timeout(3600 if SOAK else 300)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_random_sigkill_and_restart_loses_and_duplicates_nothing(tmp_path: Path, workers: str) -> None:
    plan = SmarthostPlan(seed=4, p_permanent=0.05, p_451=0.15, p_disconnect=0.05, p_452=0.0)
    smarthost, serve, data_dir = _setup(tmp_path, plan, workers)
    rng = random.Random(19)
    corpus = [make_message(n, rng) for n in range(MESSAGES)]
    sent = Sent()
    done = threading.Event()

    def sender() -> None:
        try:
            for n, (mail_from, rcpts, raw) in enumerate(corpus):
                send_with_retries(serve.smtp_port, n, mail_from, rcpts, raw, sent, attempts=400, pause=0.05)
                # The soak spreads its mail over the kills: with two worker processes 300
                # messages go through in a few seconds, fewer than the kills it promises.
                time.sleep(SEND_GAP)
        finally:
            done.set()

    with smarthost:
        serve.start()
        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        killer = random.Random(23)
        while not done.is_set():
            time.sleep(killer.uniform(0.3, 2.5))  # at random points: SMTP, pipeline, delivery
            _kill(serve, killer, workers)
        thread.join(timeout=60)
        # Keep killing while the pipeline and the deliveries (retries included) are at work.
        for _ in range(30 if SOAK else 4):
            if not _unfinished(data_dir / "mailmoat.sqlite3"):
                break
            time.sleep(killer.uniform(0.2, 1.5))
            _kill(serve, killer, workers)
        deadline = time.monotonic() + (1200 if SOAK else 150)
        while time.monotonic() < deadline and _unfinished(data_dir / "mailmoat.sqlite3"):
            time.sleep(0.3)
        serve.kill()
        receipts = smarthost.receipts

    assert serve.kills >= (10 if SOAK else 3)
    if workers != "1":
        assert serve.worker_kills >= 1 and serve.kills > serve.worker_kills
    assert not sent.given_up
    assert len(sent.accepted) == MESSAGES
    acc = account(data_dir / "mailmoat.sqlite3", receipts)
    print(f"kill -9: {serve.kills} kills ({serve.worker_kills} of a worker), {MESSAGES} messages, "
          f"workers={workers}")
    check_every_message_accounted(acc, set(sent.accepted.values()), data_dir / "blobs")
    assert acc.states["delivered"] > MESSAGES // 3


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_kill_between_the_smarthosts_250_and_the_bookkeeping_does_not_send_twice(
        tmp_path: Path, workers: str) -> None:
    plan = SmarthostPlan(p_permanent=0.0, p_451=0.0, p_disconnect=0.0, p_452=0.0)
    smarthost, serve, data_dir = _setup(tmp_path, plan, workers)
    killed = threading.Event()

    def kill_once(_gid: str) -> None:
        # The host has the message and is about to say 250; the sender dies before hearing it:
        # the gateway, or (worker processes) the worker that sends; the gateway restarts it.
        if not killed.is_set():
            killed.set()
            pids = serve.worker_pids() if workers != "1" else [serve.pid()]
            for pid in pids:
                if pid:
                    os.kill(pid, signal.SIGKILL)

    smarthost.handler.on_receipt = kill_once
    rng = random.Random(3)
    mail_from, _, raw = make_message(0, rng)
    with smarthost:
        serve.start()
        sent = Sent()
        send_with_retries(serve.smtp_port, 0, mail_from, ["alice@example.test"], raw, sent)
        assert killed.wait(30)
        assert serve.proc is not None
        if workers == "1":
            serve.proc.wait(timeout=10)
            serve.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _unfinished(data_dir / "mailmoat.sqlite3"):
            time.sleep(0.2)
        serve.kill()
        receipts = smarthost.receipts
    if workers != "1":
        assert b"exited" in serve.log.read_bytes()  # the sending worker died, and was replaced
    acc = account(data_dir / "mailmoat.sqlite3", receipts)
    assert sum(acc.receipts.values()) == 1, acc.receipts
    check_every_message_accounted(acc, set(sent.accepted.values()), data_dir / "blobs")
