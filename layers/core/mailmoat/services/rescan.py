"""The portal's second look at bytes it is about to hand out: the scan stage's engine, sandbox
included; where the portal has no antivirus (AWS), verdicts by content hash from one that has."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailmoat.context import Verdict
from mailmoat.ports import AntivirusVerdict

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig
    from mailmoat.pipeline import Services
    from mailmoat.ports import Antivirus, AntivirusRequests, AntivirusVerdicts, BlobStore, Clock
    from mailmoat.scan.engine import Engine
    from mailmoat.scan.result import FileResult

log = logging.getLogger("mailmoat.portal")
scan_log = logging.getLogger("mailmoat.avscan")

Rescan = Callable[[bytes, str | None], "FileResult"]

# Decrypted content that no antivirus has passed. Only the scan function has clamd on AWS, so the
# portal that unlocks a file there usually has none: what it opened stays isolated, never a
# static-only "safe" (the scan stage's AV_DISABLED would be refused in production anyway).
AV_UNCHECKED = "AV_UNCHECKED"
# Asked for: an antivirus scan of this content is on its way (AvScan function); held meanwhile.
AV_PENDING = "AV_PENDING"
# A failed scan is asked for again after this long (before: held with the failure's reason).
RETRY_FAILED_AFTER = timedelta(minutes=10)
# Where requested bytes wait for the AvScan function (quarantine bucket; lifecycle: 1 day).
AVSCAN_PREFIX = "isolated/avscan/"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class AntivirusLater:
    """The portal's way to an antivirus it does not have: the verdicts an antivirus elsewhere
    gave by content hash, and requests for the contents it has not seen yet."""

    verdicts: AntivirusVerdicts
    requests: AntivirusRequests


def avscan_key(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise ValueError("not a lower-case hex SHA-256")
    return AVSCAN_PREFIX + sha256


def rescanner(services: Services, tenant: TenantConfig, *, antivirus_required: bool = False,
              later: AntivirusLater | None = None) -> Rescan:
    """`rescan(data, filename)` with the tenant's lists: decrypted members and safe copies get
    the same checks (limits, antivirus, sandbox) as the attachment they came from.
    `antivirus_required`: content no antivirus has seen yet (what a password opened) gets
    AV_UNCHECKED unless an antivirus answered for it. A safe copy is not required to: it is
    made from an original the scan stage's antivirus has passed. `later`: without an antivirus
    here, the answer an antivirus elsewhere gave for the same content, else one is asked for
    (AV_PENDING); without `later` either, AV_UNCHECKED (fail closed)."""
    # Loaded on the first unlock or safe copy, not at the portal's cold start.
    from mailmoat.scan.engine import engine_for
    from mailmoat.scan.lists import Lists

    engine = engine_for(services, tenant)
    lists = Lists.for_tenant(tenant)

    def rescan(data: bytes, filename: str | None) -> FileResult:
        result = engine.analyse(data, filename, lists)  # a copy: the cached content stays as is
        if not antivirus_required:
            return result
        if engine.antivirus is None and later is not None:
            if result.verdict != Verdict.DANGER:  # danger whatever an antivirus says: not asked
                answer_later(later, data, result, services.clock.now())
            return result
        unchecked = _no_antivirus_answer(engine, result)
        if unchecked:
            result.add(AV_UNCHECKED, unchecked)
        return result

    return rescan


def _no_antivirus_answer(engine: Engine, result: FileResult) -> str | None:
    """Why no antivirus passed this content, or None when one did (a clean answer adds nothing,
    a failed one adds the engine's SCAN_FAILED "antivirus: …")."""
    if engine.antivirus is None:
        return "no antivirus in this runtime: held until an antivirus scan has passed"
    failed = [h.detail for h in result.hits if h.symbol == "SCAN_FAILED"
              and h.member is None and h.detail.startswith("antivirus:")]
    return f"the antivirus did not answer ({failed[0]})"[:300] if failed else None


def answer_later(later: AntivirusLater, data: bytes, result: FileResult, now: datetime) -> None:
    """What the antivirus elsewhere said about `data`, as the engine's own antivirus check would
    have added it (clean: AV_CLEAN, infected: VIRUS); no answer yet: AV_PENDING and a request;
    a recent failure: AV_UNCHECKED with its reason (asked again after RETRY_FAILED_AFTER)."""
    sha256 = hashlib.sha256(data).hexdigest()
    verdict = later.verdicts.get(sha256)
    if verdict is not None and verdict.outcome == "clean":
        result.add("AV_CLEAN", f"{verdict.engine}, {verdict.at:%Y-%m-%d %H:%M} UTC")
        return
    if verdict is not None and verdict.outcome == "infected":
        result.add("VIRUS", f"{verdict.engine}: {verdict.signature or 'infected'}")
        return
    if verdict is not None and now - verdict.at < RETRY_FAILED_AFTER:
        result.add(AV_UNCHECKED, f"the antivirus did not answer ({verdict.detail})"[:300])
        return
    try:
        later.requests.request(sha256, data)
    except Exception as exc:  # no request, no answer ever: held, and the next unlock asks again
        log.error("antivirus scan request failed: %s: %s", type(exc).__name__, exc)
        result.add(AV_UNCHECKED, f"no antivirus scan could be requested ({type(exc).__name__})")
        return
    result.add(AV_PENDING, "antivirus scan requested")


@dataclass(slots=True)
class RequestedScans:
    """The AvScan function's work (the scan image, beside clamd): scan the bytes the portal
    left under AVSCAN_PREFIX, record the verdict under their SHA-256, delete them."""

    blobs: BlobStore
    antivirus: Antivirus | None
    verdicts: AntivirusVerdicts
    clock: Clock

    def run(self, body: str) -> AntivirusVerdict | None:
        """One request ({"avscan": "<sha256>"}). None: the bytes are gone (a duplicate request
        whose twin was scanned already): nothing to do. A malformed request raises (retried,
        then the queue's DLQ and its alarm)."""
        request = json.loads(body)
        named = request.get("avscan") if isinstance(request, dict) else None
        sha256 = named if isinstance(named, str) else ""
        key = avscan_key(sha256)  # ValueError unless a SHA-256
        try:
            data = self.blobs.get(key)
        except FileNotFoundError:
            scan_log.info("antivirus request without bytes (scanned already)", extra={"sha256": sha256})
            return None
        verdict = self._scan(data, sha256)
        self.verdicts.put(sha256, verdict)
        self.blobs.delete(key)
        scan_log.info("antivirus verdict", extra={"sha256": sha256, "action": verdict.outcome,
                                              "detail": verdict.signature or verdict.detail})
        return verdict

    def _scan(self, data: bytes, sha256: str) -> AntivirusVerdict:
        now = self.clock.now()
        if hashlib.sha256(data).hexdigest() != sha256:  # never a verdict for other bytes
            return AntivirusVerdict("failed", now, detail="the stored bytes do not match their SHA-256")
        if self.antivirus is None:
            return AntivirusVerdict("failed", now, detail="no antivirus in this function")
        try:
            answer = self.antivirus.scan(data)
        except Exception as exc:  # recorded: the portal holds the file and asks again later
            return AntivirusVerdict("failed", now, detail=f"{type(exc).__name__}: {exc}"[:300])
        if answer.infected:
            return AntivirusVerdict("infected", now, signature=answer.signature or "infected",
                                    engine=answer.engine)
        return AntivirusVerdict("clean", now, engine=answer.engine)
