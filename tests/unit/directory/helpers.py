"""Recorded directory API exchanges (tests/fixtures/directory/*.json) played through `responses`,
and the tenant configurations the directory tests use."""

from __future__ import annotations

import json
from typing import Any

import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailmoat.adapters.sqlite import SqliteDatabase, SqliteDirectory
from mailmoat.config import DirectoryConfig, GoogleDirectoryConfig, M365DirectoryConfig, TenantConfig
from tests.conftest import FIXTURES

DIRECTORY_FIXTURES = FIXTURES / "directory"
M365_TENANT_ID = "11111111-2222-3333-4444-555555555555"
GRAPH = "https://graph.microsoft.com/v1.0"
GOOGLE_API = "https://admin.googleapis.com/admin/directory/v1"
DOMAINS = ["corp.example", "corp-sales.example"]


def exchanges(name: str) -> list[dict[str, Any]]:
    data = json.loads((DIRECTORY_FIXTURES / name).read_text(encoding="utf-8"))
    return list(data["exchanges"])


def play(rsps: responses.RequestsMock, name: str, *, skip: set[str] | None = None) -> None:
    """Register a recorded run; URLs with a query match that exact query."""
    for ex in exchanges(name):
        if skip and ex["url"] in skip:
            continue
        rsps.add(ex["method"], ex["url"], json=ex["json"], status=ex.get("status", 200),
                 headers=ex.get("headers"))


def url_of(name: str, fragment: str) -> str:
    """The recorded URL in `name` that contains `fragment`."""
    (url,) = [ex["url"] for ex in exchanges(name) if fragment in ex["url"]]
    return str(url)


def m365_tenant(**directory: Any) -> TenantConfig:
    return TenantConfig(name="corp", domains=DOMAINS, directory=DirectoryConfig(
        provider="m365", m365=M365DirectoryConfig(tenant_id=M365_TENANT_ID, client_id="app-id",
                                                  client_secret_env="CORP_GRAPH_SECRET"),
        **directory))


def service_account_key() -> dict[str, str]:
    """A throwaway service-account key: a fresh RSA key in the JSON layout Google issues."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": "corp-mail", "private_key_id": "k1",
            "private_key": pem, "client_email": "mailmoat-sync@corp-mail.iam.gserviceaccount.com",
            "client_id": "1000000000001", "token_uri": "https://oauth2.googleapis.com/token"}


def google_tenant(**directory: Any) -> TenantConfig:
    return TenantConfig(name="corp", domains=DOMAINS, directory=DirectoryConfig(
        provider="google", google=GoogleDirectoryConfig(admin_subject="admin@corp.example",
                                                        service_account_env="CORP_GOOGLE_KEY"),
        **directory))


def secrets(**values: str) -> Any:
    return values.get


def sqlite_directory(tmp_path: Any, tenant: TenantConfig) -> SqliteDirectory:
    directory = SqliteDirectory(SqliteDatabase(tmp_path / "mailmoat.sqlite3"))
    directory.ensure_tenant(tenant.name, tenant.domains)
    return directory


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep({seconds})")


class SleepRecorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
