"""Production mode: each missing part is one exact line, and nothing missing is no refusal."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat.adapters.clamd import ClamdAntivirus
from mailmoat.adapters.maildir import MaildirMailer
from mailmoat.production import ProductionRefused, is_fake, production_refusals, require_production
from mailmoat.scan import filetype


class MarkedMailer:
    fake = True


class InMemoryBlobStore:
    pass


class FakeDirectory:
    pass


@pytest.fixture
def pong(tmp_path: Path) -> Iterator[str]:
    """A loopback stand-in for clamd that answers zPING with PONG, over a real unix socket."""
    path = tmp_path / "clamd.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed at teardown
            with conn:
                request = b""
                while not request.endswith(b"\0"):
                    chunk = conn.recv(64)
                    if not chunk:
                        break
                    request += chunk
                conn.sendall(b"PONG\0" if request == b"zPING\0" else b"UNKNOWN COMMAND\0")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield str(path)
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone would not)
    server.close()
    thread.join(5)


@pytest.fixture
def magic_reloaded() -> Iterator[None]:
    filetype._load_magic.cache_clear()
    yield
    filetype._load_magic.cache_clear()


def _refusals(antivirus: object | None, *, arc: bool = True,
              adapters: dict[str, object] | None = None) -> list[str]:
    return production_refusals(antivirus=antivirus, arc_key_provisioned=arc,
                               adapters=adapters if adapters is not None else
                               {"mailer": MaildirMailer(Path("/nonexistent/maildir"))})


def test_everything_in_place_is_accepted(pong: str) -> None:
    antivirus = ClamdAntivirus(pong, timeout=5)
    assert _refusals(antivirus, adapters={"antivirus": antivirus, "mailer": MaildirMailer(Path("/nonexistent/maildir")),
                                          "archive": None}) == []
    require_production(antivirus=antivirus, arc_key_provisioned=True, adapters={})


def test_no_antivirus() -> None:
    assert _refusals(None) == [
        "no reachable antivirus (none configured): set MAILMOAT_CLAMD_SOCKET to a running clamd"]


def test_antivirus_that_does_not_answer(tmp_path: Path) -> None:
    gone = tmp_path / "gone.sock"
    assert _refusals(ClamdAntivirus(str(gone), connect_timeout=0.5)) == [
        f"no reachable antivirus ({gone} does not answer PING): "
        "set MAILMOAT_CLAMD_SOCKET to a running clamd"]


def test_antivirus_whose_ping_raises() -> None:
    class Broken:
        address = "10.0.0.1:3310"

        def ping(self) -> bool:
            raise ConnectionResetError("reset\nby peer")

    assert _refusals(Broken()) == [
        "no reachable antivirus (10.0.0.1:3310 does not answer PING (ConnectionResetError: reset "
        "by peer)): set MAILMOAT_CLAMD_SOCKET to a running clamd"]


@pytest.mark.usefixtures("magic_reloaded")
def test_libmagic_missing(pong: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "magic", None)  # as if libmagic1 were not installed
    assert _refusals(ClamdAntivirus(pong)) == [
        "libmagic cannot name file types (ModuleNotFoundError: import of magic halted; None in "
        "sys.modules): install the Debian package libmagic1"]


@pytest.mark.usefixtures("magic_reloaded")
def test_libmagic_without_its_database(pong: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import magic

    monkeypatch.setattr(magic, "Magic", lambda mime: _Blind())  # loads, but names nothing
    assert _refusals(ClamdAntivirus(pong)) == [
        "libmagic cannot name file types (application/pdf sample named application/octet-stream; "
        "application/x-dosexec sample named application/octet-stream): "
        "install the Debian package libmagic1"]


class _Blind:
    def from_buffer(self, data: bytes) -> str:
        return "application/octet-stream"


def test_arc_key_generated_on_the_fly(pong: str) -> None:
    assert _refusals(ClamdAntivirus(pong), arc=False) == [
        "ARC sealing key not provisioned (a key generated on the fly is not the one published in "
        "DNS): set MAILMOAT_ARC_KEY_FILE or, on AWS, the ARC key secret"]


@pytest.mark.parametrize(("port", "adapter", "name"), [
    ("mailer", MarkedMailer(), "MarkedMailer"),        # the marker: fake = True
    ("blobs", InMemoryBlobStore(), "InMemoryBlobStore"),  # the naming convention
    ("directory", FakeDirectory(), "FakeDirectory"),
])
def test_fake_adapter(pong: str, port: str, adapter: object, name: str) -> None:
    assert _refusals(ClamdAntivirus(pong), adapters={port: adapter, "log": MaildirMailer(Path("/nonexistent/maildir"))}) == [
        f"fake adapter for {port}: tests.unit.test_production.{name} is a test fake"]


def test_a_fake_antivirus_that_answers_ping_is_still_a_fake() -> None:
    class FakeAntivirus:
        def ping(self) -> bool:
            return True

    fake = FakeAntivirus()
    assert _refusals(fake, adapters={"antivirus": fake}) == [
        "fake adapter for antivirus: tests.unit.test_production."
        "test_a_fake_antivirus_that_answers_ping_is_still_a_fake.<locals>.FakeAntivirus "
        "is a test fake"]


def test_require_production_names_every_reason(tmp_path: Path) -> None:
    parts = {"antivirus": None, "arc_key_provisioned": False, "adapters": {"mailer": MarkedMailer()}}
    with pytest.raises(ProductionRefused) as refused:
        require_production(**parts)  # type: ignore[arg-type]
    assert isinstance(refused.value, RuntimeError)
    assert str(refused.value) == "; ".join(production_refusals(**parts))  # type: ignore[arg-type]
    assert str(refused.value).count("; ") >= 2 and "\n" not in str(refused.value)


class RecordingMailer:
    """An ordinary test double: no marker, no telling name."""

    def deliver(self, message_id: str, recipient: str, mail_from: str | None, data: bytes) -> str:
        return "recorded"


def test_an_adapter_from_the_test_suite_is_a_fake_whatever_its_name() -> None:
    assert is_fake(RecordingMailer())
    reasons = production_refusals(antivirus=None, arc_key_provisioned=True,
                                  adapters={"mailer:corp": RecordingMailer()},
                                  needs=frozenset())
    assert reasons == [f"fake adapter for mailer:corp: {__name__}.RecordingMailer is a test fake"]
