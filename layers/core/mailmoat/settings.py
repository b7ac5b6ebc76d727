"""Process settings from MAILMOAT_* environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    """Bounds on work done for one untrusted message (STYLE habit 4). Hitting one is a finding."""

    model_config = SettingsConfigDict(env_prefix="MAILMOAT_LIMIT_", extra="ignore")

    max_parts: int = 5000
    max_depth: int = 50
    max_header_bytes: int = 1_000_000
    archive_max_members: int = 10_000
    archive_max_depth: int = 5
    archive_max_expanded_bytes: int = 200 * 1024 * 1024
    archive_max_ratio: int = 200
    scan_seconds: float = 20.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILMOAT_", extra="ignore")

    # "production" refuses fakes (STYLE: Dangerzone); "dev" and "test" allow them.
    mode: Literal["production", "dev", "test"] = "production"
    runtime: Literal["local", "aws"] = "local"

    data_dir: Path = Path("var")
    config: Path | None = None  # tenant configuration TOML (local)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_hostname: str = "mailmoat.localhost"
    max_message_bytes: int = 40 * 1024 * 1024  # SES inbound accepts up to 40 MB
    portal_host: str = "127.0.0.1"
    portal_port: int = 8080
    portal_base_url: str | None = None

    dns_zone: Path | None = None  # offline zone file (DESIGN §9); otherwise live DNS
    dns_timeout: float = 3.0
    geoip_db: Path | None = None
    clamd_socket: str | None = None  # unix socket path or host:port
    arc_key_file: Path | None = None
    arc_selector: str = "mailmoat"
    arc_domain: str | None = None
    authserv_id: str = "mailmoat"

    # The gateway's own address for mail it writes (DSNs, spam digests, archive journal).
    # Default: postmaster@<smtp_hostname>.
    postmaster_address: str | None = None
    # Outbound path for notices to senders (DSNs): a smarthost "host:port"; unset → the
    # sender domain's MX hosts (port `outbound_smtp_port`), as any MTA sends a bounce.
    notice_relay: str | None = None
    outbound_smtp_port: int = 25

    # Maintenance switch: accept and store mail but do not process it until restarted without.
    hold_processing: bool = False

    max_crash_attempts: int = 3  # a message that kills the process this often is held
    delivery_max_attempts: int = 8
    delivery_retry_base_seconds: float = 30.0

    limits: Limits = Field(default_factory=Limits)

    @property
    def postmaster(self) -> str:
        return self.postmaster_address or f"postmaster@{self.smtp_hostname}"

    @property
    def portal_url(self) -> str:
        return self.portal_base_url or f"http://{self.portal_host}:{self.portal_port}"
