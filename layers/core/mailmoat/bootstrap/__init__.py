"""The composition roots: bootstrap(settings) picks the one for `settings.runtime` (local or
aws); they are the only code that builds adapters."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by what builds a runtime, not by a handler module's import
    from pathlib import Path

    from mailmoat.config import GatewayConfig
    from mailmoat.ports import Mailer
    from mailmoat.runtime import Runtime
    from mailmoat.settings import Settings


def bootstrap(settings: Settings | None = None, *, config: GatewayConfig | None = None,
              data_dir: Path | None = None, mailer: Mailer | None = None,
              role: str | None = None) -> Runtime:
    """The runtime for this process. `mailer` replaces every tenant's delivery path (tests);
    `role` names what an AWS function serves ("portal", a stage), whose production needs it
    checks (locally one process does everything)."""
    from mailmoat.memory import return_large_blocks_to_the_system

    return_large_blocks_to_the_system()  # a freed 25 MB attachment leaves the process (its doc)
    if settings is None:
        from mailmoat.settings import Settings  # pydantic: loaded by what builds, not at import

        settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    if settings.runtime == "aws":
        from mailmoat.bootstrap.aws import build_aws
        from mailmoat.config import load_config

        if config is None and settings.config is not None:
            config = load_config(settings.config)
        # Tenants come from the directory table unless a config was given with tenants.
        return build_aws(settings, config=config if config is not None and config.tenants else None,
                         mailer=mailer, role=role)
    from mailmoat.bootstrap.local import build_local

    return build_local(settings, config=config, mailer=mailer)
