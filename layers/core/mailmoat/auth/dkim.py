"""DKIM (RFC 6376, RSA and Ed25519): dkimpy verifies every signature, keys via our Resolver."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dkim as dkimpy
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import InvalidTagValueList, parse_tag_value

from mailmoat import dkim_speedups
from mailmoat.auth.lookup import query_follow
from mailmoat.ports import DnsTimeout, Resolver

dkim_speedups.install()  # exact, faster dkimpy passes for large messages

MAX_SIGNATURES = 10  # verified per message; the rest are reported as skipped
MIN_RSA_BITS = 1024  # RFC 8301: smaller RSA keys are not accepted

# dkimpy logs every failed signature at ERROR; for a gateway a bad signature is data.
_quiet = logging.getLogger("mailmoat.auth.dkimpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


@dataclass(slots=True)
class KeyLookups:
    """What the DNS side saw, because dkimpy folds a timeout and a missing key into False."""

    timed_out: bool = False
    missing: bool = False
    unusable: bool = False  # a key record dkimpy cannot use (syntax, algorithm, service)

    def reset(self) -> None:
        self.timed_out = self.missing = self.unusable = False


def make_dnsfunc(resolver: Resolver, seen: KeyLookups) -> Callable[..., bytes | None]:
    """dkimpy's `dnsfunc(name, timeout=...)`: the first TXT record at name, or None."""

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            records = query_follow(resolver, text, "TXT")
        except DnsTimeout as exc:
            seen.timed_out = True
            raise dkimpy.DnsTimeoutError(str(exc)) from exc
        if not records:
            seen.missing = True
            return None
        record = records[0].encode("utf-8", "replace")
        try:
            dkimpy.evaluate_pk(name, record)
        except Exception:
            seen.unusable = True
        return record

    return dnsfunc


@dataclass(slots=True)
class DkimSignature:
    """One DKIM-Signature and its result: pass | fail | neutral | temperror | permerror."""

    result: str
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    identity: str = ""
    b: str = ""  # first characters of b=, for Authentication-Results header.b (RFC 6008)
    detail: str = ""
    # l= signed only a prefix of the body: whatever follows it was added by anyone
    # (RFC 6376 §8.2), the classic way to replay a validly signed message with new content.
    partial_body: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "domain": self.domain, "selector": self.selector,
                "algorithm": self.algorithm, "identity": self.identity, "b": self.b,
                "detail": self.detail, "partial_body": self.partial_body}


@dataclass(slots=True)
class DkimResult:
    result: str  # pass | fail | temperror | permerror | none
    signatures: list[DkimSignature] = field(default_factory=list)
    total: int = 0  # signatures present, including any beyond MAX_SIGNATURES

    @property
    def passing_domains(self) -> list[str]:
        return [s.domain for s in self.signatures if s.result == "pass" and s.domain]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def aggregate(results: list[str]) -> str:
    """One word for the report. A failed signature counts as absent when another passes
    (RFC 6376 §6.1), so a mailing list's extra signature does not turn a pass into fail."""
    if not results:
        return "none"
    for word in ("pass", "fail", "temperror", "permerror", "neutral"):
        if word in results:
            return word
    return "permerror"


def _fields(value: bytes) -> dict[bytes, bytes]:
    try:
        return dict(parse_tag_value(b" ".join(value.split())))
    except (InvalidTagValueList, ValueError, IndexError):
        return {}


def header_lines(raw: bytes, name: bytes) -> int:
    """How many header lines start with `name:`: a cheap look before any parsing."""
    end = len(raw)
    for sep in (b"\r\n\r\n", b"\n\n"):
        pos = raw.find(sep)
        if 0 <= pos < end:
            end = pos
    prefix = name.lower() + b":"
    return sum(1 for line in raw[:end].splitlines() if line[: len(prefix)].lower() == prefix)


def _unsigned_tail(verifier: Any, tags: dict[bytes, bytes]) -> int:
    """Canonical body bytes after the l= limit (0 when the whole body is signed)."""
    if b"l" not in tags:
        return 0
    try:
        limit = int(tags[b"l"])
        policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
        return max(0, len(policy.canonicalize_body(verifier.body)) - limit)
    except Exception:
        return 0


def verify_all(raw: bytes, resolver: Resolver, *, max_signatures: int = MAX_SIGNATURES,
               timeout: float = 5.0) -> DkimResult:
    """Verify every DKIM-Signature (top first) independently. Never raises."""
    if header_lines(raw, b"dkim-signature") == 0:
        return DkimResult("none")  # unsigned mail never pays for dkimpy's full parse
    try:
        verifier = dkimpy.DKIM(raw, logger=_quiet, minkey=MIN_RSA_BITS, timeout=int(timeout))
    except Exception as exc:  # dkimpy's own header parser refuses some hostile input
        unparsable = DkimSignature("permerror", detail=f"unparsable: {exc}"[:200])
        return DkimResult("permerror", [unparsable])
    headers = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"]
    seen = KeyLookups()
    dnsfunc = make_dnsfunc(resolver, seen)
    signatures: list[DkimSignature] = []
    for idx, value in enumerate(headers[:max_signatures]):
        tags = _fields(value)
        sig = DkimSignature(
            result="permerror",
            domain=_text(tags.get(b"d", b"")).strip().lower().rstrip("."),
            selector=_text(tags.get(b"s", b"")).strip(),
            algorithm=_text(tags.get(b"a", b"")).strip().lower(),
            identity=_text(tags.get(b"i", b"")).strip(),
            b=_text(b"".join(tags.get(b"b", b"").split())[:8]))
        seen.reset()
        try:
            ok = verifier.verify(idx=idx, dnsfunc=dnsfunc)
        except dkimpy.ValidationError as exc:
            detail = _text(exc.args[0] if exc.args else exc)
            # A body hash mismatch is a broken signature; a missing tag is a malformed one.
            sig.result = "fail" if "mismatch" in detail else "permerror"
            sig.detail = detail[:200]
        except dkimpy.DnsTimeoutError as exc:
            sig.result, sig.detail = "temperror", _text(exc)[:200]
        except dkimpy.DKIMException as exc:
            sig.result, sig.detail = "permerror", f"{type(exc).__name__}: {exc}"[:200]
        except Exception as exc:  # hostile input inside dkimpy must stay a result
            sig.result, sig.detail = "permerror", f"{type(exc).__name__}: {exc}"[:200]
        else:
            if ok:
                sig.result = "pass"
                if tail := _unsigned_tail(verifier, tags):
                    sig.partial_body = True
                    sig.detail = f"{tail} body bytes after l= are not signed"
            elif seen.timed_out:
                sig.result, sig.detail = "temperror", "key lookup timed out"
            elif seen.missing:
                sig.result, sig.detail = "permerror", "no key for signature"
            elif seen.unusable:
                sig.result, sig.detail = "permerror", "key record unusable"
            else:
                sig.result, sig.detail = "fail", "signature did not verify"
        signatures.append(sig)
    return DkimResult(aggregate([s.result for s in signatures]), signatures, total=len(headers))
