"""Microsoft 365 recipients through Microsoft Graph: users, shared mailboxes and mail-enabled
groups with all their SMTP proxy addresses, incrementally through delta queries.

What is registered and how it is recognised (Graph v1.0 has no Exchange recipient type):
- a user with a `mail` address is a mailbox; `proxyAddresses` entries `SMTP:` (primary) and
  `smtp:` (aliases) are its addresses, other types (`x500:`, `sip:`, `SPO:` …) are ignored;
- a user whose account is disabled (`accountEnabled = false`) but has `mail` is taken for a
  shared mailbox: Exchange creates shared (and room) mailboxes with a disabled account. With
  `detect_shared = "user-purpose"` such users are checked with
  `GET /users/{id}/mailboxSettings/userPurpose` (MailboxSettings.Read) instead, and a
  disabled user with an ordinary mailbox stays a user;
- a group with `mailEnabled = true` and `mail` is a Microsoft 365 group (`groupTypes` has
  `Unified`) or a mail-enabled security group → kind "group", otherwise a distribution list →
  kind "list". Groups Exchange shows but Graph does not (dynamic distribution groups) are
  not listed by Graph and must be added by CSV.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msal
import requests

from mailmoat.config import M365DirectoryConfig
from mailmoat.directory.model import (
    GROUPS,
    USERS,
    DirectoryObject,
    DirectorySyncError,
    ProviderChanges,
    ResyncRequired,
)
from mailmoat.directory.transport import Sleep, get_json

log = logging.getLogger("mailmoat.directory")

GRAPH = "https://graph.microsoft.com/v1.0"
LOGIN = "https://login.microsoftonline.com"
SCOPE = ["https://graph.microsoft.com/.default"]
USER_FIELDS = ("id,displayName,mail,proxyAddresses,accountEnabled,companyName,department,jobTitle,"
               "userType")
GROUP_FIELDS = "id,displayName,mail,mailEnabled,securityEnabled,groupTypes,proxyAddresses"
MAX_PAGES = 5000  # 5000 pages of up to ~200 objects each: far beyond any tenant we serve
_PURPOSE_KIND = {"shared": "shared", "room": "shared", "equipment": "shared"}


def smtp_addresses(proxy_addresses: list[str]) -> tuple[str | None, list[str]]:
    """(primary, all SMTP addresses) from Exchange proxyAddresses ("SMTP:" marks the primary)."""
    primary: str | None = None
    found: list[str] = []
    for entry in proxy_addresses:
        kind, sep, address = str(entry).partition(":")
        if not sep or kind.lower() != "smtp" or "@" not in address:
            continue
        address = address.strip().lower()
        found.append(address)
        if kind == "SMTP":
            primary = address
    return primary, list(dict.fromkeys(found))


def _addresses(item: Mapping[str, Any], obj: DirectoryObject) -> None:
    """address and aliases from `mail` and `proxyAddresses`, as far as the item carries them."""
    if "mail" in item:
        mail = str(item.get("mail") or "").strip().lower()
        if not mail:
            obj.receives_mail = False
        obj.address = mail or None
    if "proxyAddresses" in item:
        primary, smtp = smtp_addresses(list(item.get("proxyAddresses") or []))
        if obj.address is None and "mail" not in item and primary:
            obj.address = primary
        own = obj.address or primary
        obj.aliases = sorted(a for a in smtp if a != own)


def user_object(item: Mapping[str, Any]) -> DirectoryObject:
    obj = DirectoryObject(external_id=str(item["id"]), scope=USERS)
    _addresses(item, obj)
    if "accountEnabled" in item:
        obj.kind = "user" if item.get("accountEnabled", True) is not False else "shared"
    for key, attr in (("displayName", "name"), ("companyName", "organisation"),
                      ("department", "department"), ("jobTitle", "title")):
        if key in item:
            setattr(obj, attr, str(item.get(key) or ""))
    return obj


def group_object(item: Mapping[str, Any]) -> DirectoryObject:
    obj = DirectoryObject(external_id=str(item["id"]), scope=GROUPS)
    _addresses(item, obj)
    if "mailEnabled" in item and item.get("mailEnabled") is not True:
        obj.receives_mail = False
    if "groupTypes" in item or "securityEnabled" in item:
        unified = "Unified" in (item.get("groupTypes") or [])
        obj.kind = "group" if unified or item.get("securityEnabled") else "list"
    if "displayName" in item:
        obj.name = str(item.get("displayName") or "")
    return obj


class GraphDirectory:
    """Client-credentials access to Graph (msal) and the users/groups delta walk."""

    name = "m365"

    def __init__(self, config: M365DirectoryConfig, client_secret: str, *, http: requests.Session,
                 sleep: Sleep) -> None:
        self.config = config
        self.http = http
        self.sleep = sleep
        try:
            self._app = msal.ConfidentialClientApplication(
                config.client_id, client_credential=client_secret,
                authority=f"{LOGIN}/{config.tenant_id}", http_client=http)
        except (ValueError, requests.RequestException) as exc:
            # msal reads the tenant's OpenID configuration here: an unknown tenant fails now.
            raise DirectorySyncError(f"Microsoft 365 tenant {config.tenant_id!r}: {exc}") from exc

    @classmethod
    def from_config(cls, config: M365DirectoryConfig, *, http: requests.Session, sleep: Sleep,
                    read_secret: Any = os.environ.get) -> GraphDirectory:
        secret = read_secret(config.client_secret_env)
        if not secret:
            raise DirectorySyncError(f"the client secret is not set (env {config.client_secret_env})")
        return cls(config, str(secret), http=http, sleep=sleep)

    def _headers(self) -> dict[str, str]:
        # msal keeps the token in its in-memory cache and fetches a new one near expiry.
        try:
            result = self._app.acquire_token_for_client(scopes=SCOPE)
        except (ValueError, requests.RequestException) as exc:
            raise DirectorySyncError(f"Microsoft 365 token: {type(exc).__name__}") from exc
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            error = result.get("error", "no token") if isinstance(result, dict) else "no token"
            detail = str(result.get("error_description", "")).splitlines()[0][:200] if isinstance(
                result, dict) and result.get("error_description") else ""
            raise DirectorySyncError(f"Microsoft 365 token: {error} {detail}".strip())
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def fetch(self, state: dict[str, str]) -> ProviderChanges:
        changes = ProviderChanges()
        for scope, path, fields, parse in ((USERS, "/users/delta", USER_FIELDS, user_object),
                                           (GROUPS, "/groups/delta", GROUP_FIELDS, group_object)):
            link = state.get(f"{scope}_delta_link")
            start = f"{GRAPH}{path}?$select={fields}"
            try:
                items, delta_link = self._walk(link or start)
            except ResyncRequired:
                if not link:
                    raise
                log.warning("Graph %s delta cursor expired: listing everything again", scope)
                link = None
                items, delta_link = self._walk(start)
            if link is None:
                changes.complete_scopes.add(scope)
            for item in items:
                if "@removed" in item:
                    changes.removed_ids.add(str(item["id"]))
                else:
                    changes.objects.append(parse(item))
            changes.state[f"{scope}_delta_link"] = delta_link
        if self.config.detect_shared == "user-purpose":
            self._check_user_purpose(changes)
        return changes

    def _walk(self, url: str) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            if urlsplit(url).netloc != urlsplit(GRAPH).netloc:
                raise DirectorySyncError("Graph sent a paging link to another host; not followed")
            page = get_json(self.http, url, headers=self._headers, sleep=self.sleep)
            value = page.get("value")
            if not isinstance(value, list):
                raise DirectorySyncError("Graph answered a page without a value list")
            items.extend(v for v in value if isinstance(v, dict) and v.get("id"))
            if page.get("@odata.nextLink"):
                url = str(page["@odata.nextLink"])
            elif page.get("@odata.deltaLink"):
                return items, str(page["@odata.deltaLink"])
            else:
                raise DirectorySyncError("Graph answered a delta page with neither nextLink nor deltaLink")
        raise DirectorySyncError(f"more than {MAX_PAGES} delta pages; stopped")

    def _check_user_purpose(self, changes: ProviderChanges) -> None:
        """Ask Exchange what a disabled account's mailbox is (one request per such user)."""
        for obj in changes.objects:
            if obj.scope != USERS or obj.kind != "shared" or not obj.receives_mail:
                continue
            url = f"{GRAPH}/users/{obj.external_id}/mailboxSettings/userPurpose"
            try:
                answer = get_json(self.http, url, headers=self._headers, sleep=self.sleep)
            except DirectorySyncError as exc:
                if exc.status == 404:  # no Exchange mailbox behind the mail attribute
                    obj.receives_mail = False
                    continue
                raise
            obj.kind = _PURPOSE_KIND.get(str(answer.get("value", "")).lower(), "user")
