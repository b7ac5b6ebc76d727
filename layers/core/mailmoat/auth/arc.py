"""ARC (RFC 8617): validate the chain already on a message with dkimpy, keys via our Resolver."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import dkim as dkimpy

from mailmoat import dkim_speedups
from mailmoat.auth.dkim import KeyLookups, header_lines, make_dnsfunc
from mailmoat.ports import Resolver

dkim_speedups.install()  # exact, faster dkimpy passes for large messages

MAX_ARC_SETS = 50  # RFC 8617 §4.2.1: instance numbers above 50 make the chain fail

_quiet = logging.getLogger("mailmoat.auth.arcpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


@dataclass(slots=True)
class ArcResult:
    result: str  # pass | fail | none
    instances: int = 0
    detail: str = ""
    sets: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "instances": self.instances, "detail": self.detail,
                "sets": list(self.sets)}


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


ARC_HEADERS = (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")
_SHORT = {b"arc-seal": "AS", b"arc-message-signature": "AMS", b"arc-authentication-results": "AAR"}
_AAR_INSTANCE = re.compile(rb"^\s*i\s*=\s*([0-9]{1,6})\s*(;|$)", re.IGNORECASE)
_TAG_NAME = re.compile(rb"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=")


def count_seals(raw: bytes) -> int:
    return header_lines(raw, b"arc-seal")


def _arc_fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    """(lowercased name, unfolded value) of every ARC header field, in order."""
    end = len(raw)
    for sep in (b"\r\n\r\n", b"\n\n"):
        pos = raw.find(sep)
        if 0 <= pos < end:
            end = pos
    fields: list[tuple[bytes, bytes]] = []
    for line in raw[:end].splitlines():
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1] = (fields[-1][0], fields[-1][1] + b" " + line.strip())
            continue
        name, sep, value = line.partition(b":")
        fields.append((name.strip().lower() if sep else b"", value.strip()))
    return [(n, v) for n, v in fields if n in ARC_HEADERS]


def _instance(name: bytes, value: bytes) -> int | None:
    """The field's one i= tag (RFC 8617 §4.2.1), or None when it has none, several or a bad one.
    AAR starts with i= then the authserv-id; AS and AMS are tag-lists."""
    if name == b"arc-authentication-results":
        match = _AAR_INSTANCE.match(value)
        return int(match.group(1)) if match else None
    found = [chunk.partition(b"=")[2].strip() for chunk in value.split(b";")
             if (tag := _TAG_NAME.match(chunk)) and tag.group(1).lower() == b"i"]
    if len(found) != 1 or not found[0].isdigit() or len(found[0]) > 6:
        return None
    return int(found[0])


def chain_structure_problem(fields: list[tuple[bytes, bytes]]) -> str | None:
    """Why the ARC sets cannot form a chain (RFC 8617 §5.2 step 2): a field without a valid
    i=, an instance above 50, a gap, or an instance without exactly one AS, AMS and AAR.
    dkimpy skips fields it cannot number, so a lone AMS+AAR would otherwise read as no chain."""
    sets: dict[int, list[bytes]] = {}
    for name, value in fields:
        instance = _instance(name, value)
        if instance is None or instance < 1:
            return f"{_SHORT[name]} without a valid i= tag"
        if instance > MAX_ARC_SETS:
            return f"instance i={instance} above {MAX_ARC_SETS}"
        sets.setdefault(instance, []).append(name)
    for instance in range(1, max(sets) + 1):
        names = sets.get(instance, [])
        for header in ARC_HEADERS:
            if (count := names.count(header)) != 1:
                state = "missing" if count == 0 else "duplicated"
                return f"{_SHORT[header]} {state} for i={instance}"
    return None


def verify_chain(raw: bytes, resolver: Resolver) -> ArcResult:
    """The chain validation status (cv) of the ARC sets present. Never raises. Any ARC
    header field makes a chain to validate (RFC 8617 §5.2): an incomplete one fails."""
    fields = _arc_fields(raw)
    if not fields:
        return ArcResult("none", 0, "no ARC sets")
    seals = sum(1 for name, _v in fields if name == b"arc-seal")
    if seals > MAX_ARC_SETS:
        return ArcResult("fail", seals, f"more than {MAX_ARC_SETS} ARC sets")
    if problem := chain_structure_problem(fields):
        return ArcResult("fail", seals, problem)
    seen = KeyLookups()
    try:
        cv, results, reason = dkimpy.arc_verify(raw, logger=_quiet,
                                                dnsfunc=make_dnsfunc(resolver, seen))
    except Exception as exc:  # hostile headers inside dkimpy must stay a result
        return ArcResult("fail", seals, f"{type(exc).__name__}: {exc}"[:200])
    sets = [{k: _text(v) for k, v in r.items() if k != "aar-value"} for r in results]
    detail = _text(reason) or ""
    if seen.timed_out:
        detail = f"{detail}; a key lookup timed out"
    if cv == dkimpy.CV_Pass:
        return ArcResult("pass", seals, detail, sets)
    # CV_Fail; None: a seal said cv=fail, the chain ended; CV_None: dkimpy found no set to
    # number although ARC fields are present, which is no valid chain either.
    return ArcResult("fail", seals, detail, sets)
