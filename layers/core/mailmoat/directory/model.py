"""What a directory provider hands the sync: objects it listed, ids it deleted, and its cursor."""

from __future__ import annotations

from dataclasses import dataclass, field

# A provider lists users (and shared mailboxes, which are users with a mailbox nobody signs
# in to) separately from groups; a listing is either complete or a delta, per scope.
USERS, GROUPS = "users", "groups"


def scope_of(kind: str) -> str:
    return GROUPS if kind in ("group", "list") else USERS


class DirectorySyncError(Exception):
    """The run could not finish (API error, bad credentials, bad config); nothing was changed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status when an API answered with an error


class ResyncRequired(DirectorySyncError):
    """The provider no longer knows the stored delta cursor: list everything again."""


@dataclass(slots=True)
class DirectoryObject:
    """One user or group as the provider sent it. In a delta, a field the provider left out is
    None and keeps the value we already have."""

    external_id: str
    scope: str
    receives_mail: bool = True  # False: no mailbox / address (any more): it must not be registered
    address: str | None = None
    aliases: list[str] | None = None
    kind: str | None = None
    name: str | None = None
    organisation: str | None = None
    department: str | None = None
    title: str | None = None


@dataclass(slots=True)
class ProviderChanges:
    objects: list[DirectoryObject] = field(default_factory=list)
    removed_ids: set[str] = field(default_factory=set)
    # Scopes listed in full this run: our rows of such a scope that were not listed are gone.
    complete_scopes: set[str] = field(default_factory=set)
    # Stored after a successful apply and handed back on the next run (delta cursors).
    state: dict[str, str] = field(default_factory=dict)


