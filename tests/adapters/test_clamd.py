"""ClamdAntivirus against a real clamd started here with a signature database the test writes."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat.adapters.clamd import AntivirusUnavailable, ClamdAntivirus
from mailmoat.adapters.private_clamd import ClamdNotStarted, PrivateClamd, find_clamd
from mailmoat.bootstrap import bootstrap
from mailmoat.context import Envelope
from mailmoat.scan.engine import CACHE
from mailmoat.settings import Settings
from tests.unit.scan.scanfiles import eml, make_zip, only

# Split so that no scanner flags this source file itself.
EICAR = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")

CLAMD = find_clamd()


def signature_database(db: Path) -> None:
    """EICAR as an MD5 (.hdb) and a body (.ndb) signature: no freshclam, no network."""
    db.mkdir()
    md5 = hashlib.md5(EICAR).hexdigest()
    (db / "test.hdb").write_text(f"{md5}:{len(EICAR)}:Mailmoat.Test.EICAR.HDB\n")
    (db / "test.ndb").write_text(f"Mailmoat.Test.EICAR.NDB:0:*:{EICAR[:40].hex()}\n")


def running_clamd(base: Path, **options: str) -> Iterator[str]:
    """A real clamd with the test signatures under `base`, started the way `mailmoat serve`
    starts its own (mailmoat.adapters.private_clamd); yields its address (for fixtures)."""
    if CLAMD is None:
        pytest.skip("clamd is not installed (Debian package clamav-daemon)")
    signature_database(base / "db")
    private = PrivateClamd(base, databases=base / "db", start_seconds=60,
                           options={"SelfCheck": "0", "Bytecode": "no", **options})
    try:
        address = private.start()
    except ClamdNotStarted as exc:
        pytest.fail(f"clamd did not start: {exc}")
    yield address
    private.stop()


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_clamd(tmp_path_factory.mktemp("clamd"), StreamMaxLength="10M")


@pytest.mark.clamd
def test_clean_and_eicar(clamd):
    av = ClamdAntivirus(clamd)
    assert av.ping()
    assert av.scan(b"hello world").infected is False
    hit = av.scan(EICAR)
    assert hit.infected and hit.signature and "Mailmoat.Test.EICAR" in hit.signature


@pytest.mark.clamd
def test_large_stream_is_sent_in_chunks(clamd):
    av = ClamdAntivirus(clamd)
    assert av.scan(b"\0" * (3 * 1024 * 1024) + EICAR).infected  # the .ndb body signature


@pytest.mark.clamd
def test_over_the_stream_limit_is_not_a_clean_answer(clamd):
    with pytest.raises(AntivirusUnavailable):
        ClamdAntivirus(clamd, max_stream=1000).scan(b"x" * 2000)
    with pytest.raises(AntivirusUnavailable, match="limit"):
        # the client believes 100 MB, clamd's StreamMaxLength is 10M: clamd's own refusal
        ClamdAntivirus(clamd).scan(b"y" * (11 * 1024 * 1024))


def test_nobody_listening(tmp_path):
    av = ClamdAntivirus(str(tmp_path / "none.sock"), connect_timeout=0.5)
    assert av.ping() is False
    with pytest.raises(AntivirusUnavailable):
        av.scan(b"x")
    with pytest.raises(AntivirusUnavailable):
        ClamdAntivirus("127.0.0.1:1", connect_timeout=0.5).scan(b"x")


@pytest.mark.clamd
def test_address_forms(clamd):
    assert ClamdAntivirus(f"unix://{clamd}").ping()
    assert ClamdAntivirus(f"unix:{clamd}").ping()


def test_one_reconnect_after_a_dropped_connection(tmp_path):
    """clamd drops idle connections and restarts on reloads: the first failure is retried once."""
    path = tmp_path / "flaky.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    seen: list[int] = []

    def serve() -> None:
        for n in range(2):
            conn, _ = server.accept()
            seen.append(n)
            if n == 0:
                conn.close()  # dropped without a reply
                continue
            data = b""
            while not data.endswith(b"\0\0\0\0"):
                data += conn.recv(65536)
            conn.sendall(b"stream: OK\0")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ClamdAntivirus(str(path), timeout=5).scan(b"data").infected is False
    thread.join(5)
    server.close()
    assert seen == [0, 1]


def test_from_address_reads_settings_or_env(monkeypatch):
    monkeypatch.delenv("MAILMOAT_CLAMD_SOCKET", raising=False)
    assert ClamdAntivirus.from_address(None) is None
    monkeypatch.setenv("MAILMOAT_CLAMD_SOCKET", "127.0.0.1:3310")
    av = ClamdAntivirus.from_address(None)
    assert av is not None and av.address == "127.0.0.1:3310"
    assert ClamdAntivirus.from_address("/run/clamd.sock").address == "/run/clamd.sock"  # type: ignore[union-attr]


# --- through the pipeline (scan + isolate), as `mailmoat process` runs it ---------------------------

def _report(tmp_path: Path, av: ClamdAntivirus | None, raw: bytes) -> dict:
    CACHE.clear()
    runtime = bootstrap(Settings(mode="test"), data_dir=tmp_path)
    runtime.services.antivirus = av
    return runtime.analyse(raw, Envelope(), stages=["scan", "isolate"]).to_report()


@pytest.mark.parametrize(("name", "data", "verdict", "symbols", "action"), [
    ("eicar.txt", EICAR, "danger", {"VIRUS"}, "delete"),
    ("eicar.zip", make_zip({"eicar.com.txt": EICAR}), "danger", {"VIRUS"}, "delete"),
    ("clean.txt", b"nothing to see", "safe", set(), "keep"),
])
@pytest.mark.clamd
def test_virus_verdicts(clamd, tmp_path, name, data, verdict, symbols, action):
    report = _report(tmp_path, ClamdAntivirus(clamd), eml((name, data)))
    att = only(report)
    assert (att["verdict"], att["action"]) == (verdict, action)
    assert symbols <= set(att["symbols"])
    assert not any(f["symbol"] == "AV_DISABLED" for f in report["findings"])


def test_configured_but_down_fails_closed(tmp_path):
    down = ClamdAntivirus(str(tmp_path / "gone.sock"), connect_timeout=0.5)
    att = only(_report(tmp_path, down, eml(("clean.txt", b"nothing to see"))))
    assert "SCAN_FAILED" in att["symbols"]
    assert att["action"] == "isolate"
