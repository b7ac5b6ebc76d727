"""A private clamd for `mailmoat serve`: its own config, socket and process under the data directory."""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TextIO

from mailmoat.adapters.clamd import ClamdAntivirus

DEFAULT_DATABASE_DIR = Path("/var/lib/clamav")  # where Debian's freshclam writes
# freshclam's containers, and the plain signature files a hand-made database (tests) consists of.
DATABASE_SUFFIXES = frozenset({".cvd", ".cld", ".cud", ".hdb", ".hsb", ".mdb", ".msb", ".ndb",
                               ".ldb"})
START_SECONDS = 120.0  # the full ClamAV database takes tens of seconds to load on a small machine
_SUN_PATH_MAX = 100  # a unix socket path must stay under 108 bytes
_PR_SET_PDEATHSIG = 1


class ClamdNotStarted(RuntimeError):
    """No private clamd: the one-line reason (no clamd, no database, or it did not come up)."""


def find_clamd() -> str | None:
    return shutil.which("clamd") or ("/usr/sbin/clamd" if os.access("/usr/sbin/clamd", os.X_OK)
                                     else None)


def database_dir() -> Path:
    """MAILMOAT_CLAMAV_DB_DIR, else Debian's /var/lib/clamav."""
    return Path(os.environ.get("MAILMOAT_CLAMAV_DB_DIR") or DEFAULT_DATABASE_DIR)


class PrivateClamd:
    """clamd as a child process with a config of its own: a unix socket under `<data_dir>/clamd/`,
    no TCP, the signature database read in place. `start()` returns the socket once clamd answers
    PING; `stop()` (or leaving the `with` block) ends it, and it ends with its parent too."""

    def __init__(self, data_dir: Path, *, databases: Path | None = None, clamd: str | None = None,
                 start_seconds: float = START_SECONDS, options: Mapping[str, str] | None = None) -> None:
        self.home = Path(data_dir).resolve() / "clamd"
        self.databases = Path(databases) if databases is not None else database_dir()
        self.clamd = clamd if clamd is not None else find_clamd()
        self.start_seconds = start_seconds
        self.options = dict(options or {})  # more clamd.conf lines, e.g. {"StreamMaxLength": "10M"}
        self.process: subprocess.Popen[bytes] | None = None
        self.socket = self.home / "clamd.sock"
        self._short_dir: Path | None = None  # the socket's directory when home's path is too long

    def unavailable(self) -> str | None:
        """Why clamd cannot be started here (checked before anything is written), or None."""
        if self.clamd is None:
            return "clamd not found; apt-get install clamav-daemon"
        if not self.databases.is_dir() or not any(
                p.suffix in DATABASE_SUFFIXES for p in self.databases.iterdir()):
            return (f"no ClamAV signature database in {self.databases}; "
                    "apt-get install clamav-daemon and run freshclam")
        return None

    def config(self) -> str:
        lines = {"LocalSocket": str(self.socket), "LocalSocketMode": "600", "Foreground": "yes",
                 "DatabaseDirectory": str(self.databases),
                 "TemporaryDirectory": str(self.home / "tmp"),
                 "LogFile": str(self.home / "clamd.log"), "PidFile": str(self.home / "clamd.pid"),
                 **self.options}
        return "".join(f"{key} {value}\n" for key, value in lines.items())

    def start(self) -> str:
        """The socket address once clamd answers PING; ClamdNotStarted with the reason if not."""
        reason = self.unavailable()
        if reason:
            raise ClamdNotStarted(reason)
        assert self.clamd is not None
        (self.home / "tmp").mkdir(parents=True, exist_ok=True)
        if len(str(self.socket)) > _SUN_PATH_MAX and self._short_dir is None:
            self._short_dir = Path(tempfile.mkdtemp(prefix="mm-clamd-"))  # 0700, removed by stop()
            self.socket = self._short_dir / "clamd.sock"
        conf = self.home / "clamd.conf"
        conf.write_text(self.config(), encoding="utf-8")
        self.socket.unlink(missing_ok=True)  # left by a clamd that was killed
        logs = [self.home / "clamd.log", self.home / "clamd.stderr"]
        logs[0].unlink(missing_ok=True)  # this start's log only, for the reason below
        with logs[1].open("wb") as stderr:  # config errors come before the log file is open
            self.process = subprocess.Popen(
                [self.clamd, "--foreground", f"--config-file={conf}"], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=stderr,  # stdout repeats the log file
                preexec_fn=_ends_with_parent())
        client = ClamdAntivirus(str(self.socket), timeout=5, connect_timeout=1)
        deadline = time.monotonic() + self.start_seconds
        while not (self.socket.exists() and client.ping()):
            exited = self.process.poll()
            if exited is not None or time.monotonic() > deadline:
                self.stop()
                what = f"clamd exited with {exited}" if exited is not None else \
                    f"clamd did not answer within {self.start_seconds:.0f} s"
                last = _last_error(logs)
                raise ClamdNotStarted(f"{what}: {last}" if last else what)
            time.sleep(0.2)
        return str(self.socket)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir, self.socket = None, self.home / "clamd.sock"

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _last_error(logs: list[Path]) -> str:
    """The last ERROR line clamd wrote (else its last line): why it did not come up."""
    lines: list[str] = []
    for log in logs:
        try:
            lines += [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            continue
    errors = [ln for ln in lines if "ERROR" in ln]
    return (errors or lines or [""])[-1][:300]


def _ends_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel stop clamd when the thread that started it dies, so a
    `serve` killed with SIGKILL leaves no clamd (a gigabyte of signatures) behind. Linux only."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return in_child


def antivirus_for_serve(data_dir: Path, out: TextIO | None = None) -> str | None:
    """`serve` without MAILMOAT_CLAMD_SOCKET: a private clamd when ClamAV and its signatures are
    installed (stopped at exit), else one line saying why not. The socket address, or None."""
    out = out or sys.stdout
    clamd = PrivateClamd(data_dir)
    reason = clamd.unavailable()
    if reason is None:
        print(f"antivirus: starting clamd on the signatures in {clamd.databases} "
              f"(loading can take up to {clamd.start_seconds:.0f} s) …", file=out, flush=True)
        try:
            address = clamd.start()
        except ClamdNotStarted as exc:
            reason = str(exc)
        else:
            atexit.register(clamd.stop)
            print(f"antivirus: clamd at {address}", file=out, flush=True)
            return address
    print(f"antivirus: none ({reason}) — attachments are checked statically only",
          file=out, flush=True)
    return None
