"""The private clamd of `mailmoat serve` (mailmoat.adapters.private_clamd), against the real clamd when installed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat.adapters import private_clamd as local_clamd
from mailmoat.adapters.clamd import ClamdAntivirus
from mailmoat.adapters.private_clamd import ClamdNotStarted, PrivateClamd, antivirus_for_serve
from tests.adapters.test_clamd import CLAMD, EICAR, signature_database
from tests.conftest import DEMO_CONFIG, FIXTURES, ROOT, free_port

needs_clamd = pytest.mark.skipif(CLAMD is None, reason="clamd is not installed (Debian package "
                                 "clamav-daemon; scripts/system-deps.sh test installs it)")
STATIC_ONLY = "— attachments are checked statically only"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    signature_database(tmp_path / "db")
    return tmp_path / "db"


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}  # exited (a zombie waits for its new parent to reap it)


def _ends(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _gone(pid)


def test_the_config_is_private_and_listens_on_no_tcp_port(tmp_path: Path, db: Path) -> None:
    private = PrivateClamd(tmp_path / "var", databases=db, clamd="/bin/true")
    conf = dict(line.split(" ", 1) for line in private.config().splitlines())
    home = (tmp_path / "var" / "clamd").resolve()
    assert conf["LocalSocket"] == str(home / "clamd.sock") == str(private.socket)
    assert conf["LocalSocketMode"] == "600" and conf["Foreground"] == "yes"
    assert conf["DatabaseDirectory"] == str(db)
    assert not any(key.startswith("TCP") for key in conf)


def _short_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("mm-clamd-*"))


def test_a_clamd_that_exits_at_once_leaves_no_socket_directory_behind(tmp_path: Path, db: Path) -> None:
    before = _short_dirs()
    private = PrivateClamd(tmp_path / ("d" * 120), databases=db, clamd="/bin/true")
    with pytest.raises(ClamdNotStarted, match=r"^clamd exited with 0$"):
        private.start()
    assert private.process is None and _short_dirs() == before


@needs_clamd
def test_a_long_data_directory_still_gets_a_usable_socket_path(tmp_path: Path, db: Path) -> None:
    before = _short_dirs()
    private = PrivateClamd(tmp_path / ("d" * 120), databases=db, start_seconds=60)
    with private as address:
        assert len(address) < 108 and Path(address).name == "clamd.sock"
        assert ClamdAntivirus(address).ping()
    assert _short_dirs() == before  # the short directory goes with clamd


def test_without_clamd_or_a_database_nothing_starts(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "freshclam.dat").write_bytes(b"state, not signatures")
    monkeypatch.setattr(local_clamd, "find_clamd", lambda: None)
    assert PrivateClamd(tmp_path, databases=empty).unavailable() == \
        "clamd not found; apt-get install clamav-daemon"
    for databases in (empty, tmp_path / "missing"):
        private = PrivateClamd(tmp_path, databases=databases, clamd="/bin/true")
        reason = (f"no ClamAV signature database in {databases}; "
                  "apt-get install clamav-daemon and run freshclam")
        assert private.unavailable() == reason
        with pytest.raises(ClamdNotStarted, match="^" + reason.replace(".", r"\.") + "$"):
            private.start()
    assert not (tmp_path / "clamd").exists()  # nothing written when nothing can start


def test_the_database_directory_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.delenv("MAILMOAT_CLAMAV_DB_DIR", raising=False)
    assert PrivateClamd(tmp_path).databases == Path("/var/lib/clamav")
    monkeypatch.setenv("MAILMOAT_CLAMAV_DB_DIR", str(tmp_path / "sigs"))
    assert PrivateClamd(tmp_path).databases == tmp_path / "sigs"


@needs_clamd
def test_it_scans_and_stops(tmp_path: Path, db: Path) -> None:
    private = PrivateClamd(tmp_path, databases=db, start_seconds=60)
    with private as address:
        assert address == str(private.socket) and Path(address).parent == (tmp_path / "clamd")
        result = ClamdAntivirus(address).scan(EICAR)
        assert result.infected and "Mailmoat.Test.EICAR" in (result.signature or "")
        assert private.process is not None
        pid = private.process.pid
    assert private.process is None and _gone(pid)
    assert ClamdAntivirus(address, connect_timeout=0.5).ping() is False


@needs_clamd
def test_a_broken_database_is_the_reason_it_did_not_start(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.ndb").write_text("not a signature\n")
    with pytest.raises(ClamdNotStarted, match=r"^clamd exited with \d+: .*Malformed database"):
        PrivateClamd(tmp_path, databases=broken, start_seconds=60).start()


@needs_clamd
def test_a_killed_parent_takes_its_clamd_along(tmp_path: Path, db: Path) -> None:
    """`serve` killed with SIGKILL (the fault tests do that) leaves no clamd behind."""
    script = ("import sys, time; from pathlib import Path; from mailmoat.adapters.private_clamd import PrivateClamd;"
              f"c = PrivateClamd(Path({str(tmp_path)!r}), databases=Path({str(db)!r}), start_seconds=60);"
              "c.start(); print(c.process.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert not _gone(pid)
    finally:
        parent.send_signal(signal.SIGKILL)  # by pid, the process this test started
        parent.wait(timeout=10)
    assert _ends(pid)


# --- `mailmoat serve` ----------------------------------------------------------------------------

def test_serve_says_in_one_line_why_there_is_no_antivirus(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MAILMOAT_CLAMAV_DB_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(local_clamd, "find_clamd", lambda: "/usr/sbin/clamd")
    assert antivirus_for_serve(tmp_path) is None
    assert capsys.readouterr().out == (
        f"antivirus: none (no ClamAV signature database in {tmp_path / 'none'}; apt-get install "
        f"clamav-daemon and run freshclam) {STATIC_ONLY}\n")
    monkeypatch.setattr(local_clamd, "find_clamd", lambda: None)
    assert antivirus_for_serve(tmp_path) is None
    assert capsys.readouterr().out == \
        f"antivirus: none (clamd not found; apt-get install clamav-daemon) {STATIC_ONLY}\n"


def _serve(tmp_path: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`mailmoat serve` until it says it is running: the process and what it printed."""
    out_path = tmp_path / "serve.out"
    environ = {**os.environ, "MAILMOAT_DATA_DIR": str(tmp_path / "var"),
               "MAILMOAT_CONFIG": str(DEMO_CONFIG), "MAILMOAT_DNS_ZONE": str(FIXTURES / "empty-zone.json"),
               "MAILMOAT_SMTP_PORT": str(free_port()), "MAILMOAT_PORTAL_PORT": str(free_port()),
               "MAILMOAT_MODE": "dev", **env}
    with out_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mailmoat.local.cli", "serve"], cwd=ROOT,
                                env=environ, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while "mailmoat is running" not in out_path.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, out_path.read_text()[-2000:]
            time.sleep(0.1)
        yield proc, out_path.read_text()
    finally:
        proc.terminate()  # by pid, the process this test started
        proc.wait(timeout=20)


def test_serve_without_a_database_goes_on_without_antivirus(tmp_path: Path) -> None:
    for _proc, printed in _serve(tmp_path, MAILMOAT_CLAMAV_DB_DIR=str(tmp_path / "none")):
        antivirus = [line for line in printed.splitlines() if line.startswith("antivirus:")]
        assert len(antivirus) == 1 and antivirus[0].startswith("antivirus: none (")
        assert antivirus[0].endswith(STATIC_ONLY)


@needs_clamd
def test_serve_starts_its_own_clamd_and_stops_it(tmp_path: Path, db: Path) -> None:
    sock = tmp_path / "var" / "clamd" / "clamd.sock"
    for _proc, printed in _serve(tmp_path, MAILMOAT_CLAMAV_DB_DIR=str(db)):
        assert f"antivirus: clamd at {sock.resolve()}" in printed.splitlines()
        assert ClamdAntivirus(str(sock)).scan(EICAR).infected
        pid = int((tmp_path / "var" / "clamd" / "clamd.pid").read_text())
    # uvicorn ends on SIGTERM by re-raising it, so atexit does not run: the kernel's
    # parent-death signal is what stops clamd then.
    assert _ends(pid)
