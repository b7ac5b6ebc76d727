"""The portal's second look at bytes it is about to hand out: the scan stage's engine, sandbox included."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig
    from mailmoat.pipeline import Services
    from mailmoat.scan.engine import Engine
    from mailmoat.scan.result import FileResult

Rescan = Callable[[bytes, str | None], "FileResult"]

# Decrypted content that no antivirus has passed. Only the scan function has clamd on AWS, so the
# portal that unlocks a file there usually has none: what it opened stays isolated, never a
# static-only "safe" (the scan stage's AV_DISABLED would be refused in production anyway).
AV_UNCHECKED = "AV_UNCHECKED"


def rescanner(services: Services, tenant: TenantConfig, *,
              antivirus_required: bool = False) -> Rescan:
    """`rescan(data, filename)` with the tenant's lists: decrypted members and safe copies get
    the same checks (limits, antivirus, sandbox) as the attachment they came from.
    `antivirus_required`: content no antivirus has seen yet (what a password opened) gets
    AV_UNCHECKED unless an antivirus answered for it. A safe copy is not required to: it is
    made from an original the scan stage's antivirus has passed."""
    # Loaded on the first unlock or safe copy, not at the portal's cold start.
    from mailmoat.scan.engine import engine_for
    from mailmoat.scan.lists import Lists

    engine = engine_for(services)
    lists = Lists.for_tenant(tenant)

    def rescan(data: bytes, filename: str | None) -> FileResult:
        result = engine.analyse(data, filename, lists)  # a copy: the cached content stays as is
        unchecked = _no_antivirus_answer(engine, result) if antivirus_required else None
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
