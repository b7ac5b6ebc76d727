"""The tenant's delivery path for either composition root: one factory, the tenant's own
settings honoured alike (require_tls, AUTH), a mailer per tenant and route."""

from __future__ import annotations

import os
from collections.abc import Callable

from mailmoat.config import TenantConfig
from mailmoat.ports import Mailer
from mailmoat.settings import Settings

# Builds the mailer of a mode that only one runtime has (maildir locally, ses on AWS).
ModeFactory = Callable[[TenantConfig], Mailer]


def smtp_mailer(settings: Settings, tenant: TenantConfig) -> Mailer:
    from mailmoat.adapters.smtp import SmtpMailer

    delivery = tenant.delivery
    if not delivery.host:
        raise ValueError(f"tenant {tenant.name}: delivery.mode=smtp needs delivery.host")
    password = os.environ.get(delivery.password_env) if delivery.password_env else None
    return SmtpMailer(delivery.host, delivery.port, require_tls=delivery.require_tls,
                      username=delivery.username, password=password,
                      local_hostname=settings.smtp_hostname)


def mailer_factory(settings: Settings, modes: dict[str, ModeFactory],
                   mode_of: Callable[[TenantConfig], str] | None = None,
                   wrap: Callable[[Mailer], Mailer] | None = None) -> Callable[[TenantConfig], Mailer]:
    """mailer_for(tenant): `smtp` everywhere, plus the modes this runtime offers. `mode_of`
    maps a tenant to its effective mode (AWS: unset means the stack's default); `wrap` decorates
    every mailer built (AWS: sends only under a delivery claim). Cached per tenant and route."""
    cache: dict[tuple[str, str, str, int], Mailer] = {}
    factories: dict[str, ModeFactory] = {"smtp": lambda t: smtp_mailer(settings, t), **modes}

    def mailer_for(tenant: TenantConfig) -> Mailer:
        mode = mode_of(tenant) if mode_of is not None else tenant.delivery.mode
        key = (tenant.name, mode, tenant.delivery.host or "", tenant.delivery.port)
        if key not in cache:
            if mode not in factories:
                raise ValueError(f"tenant {tenant.name}: delivery mode {mode!r} is not available "
                                 f"here (available: {', '.join(sorted(factories))})")
            mailer = factories[mode](tenant)
            cache[key] = wrap(mailer) if wrap is not None else mailer
        return cache[key]

    return mailer_for
