"""`mailmoat serve` across cores: the SMTP process accepts and stores, N worker processes run the
stages, each message (and the messages split from it) always in the same one.

Why partitions and not one shared queue: a message belongs to worker `crc32(root id) % N` for
as long as this gateway runs, so no two processes ever run one message at once. That keeps what
the single-process gateway relies on true across processes: the in-memory stage ledger and
state store of the worker that owns a message are the only ones that know it, and a delivery
claim without an outcome can only have been left by a run that is gone (`claim_is_stale`).
Everything the processes share is in SQLite (transactions, WAL) and the blob directory.

Crash safety: the message log is the queue of record. A worker that dies is started again
and queues every unfinished message of its partition again (as `serve` does at start); a hand-
off written into a dead worker's pipe is lost with it and found the same way. Workers die with
the SMTP process (PR_SET_PDEATHSIG, and end of file on their pipe), and a new gateway waits
until every worker of the previous one is gone (each holds a shared lock on
`<data dir>/workers.lock`) before its own start recovering.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailmoat.ports import StageRef

if TYPE_CHECKING:
    from mailmoat.settings import Settings

log = logging.getLogger("mailmoat.workers")

WORKERS_ENV = "MAILMOAT_WORKERS"  # read here until Settings has the field
MAX_WORKERS = 64
LOCK_NAME = "workers.lock"
PREVIOUS_WORKERS_WAIT_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


def configured_workers(environ: dict[str, str] | None = None) -> int:
    """MAILMOAT_WORKERS, default the core count; 1 runs the stages in the SMTP process."""
    value = (environ if environ is not None else os.environ).get(WORKERS_ENV, "").strip()
    if not value:
        return max(1, min(os.cpu_count() or 1, MAX_WORKERS))
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{WORKERS_ENV} must be a whole number, not {value!r:.20}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(f"{WORKERS_ENV} must be between 1 and {MAX_WORKERS}")
    return count


def partition(message_id: str, count: int) -> int:
    """The worker a message belongs to; `<id>.<n>` (one tenant's share) goes with `<id>`."""
    root = message_id.split(".", 1)[0]
    return zlib.crc32(root.encode("utf-8", "surrogateescape")) % count


# --- the worker process ---------------------------------------------------------------------------

def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the thread that started it (the pool's monitor) goes: an
    orphan must never run a message the next gateway's workers run too."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # gone before the prctl took hold
        os._exit(1)


def worker_main(index: int, count: int, settings: Settings, inbox: Connection, parent_pid: int) -> None:
    """One worker process: its own composition root, the stages of its partition."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the gateway, which stops us
    # So does systemd's stop, which signals every process of the unit: a worker that died of it
    # would drop the stage it is running instead of finishing it (mailmoat.local.shutdown).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING,
                        format=f"%(asctime)s %(levelname)s %(name)s[worker {index}] %(message)s")
    lock = open(settings.data_dir / LOCK_NAME, "a+b")  # noqa: SIM115  (held until we exit)
    fcntl.flock(lock, fcntl.LOCK_SH)
    from mailmoat.bootstrap import bootstrap
    from mailmoat.local.server import Worker

    runtime = bootstrap(settings)
    worker = Worker(runtime, owns=lambda message_id: partition(message_id, count) == index)
    worker.start()  # its partition's unfinished messages first
    try:
        inbox.send("ready")
        while True:
            try:
                item = inbox.recv()
            except (EOFError, OSError):
                break  # the SMTP process is gone
            if item is None:
                break  # stop
            message_id, stage, delay, recipients, raw_key = item
            worker.inbox.send(StageRef(message_id, stage, tuple(recipients), raw_key),
                              delay_seconds=delay)
    finally:
        worker.stop(grace=settings.shutdown_grace_seconds)
        lock.close()


# --- the pool, in the SMTP process ------------------------------------------------------------------

def wait_for_previous_workers(data_dir: Path, timeout: float = PREVIOUS_WORKERS_WAIT_SECONDS) -> None:
    """Block until no worker of an earlier gateway on this data directory is alive."""
    data_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(data_dir / LOCK_NAME, "a+b") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError("workers of an earlier gateway on this data directory are "
                                       "still running; stop them first") from None
                time.sleep(0.05)
                continue
            fcntl.flock(lock, fcntl.LOCK_UN)
            return


@dataclass
class _Slot:
    process: BaseProcess
    conn: Connection


@dataclass
class WorkerPool:
    """N worker processes and the hand-off to them: a StageQueue for the accepting runner.
    `send` never raises: the message is stored before it is handed on, and a hand-off that
    does not arrive is recovered from the message log by the worker's successor."""

    settings: Settings
    count: int
    started: int = 0  # worker processes started, restarts included
    _slots: dict[int, _Slot] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _monitor: threading.Thread | None = None
    _context: Any = field(default_factory=lambda: multiprocessing.get_context("spawn"))

    def start(self) -> None:
        wait_for_previous_workers(self.settings.data_dir)
        # The monitor starts every worker, restarts included: PR_SET_PDEATHSIG follows the
        # thread that forked, and this one lives as long as the pool.
        self._monitor = threading.Thread(target=self._watch, name="mailmoat-workers", daemon=True)
        self._monitor.start()
        if not self._ready.wait(60):
            raise RuntimeError("worker processes did not start")

    def send(self, ref: StageRef, delay_seconds: float = 0.0) -> None:
        index = partition(ref.message_id, self.count)
        item = (ref.message_id, ref.stage, max(0.0, delay_seconds), list(ref.recipients), ref.raw_key)
        with self._lock:
            slot = self._slots.get(index)
            if slot is None:
                return
            try:
                slot.conn.send(item)
            except (OSError, ValueError):
                log.warning("worker %d unreachable; its successor recovers the message", index,
                            extra={"message_id": ref.message_id, "stage": ref.stage})

    def pids(self) -> list[int]:
        with self._lock:
            return [s.process.pid for s in self._slots.values() if s.process.pid is not None]

    def _spawn(self, index: int) -> None:
        # Duplex only for the one "ready" the worker sends once it is built.
        reader, writer = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=worker_main, name=f"mailmoat-worker-{index}", daemon=True,
            args=(index, self.count, self.settings, reader, os.getpid()))
        process.start()
        reader.close()  # only the worker reads: its death then breaks our end (EPIPE)
        with self._lock:
            old = self._slots.get(index)
            self._slots[index] = _Slot(process, writer)
        if old is not None:
            old.conn.close()
        self.started += 1

    def _watch(self) -> None:
        try:
            for index in range(self.count):
                self._spawn(index)
            for slot in list(self._slots.values()):  # built and recovered: mail flows at once
                with contextlib.suppress(OSError, EOFError):
                    if slot.conn.poll(60):
                        slot.conn.recv()
        finally:
            self._ready.set()
        while not self._stop.is_set():
            with self._lock:
                sentinels = {s.process.sentinel: i for i, s in self._slots.items()}
            for sentinel in wait(list(sentinels), timeout=0.5):
                if self._stop.is_set():
                    break
                assert isinstance(sentinel, int)  # process sentinels are file descriptors
                index = sentinels[sentinel]
                code = self._slots[index].process.exitcode
                log.error("worker %d exited (%s); starting it again", index, code)
                time.sleep(0.1)  # a worker that dies at once must not spin the CPU
                self._spawn(index)
        self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            slots = list(self._slots.values())
            for slot in slots:
                with contextlib.suppress(OSError, ValueError):
                    slot.conn.send(None)  # finish the stage at hand, then exit
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds + 5
        for slot in slots:
            slot.process.join(max(0.1, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(5)
            slot.conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=self.settings.shutdown_grace_seconds + 30)
