"""Google Workspace recipients through the Admin SDK Directory API: users with their aliases
and groups with theirs (a group address must be registered: Gmail routes mail to a group in
the same domain through the MX, so through us).

Access: a service account with domain-wide delegation for the two read-only scopes below,
impersonating an administrator (`admin_subject`). Google has no delta listing for users or
groups, so every run lists everything and the sync compares.

Suspended users are not registered: Gmail does not deliver to them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account

from mailmoat.config import GoogleDirectoryConfig
from mailmoat.directory.model import GROUPS, USERS, DirectoryObject, DirectorySyncError, ProviderChanges
from mailmoat.directory.transport import Sleep, get_json

API = "https://admin.googleapis.com/admin/directory/v1"
SCOPES = ["https://www.googleapis.com/auth/admin.directory.user.readonly",
          "https://www.googleapis.com/auth/admin.directory.group.readonly"]
USER_FIELDS = ("nextPageToken,users(id,primaryEmail,name/fullName,aliases,nonEditableAliases,"
               "suspended,organizations)")
GROUP_FIELDS = "nextPageToken,groups(id,email,name,aliases,nonEditableAliases)"
MAX_PAGES = 5000


def _addresses(item: dict[str, Any], primary_key: str) -> tuple[str, list[str]]:
    address = str(item.get(primary_key) or "").strip().lower()
    aliases = [str(a).strip().lower() for key in ("aliases", "nonEditableAliases")
               for a in item.get(key) or [] if "@" in str(a)]
    return address, sorted(set(aliases) - {address})


def user_object(item: dict[str, Any]) -> DirectoryObject:
    address, aliases = _addresses(item, "primaryEmail")
    organisations = [o for o in item.get("organizations") or [] if isinstance(o, dict)]
    org = next((o for o in organisations if o.get("primary")), organisations[0] if organisations else {})
    name: dict[str, Any] = item["name"] if isinstance(item.get("name"), dict) else {}
    return DirectoryObject(
        external_id=str(item["id"]), scope=USERS, address=address or None, aliases=aliases,
        receives_mail=bool(address) and not item.get("suspended", False), kind="user",
        name=str(name.get("fullName") or ""), organisation=str(org.get("name") or ""),
        department=str(org.get("department") or ""), title=str(org.get("title") or ""))


def group_object(item: dict[str, Any]) -> DirectoryObject:
    address, aliases = _addresses(item, "email")
    return DirectoryObject(external_id=str(item["id"]), scope=GROUPS, address=address or None,
                           aliases=aliases, receives_mail=bool(address), kind="group",
                           name=str(item.get("name") or ""), organisation="", department="", title="")


def load_key(config: GoogleDirectoryConfig, read_secret: Callable[[str], str | None]) -> dict[str, Any]:
    """The service account's JSON key from the file or env var the config names."""
    try:
        if config.service_account_env:
            text = read_secret(config.service_account_env)
            if not text:
                raise DirectorySyncError(
                    f"the service account key is not set (env {config.service_account_env})")
        elif config.service_account_file is not None:
            text = Path(config.service_account_file).read_text(encoding="utf-8")
        else:
            raise DirectorySyncError("google: set service_account_file or service_account_env")
        info = json.loads(text)
    except OSError as exc:
        raise DirectorySyncError(f"the service account key file cannot be read: {exc.strerror}") from exc
    except ValueError as exc:
        raise DirectorySyncError("the service account key is not JSON") from exc
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise DirectorySyncError("the service account key is not a service_account JSON key")
    return info


class GoogleDirectory:
    name = "google"

    def __init__(self, config: GoogleDirectoryConfig, key: dict[str, Any], *, http: requests.Session,
                 sleep: Sleep) -> None:
        self.config = config
        self.http = http
        self.sleep = sleep
        try:
            self._credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                key, scopes=SCOPES, subject=config.admin_subject)
        except (ValueError, KeyError) as exc:
            raise DirectorySyncError(f"the service account key is unusable: {type(exc).__name__}") from exc

    @classmethod
    def from_config(cls, config: GoogleDirectoryConfig, *, http: requests.Session, sleep: Sleep,
                    read_secret: Callable[[str], str | None] = os.environ.get) -> GoogleDirectory:
        return cls(config, load_key(config, read_secret), http=http, sleep=sleep)

    def _headers(self) -> dict[str, str]:
        if not self._credentials.valid:
            try:
                # The signed JWT goes to oauth2.googleapis.com/token through our session.
                self._credentials.refresh(google.auth.transport.requests.Request(session=self.http))
            except google.auth.exceptions.GoogleAuthError as exc:
                # e.g. unauthorized_client: domain-wide delegation is not granted for these scopes
                raise DirectorySyncError(f"Google token: {str(exc)[:300]}") from exc
        headers: dict[str, str] = {"Accept": "application/json"}
        self._credentials.apply(headers)
        return headers

    def fetch(self, state: dict[str, str]) -> ProviderChanges:
        changes = ProviderChanges(complete_scopes={USERS, GROUPS})
        for item in self._list("users", USER_FIELDS):
            changes.objects.append(user_object(item))
        for item in self._list("groups", GROUP_FIELDS):
            changes.objects.append(group_object(item))
        return changes

    def _list(self, collection: str, fields: str) -> list[dict[str, Any]]:
        url = f"{API}/{collection}"
        params = {"customer": self.config.customer, "maxResults": "500" if collection == "users" else "200",
                  "fields": fields}
        items: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            page = get_json(self.http, url, params=params, headers=self._headers, sleep=self.sleep)
            value = page.get(collection, [])  # an empty domain answers without the list
            if not isinstance(value, list):
                raise DirectorySyncError(f"Google answered {collection} without a list")
            items.extend(v for v in value if isinstance(v, dict) and v.get("id"))
            token = page.get("nextPageToken")
            if not token:
                return items
            params = {**params, "pageToken": str(token)}
        raise DirectorySyncError(f"more than {MAX_PAGES} pages of {collection}; stopped")
