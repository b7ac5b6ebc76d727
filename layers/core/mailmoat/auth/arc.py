"""ARC (RFC 8617): validate the chain already on a message with dkimpy, keys via our Resolver."""

from __future__ import annotations

import logging
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


def count_seals(raw: bytes) -> int:
    return header_lines(raw, b"arc-seal")


def verify_chain(raw: bytes, resolver: Resolver) -> ArcResult:
    """The chain validation status (cv) of the ARC sets present. Never raises."""
    seals = count_seals(raw)
    if seals == 0:
        return ArcResult("none", 0, "no ARC sets")
    if seals > MAX_ARC_SETS:
        return ArcResult("fail", seals, f"more than {MAX_ARC_SETS} ARC sets")
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
    if cv == dkimpy.CV_None:
        return ArcResult("none", seals, detail, sets)
    return ArcResult("fail", seals, detail, sets)  # CV_Fail, or None: the chain ended in a fail
