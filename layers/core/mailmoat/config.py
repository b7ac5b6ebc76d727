"""Tenant configuration (DESIGN §9): one TOML file locally, the directory table on AWS, same fields."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class DeliveryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # mailmanager (AWS): submitted to the stack's Mail Manager AUTH ingress point, relayed to `host`
    mode: Literal["maildir", "smtp", "ses", "mailmanager"] = "maildir"
    host: str | None = None
    port: int = 25
    require_tls: bool = False  # smtp: STARTTLS is used when offered; this makes it mandatory
    username: str | None = None
    password_env: str | None = None  # name of the env var holding the SMTP AUTH password
    routing_domain: str | None = None  # ses: user@<routing_domain>
    relay_address: str | None = None  # ses: the verified From


class RuleConfig(BaseModel):
    """One custom rule; conditions are ANDed, the first matching rule wins."""

    model_config = ConfigDict(extra="forbid")

    name: str
    sender: list[str] = Field(default_factory=list)  # addresses or @domains
    min_size: int | None = None
    max_size: int | None = None
    countries: list[str] = Field(default_factory=list)  # any of these on the route
    action: Literal["isolate", "delete", "convert-pdf", "remove-macros", "html-to-text", "keep"]
    # convert-pdf: the PDF replaces the file in the message ("message"), or the file is only
    # isolated and the portal offers it as a PDF ("portal").
    pdf_into: Literal["message", "portal"] = "message"


class UserConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str
    name: str = ""
    organisation: str = ""
    department: str = ""
    title: str = ""
    memo: str = ""
    spam_filter: bool = True


class M365DirectoryConfig(BaseModel):
    """Microsoft 365 through Microsoft Graph with an app registration (client credentials).
    The app needs the application permissions User.Read.All and Group.Read.All (admin
    consent); MailboxSettings.Read only with detect_shared = "user-purpose"."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str  # the Entra tenant (GUID or <name>.onmicrosoft.com)
    client_id: str
    # The name of the env var holding the client secret (the secret itself never goes here).
    client_secret_env: str = "MAILMOAT_M365_CLIENT_SECRET"  # noqa: S105
    # How a shared mailbox is told from a user: "account-disabled" (Exchange creates shared
    # mailboxes with a disabled account), or "user-purpose" (asks each disabled account's
    # mailboxSettings/userPurpose: one request each, needs MailboxSettings.Read).
    detect_shared: Literal["account-disabled", "user-purpose"] = "account-disabled"


class GoogleDirectoryConfig(BaseModel):
    """Google Workspace through the Admin SDK Directory API: a service account with
    domain-wide delegation for the two read-only directory scopes, acting as an admin."""

    model_config = ConfigDict(extra="forbid")

    admin_subject: str  # an admin the service account impersonates
    service_account_file: Path | None = None  # the JSON key file
    service_account_env: str | None = None  # or: env var holding the JSON key itself
    customer: str = "my_customer"


class DirectoryConfig(BaseModel):
    """Where the tenant's recipients come from besides CSV: `mailmoat directory sync`."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["m365", "google"] | None = None
    # A run that would remove more than this share of the tenant's recipients is refused
    # unless confirmed (an empty or partial API answer must not empty the gate).
    max_delete_share: float = Field(default=0.10, ge=0.0, le=1.0)
    m365: M365DirectoryConfig | None = None
    google: GoogleDirectoryConfig | None = None


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    domains: list[str]
    language: Literal["ja", "en"] = "ja"
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    isolation: Literal["risky", "all"] = "risky"
    zip_is_archive_type: bool = False
    defang_all_links: bool = False
    html_to_text: bool = False
    # A file the sandbox later calls clean is mailed to the recipients (sandbox_verdicts.py);
    # off: it waits in the portal, downloadable.
    sandbox_release_clean: bool = False
    # The sandbox score (CAPE's malscore, 0–10) above which this tenant's files are danger, and
    # from which they are suspicious; unset: the process-wide MAILMOAT_CAPE_DANGER_SCORE /
    # MAILMOAT_CAPE_SUSPICIOUS_SCORE (scan/sandbox.py SandboxConfig.for_tenant).
    sandbox_danger_score: float | None = Field(default=None, ge=0, le=10)
    sandbox_suspicious_score: float | None = Field(default=None, ge=0, le=10)
    spam_action: Literal["tag", "quarantine"] = "tag"
    spam_subject_prefix: str = ""  # tag: put in front of the Subject, e.g. "[SPAM] " or "【迷惑メール】"
    retention_days: int = 30
    archive: bool = False
    archive_journal_address: str | None = None  # also mail each archived original here (POP import)
    # Keep-mail (continuity view): days of delivered copies kept for the recipients to read; 0 = off.
    # Opt-in: it keeps a second copy of every delivered message on the gateway.
    keepmail_days: int = 0
    allowed_senders: list[str] = Field(default_factory=list)
    blocked_senders: list[str] = Field(default_factory=list)
    dangerous_extensions_add: list[str] = Field(default_factory=list)
    dangerous_extensions_remove: list[str] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    users: list[UserConfig] = Field(default_factory=list)
    directory: DirectoryConfig = Field(default_factory=DirectoryConfig)
    # Isolated originals (download, unlock, members) only from these networks (CIDRs); the PDF
    # copy from anywhere. Empty: from anywhere.
    original_from_ips: list[str] = Field(default_factory=list)
    # PPAP pairing (mailmoat.ppap): passwords in the same mail or an authenticated follow-up
    # from the same sender domain to the same recipients open a held encrypted file.
    ppap_pairing: bool = True
    ppap_window_minutes: int = Field(default=30, ge=1, le=7 * 24 * 60)
    # Retro-hunt (mailmoat.retrohunt): files downloaded in the last N days are scanned again
    # after a signature or rules change; who took one that is danger now is told, and so are
    # the tenant's admins (its console accounts' addresses and these).
    retrohunt_days: int = Field(default=14, ge=0, le=400)
    admin_notice_addresses: list[str] = Field(default_factory=list)

    @field_validator("original_from_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        return [str(ipaddress.ip_network(v.strip(), strict=False)) for v in value]

    def original_allowed(self, client: str | None) -> bool:
        """May a client at this address fetch an isolated original? Unknown addresses may not
        once networks are set."""
        if not self.original_from_ips:
            return True
        import ipaddress

        try:
            address = ipaddress.ip_address(client or "")
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in ipaddress.ip_network(n) for n in self.original_from_ips)

    @model_validator(mode="after")
    def _sandbox_scores(self) -> TenantConfig:
        if self.sandbox_danger_score is not None and self.sandbox_suspicious_score is not None \
                and self.sandbox_suspicious_score > self.sandbox_danger_score:
            raise ValueError(f"tenant {self.name}: sandbox_suspicious_score must not be above "
                             "sandbox_danger_score")
        return self

    @field_validator("domains")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().rstrip(".") for d in value if d.strip()]


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenants: list[TenantConfig] = Field(default_factory=list, alias="tenant")

    def tenant(self, name: str | None) -> TenantConfig:
        for t in self.tenants:
            if t.name == name:
                return t
        return self.tenants[0] if self.tenants else DEFAULT_TENANT

    def tenant_for_domain(self, domain: str) -> TenantConfig | None:
        domain = domain.lower()
        for t in self.tenants:
            if domain in t.domains:
                return t
        return None


DEFAULT_TENANT = TenantConfig(name="default", domains=[])


def load_config(path: Path | None) -> GatewayConfig:
    if path is None:
        return GatewayConfig()
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return GatewayConfig.model_validate(data)
