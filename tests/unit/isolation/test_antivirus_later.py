"""What a password opens, in a runtime without an antivirus but with one elsewhere (the portal on
AWS, issue 14): the verdict an antivirus gave for the same content decides; without one a scan
is requested and the file is held as "being checked". And the scan image's side of it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailmoat.context import Verdict
from mailmoat.ports import AntivirusResult, AntivirusVerdict
from mailmoat.runtime import Runtime
from mailmoat.services.rescan import (
    AV_PENDING,
    AV_UNCHECKED,
    AVSCAN_PREFIX,
    RETRY_FAILED_AFTER,
    AntivirusLater,
    RequestedScans,
)
from mailmoat.services.unlock import Unlocked, unlock
from tests.unit.isolation.builders import (
    EICAR_LIKE,
    PASSWORD,
    SignatureAntivirus,
    aes_zip,
    analyse,
    make_runtime,
    message,
)

CLEAN = b"member bytes\n"
SHA = hashlib.sha256(CLEAN).hexdigest()
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


class InMemoryAntivirusVerdicts:
    def __init__(self, rows: dict[str, AntivirusVerdict] | None = None) -> None:
        self.rows = dict(rows or {})

    def get(self, sha256: str) -> AntivirusVerdict | None:
        return self.rows.get(sha256)

    def put(self, sha256: str, verdict: AntivirusVerdict) -> None:
        self.rows[sha256] = verdict


@dataclass
class InMemoryAntivirusRequests:
    broken: bool = False
    sent: list[tuple[str, bytes]] = field(default_factory=list)

    def request(self, sha256: str, data: bytes) -> None:
        if self.broken:
            raise ConnectionError("queue unreachable")
        self.sent.append((sha256, data))


class InMemoryBlobs:
    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects = dict(objects or {})

    def get(self, key: str) -> bytes:
        if key not in self.objects:
            raise FileNotFoundError(key)
        return self.objects[key]

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)


@dataclass
class FixedClock:
    at: datetime = NOW

    def now(self) -> datetime:
        return self.at


class BrokenAntivirus:
    def scan(self, data: bytes) -> AntivirusResult:
        raise ConnectionRefusedError("clamd.sock: connection refused")


def _unlock(tmp_path: Path, later: AntivirusLater | None, *, antivirus: object = None,
            members: dict[str, bytes] | None = None) -> Unlocked:
    runtime: Runtime = make_runtime(tmp_path / "var")
    ctx = analyse(runtime, message(("請求書.zip", aes_zip(members or {"report.txt": CLEAN}),
                                    "application/zip")))
    services = runtime.services
    services.antivirus = antivirus  # type: ignore[assignment]  # None: the portal on AWS
    services.clock = FixedClock()  # type: ignore[assignment]
    store = services.isolation
    assert store is not None
    record = next(f for f in store.files(ctx.id) if f.filename == "請求書.zip")
    return unlock(services, services.config.tenant(ctx.tenant), record, PASSWORD, later)


def _verdict(outcome: str, age: timedelta = timedelta(minutes=1), **kw: str) -> AntivirusVerdict:
    return AntivirusVerdict(outcome, NOW - age, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("stored", "verdict", "symbol", "downloadable", "pending", "requested"), [
    (None, Verdict.UNSUPPORTED, AV_PENDING, False, True, True),
    (_verdict("clean"), Verdict.SAFE, "AV_CLEAN", True, False, False),
    (_verdict("infected", signature="Mailmoat.Test"), Verdict.DANGER, "VIRUS", False, False, False),
    (_verdict("failed", detail="clamd down"), Verdict.UNSUPPORTED, AV_UNCHECKED, False, False, False),
    (_verdict("failed", RETRY_FAILED_AFTER + timedelta(seconds=1), detail="clamd down"),
     Verdict.UNSUPPORTED, AV_PENDING, False, True, True),
], ids=["no-verdict", "clean", "infected", "failed-recently", "failed-long-ago"])
def test_the_verdict_by_content_hash_decides(tmp_path: Path, stored: AntivirusVerdict | None,
                                             verdict: Verdict, symbol: str, downloadable: bool,
                                             pending: bool, requested: bool) -> None:
    requests = InMemoryAntivirusRequests()
    later = AntivirusLater(InMemoryAntivirusVerdicts({SHA: stored} if stored else {}), requests)
    done = _unlock(tmp_path, later)
    assert done.outcome == "ok"
    [member] = done.files
    assert (member.verdict, member.offer.allows("original"), member.pending) == (
        verdict, downloadable, pending)
    assert symbol in member.symbols
    assert requests.sent == ([(SHA, CLEAN)] if requested else [])


def test_a_request_that_cannot_be_sent_holds_the_file_as_unchecked(tmp_path: Path) -> None:
    later = AntivirusLater(InMemoryAntivirusVerdicts(), InMemoryAntivirusRequests(broken=True))
    [member] = _unlock(tmp_path, later).files
    assert member.verdict == Verdict.UNSUPPORTED and not member.pending
    assert AV_UNCHECKED in member.symbols and not member.offer.allows("original")


def test_with_an_antivirus_here_nothing_is_asked_elsewhere(tmp_path: Path) -> None:
    """Locally (clamd present) the verdicts of elsewhere are neither read nor asked for."""
    requests = InMemoryAntivirusRequests()
    infected_elsewhere = InMemoryAntivirusVerdicts({SHA: _verdict("infected", signature="X")})
    done = _unlock(tmp_path, AntivirusLater(infected_elsewhere, requests),
                   antivirus=SignatureAntivirus(),
                   members={"report.txt": CLEAN, "eicar.com": EICAR_LIKE})
    assert [(f.name, f.verdict) for f in done.files] == [("report.txt", Verdict.SAFE),
                                                         ("eicar.com", Verdict.DANGER)]
    assert requests.sent == [] and not any(f.pending for f in done.files)


def test_without_antivirus_and_without_the_ports_it_stays_unchecked(tmp_path: Path) -> None:
    [member] = _unlock(tmp_path, None).files
    assert member.verdict == Verdict.UNSUPPORTED and AV_UNCHECKED in member.symbols
    assert not member.pending


# --- the AvScan function's work -----------------------------------------------------------------

def _scans(objects: dict[str, bytes], antivirus: object = None) -> RequestedScans:
    return RequestedScans(blobs=InMemoryBlobs(objects), antivirus=antivirus,  # type: ignore[arg-type]
                          verdicts=InMemoryAntivirusVerdicts(), clock=FixedClock())


@pytest.mark.parametrize(("data", "antivirus", "outcome", "signature", "detail"), [
    (CLEAN, SignatureAntivirus(), "clean", None, ""),
    (EICAR_LIKE, SignatureAntivirus(), "infected", "Mailmoat.Test-Signature", ""),
    (CLEAN, BrokenAntivirus(), "failed", None, "ConnectionRefusedError: clamd.sock: connection refused"),
    (CLEAN, None, "failed", None, "no antivirus in this function"),
], ids=["clean", "infected", "antivirus-down", "no-antivirus"])
def test_a_requested_scan_records_the_verdict_and_deletes_the_bytes(
        data: bytes, antivirus: object, outcome: str, signature: str | None, detail: str) -> None:
    sha = hashlib.sha256(data).hexdigest()
    scans = _scans({AVSCAN_PREFIX + sha: data}, antivirus)
    got = scans.run(json.dumps({"avscan": sha}))
    assert got is not None and (got.outcome, got.signature, got.detail, got.at) == (
        outcome, signature, detail, NOW)
    assert scans.verdicts.get(sha) == got
    assert scans.blobs.objects == {}  # type: ignore[attr-defined]


def test_bytes_that_are_not_what_their_name_says_are_never_clean() -> None:
    scans = _scans({AVSCAN_PREFIX + SHA: b"something else"}, SignatureAntivirus())
    got = scans.run(json.dumps({"avscan": SHA}))
    assert got is not None and got.outcome == "failed" and "SHA-256" in got.detail


def test_a_repeated_request_whose_bytes_were_scanned_already_does_nothing() -> None:
    scans = _scans({}, SignatureAntivirus())
    assert scans.run(json.dumps({"avscan": SHA})) is None
    assert scans.verdicts.rows == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize("body", ["not json", "[]", '{"avscan": "../../raw/x"}',
                                  '{"avscan": "' + SHA.upper() + '"}', '{"other": 1}'])
def test_a_malformed_request_raises_and_reads_nothing(body: str) -> None:
    scans = _scans({AVSCAN_PREFIX + SHA: CLEAN}, SignatureAntivirus())
    with pytest.raises(ValueError):
        scans.run(body)
    assert scans.verdicts.rows == {}  # type: ignore[attr-defined]
