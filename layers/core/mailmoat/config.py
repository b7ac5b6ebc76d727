"""Tenant configuration (DESIGN §9): one TOML file locally, the directory table on AWS, same fields."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DeliveryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["maildir", "smtp", "ses"] = "maildir"
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


class UserConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str
    name: str = ""
    organisation: str = ""
    department: str = ""
    title: str = ""
    memo: str = ""
    spam_filter: bool = True


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
    spam_action: Literal["tag", "quarantine"] = "tag"
    retention_days: int = 30
    archive: bool = False
    allowed_senders: list[str] = Field(default_factory=list)
    blocked_senders: list[str] = Field(default_factory=list)
    dangerous_extensions_add: list[str] = Field(default_factory=list)
    dangerous_extensions_remove: list[str] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    users: list[UserConfig] = Field(default_factory=list)

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
