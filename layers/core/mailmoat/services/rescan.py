"""The portal's second look at bytes it is about to hand out: the scan stage's engine, sandbox included."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig
    from mailmoat.pipeline import Services
    from mailmoat.scan.result import FileResult

Rescan = Callable[[bytes, str | None], "FileResult"]


def rescanner(services: Services, tenant: TenantConfig) -> Rescan:
    """`rescan(data, filename)` with the tenant's lists: decrypted members and safe copies get
    the same checks (limits, antivirus, sandbox) as the attachment they came from."""
    # Loaded on the first unlock or safe copy, not at the portal's cold start.
    from mailmoat.scan.engine import engine_for
    from mailmoat.scan.lists import Lists

    engine = engine_for(services)
    lists = Lists.for_tenant(tenant)

    def rescan(data: bytes, filename: str | None) -> FileResult:
        return engine.analyse(data, filename, lists)

    return rescan
