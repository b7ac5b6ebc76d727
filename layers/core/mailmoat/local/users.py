"""Recipients as CSV: import (UTF-8 or CP932, all-or-nothing, errors by line) and export.

Columns, in this order: address, name, organisation, department, title, memo, spam_filter,
aliases, kind. Files with fewer columns stay valid: a row without the aliases (or kind) column
keeps what the directory already has there. Aliases are separated by spaces, `;` or `,`
inside their cell; kind is user / shared / group / list.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from dataclasses import dataclass, field
from email.utils import parseaddr

from mailmoat.ports import RECIPIENT_KINDS, Directory, Recipient

# The product's column order; a header row with these (or the Japanese) names is optional.
# New columns only ever go at the end, so files written for an older version stay valid.
COLUMNS = ("address", "name", "organisation", "department", "title", "memo", "spam_filter",
           "aliases", "kind")
_ALIASES, _KIND = COLUMNS.index("aliases"), COLUMNS.index("kind")
_ALIAS_SEPARATORS = re.compile(r"[\s;,、]+")
_KIND_NAMES = {"ユーザー": "user", "共有": "shared", "共有メールボックス": "shared",
               "グループ": "group", "メーリングリスト": "list", "配布リスト": "list"}
# Rows a directory sync manages: `--replace` leaves them to their provider.
_SYNCED_SOURCES = frozenset({"m365", "google"})
_HEADER_NAMES = {"address", "email", "e-mail", "mail", "メールアドレス", "アドレス"}
_TRUE = {"on", "true", "1", "yes", "y", "有効", "オン", "する"}
_FALSE = {"off", "false", "0", "no", "n", "無効", "オフ", "しない"}
MAX_ROWS = 200_000


@dataclass
class ImportResult:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    applied: bool = False

    def summary(self) -> str:
        if self.errors:
            return f"{len(self.errors)} bad rows: nothing imported"
        verb = "imported" if self.applied else "dry run, would import"
        return (f"{verb}: {len(self.added)} added, {len(self.changed)} changed, "
                f"{len(self.unchanged)} unchanged, {len(self.removed)} removed")


def decode_csv(data: bytes) -> str:
    """UTF-8 (with or without BOM) first; CP932 as Japanese Excel saves it otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp932")


def _flag(value: str) -> bool | None:
    v = value.strip().lower()
    if v == "":
        return True
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


def _address_error(address: str) -> bool:
    _, parsed = parseaddr(address)
    local, at, domain = address.partition("@")
    return not at or not local or not domain or parsed != address or " " in address


@dataclass
class _Row:
    recipient: Recipient
    line: int
    has_aliases: bool  # the row reaches the aliases column (an empty cell clears them)
    has_kind: bool


def _parse(text: str, directory: Directory, tenant: str | None) -> tuple[list[_Row], list[str]]:
    rows: list[_Row] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text, newline=""))
    for lineno, row in enumerate(reader, start=1):
        if lineno > MAX_ROWS:
            errors.append(f"line {lineno}: more than {MAX_ROWS} rows")
            break
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if lineno == 1 and row[0].strip().lower() in _HEADER_NAMES:
            continue
        cells = [unneutralise_cell(c.strip()) for c in row] + [""] * (len(COLUMNS) - len(row))
        if len(row) > len(COLUMNS):
            errors.append(f"line {lineno}: {len(row)} columns, expected at most {len(COLUMNS)}")
            continue
        address = cells[0].lower()
        domain = address.partition("@")[2]
        if _address_error(address):
            errors.append(f"line {lineno}: not an e-mail address: {cells[0]!r}")
            continue
        row_tenant = directory.tenant_for_domain(domain)
        if tenant is not None and row_tenant != tenant:
            errors.append(f"line {lineno}: {address} is not in a domain of tenant {tenant!r}")
            continue
        if row_tenant is None:
            errors.append(f"line {lineno}: {address}: domain {domain!r} belongs to no tenant")
            continue
        spam = _flag(cells[6])
        if spam is None:
            errors.append(f"line {lineno}: spam filter must be on/off, got {cells[6]!r}")
            continue
        aliases = sorted({a.lower() for a in _ALIAS_SEPARATORS.split(cells[_ALIASES]) if a} - {address})
        bad = [a for a in aliases if _address_error(a)
               or directory.tenant_for_domain(a.partition("@")[2]) != row_tenant]
        if bad:
            errors.append(f"line {lineno}: aliases must be addresses in the tenant's domains: "
                          f"{', '.join(bad)}")
            continue
        kind = _KIND_NAMES.get(cells[_KIND], cells[_KIND].lower()) or "user"
        if kind not in RECIPIENT_KINDS:
            errors.append(f"line {lineno}: kind must be one of {', '.join(RECIPIENT_KINDS)}, "
                          f"got {cells[_KIND]!r}")
            continue
        clash = next((a for a in [address, *aliases] if a in seen), None)
        if clash is not None:
            errors.append(f"line {lineno}: {clash} repeats line {seen[clash]}")
            continue
        for a in [address, *aliases]:
            seen[a] = lineno
        rows.append(_Row(Recipient(address=address, tenant=row_tenant, name=cells[1],
                                   organisation=cells[2], department=cells[3], title=cells[4],
                                   memo=cells[5], spam_filter=spam, kind=kind, aliases=aliases,
                                   source="csv"),
                         lineno, has_aliases=len(row) > _ALIASES, has_kind=len(row) > _KIND))
    return rows, errors


def parse_rows(text: str, directory: Directory, tenant: str | None) -> tuple[list[Recipient], list[str]]:
    rows, errors = _parse(text, directory, tenant)
    return [r.recipient for r in rows], errors


def _merge(row: _Row, old: Recipient | None) -> Recipient:
    """The row as it will be stored: what the file leaves out, and who owns the row, stay."""
    new = row.recipient
    if old is None:
        return new
    return dataclasses.replace(new, aliases=new.aliases if row.has_aliases else list(old.aliases),
                               kind=new.kind if row.has_kind else old.kind,
                               source=old.source, external_id=old.external_id)


def _line_number(error: str) -> int:
    number = error.removeprefix("line ").partition(":")[0]
    return int(number) if number.isdigit() else 0


def import_csv(directory: Directory, data: bytes, *, tenant: str | None = None,
               replace: bool = False, dry_run: bool = False) -> ImportResult:
    result = ImportResult()
    try:
        text = decode_csv(data)
    except UnicodeDecodeError:
        result.errors.append("line 1: the file is neither UTF-8 nor CP932 (Shift_JIS)")
        return result
    parsed, result.errors = _parse(text, directory, tenant)
    tenants = {tenant} if tenant else {r.recipient.tenant for r in parsed}
    existing = {r.address: r for t in sorted(tenants) for r in directory.recipients(t)}
    merged = {row.recipient.address: _merge(row, existing.get(row.recipient.address)) for row in parsed}
    # Aliases live in their owner's domains, hence in these tenants: one map answers who holds what.
    holders = {alias: r for r in existing.values() for alias in r.aliases}
    rows: list[Recipient] = []
    for row in parsed:
        old = existing.get(row.recipient.address)
        new = merged[row.recipient.address]
        holder = holders.get(new.address)
        if holder is not None and new.address in merged.get(holder.address, holder).aliases:
            result.errors.append(f"line {row.line}: {new.address} is an alias of {holder.address}")
        for alias in new.aliases:
            # Someone else's address or alias would take their mail, unless this file gives it up.
            owner = existing.get(alias) or holders.get(alias)
            if owner is not None and owner.address != new.address and (
                    alias == owner.address or alias in merged.get(owner.address, owner).aliases):
                result.errors.append(f"line {row.line}: {alias} already belongs to {owner.address}")
        rows.append(new)
        if old is None:
            result.added.append(new.address)
        elif old != new:
            result.changed.append(new.address)
        else:
            result.unchanged.append(new.address)
    if result.errors:
        result.added, result.changed, result.unchanged = [], [], []
        result.errors.sort(key=_line_number)
        return result
    if replace:
        present = {r.address for r in rows}
        result.removed = sorted(a for a, r in existing.items()
                                if a not in present and r.source not in _SYNCED_SOURCES)
    if dry_run:
        return result
    directory.upsert_recipients(rows)
    if replace:
        for t in sorted(tenants):
            directory.remove_recipients(t, [a for a in result.removed if existing[a].tenant == t])
    result.applied = True
    return result


# A spreadsheet runs a cell that starts with one of these as a formula (`=cmd|' /C calc'!A0`,
# `=HYPERLINK(…)`, `@SUM(…)`): OWASP's CSV-injection list, plus the full-width forms Japanese
# Excel also takes for formula signs. The values come from admins, CSV files and the directory
# sync, so none is trusted.
_FORMULA_STARTS = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")


def _read_as_formula(value: str) -> bool:
    """Whether a spreadsheet would take `value` for a formula, or it is an escaped one."""
    while value[:1] == "'":
        value = value[1:]
    return value[:1] in _FORMULA_STARTS


def neutralise_cell(value: str) -> str:
    """A leading apostrophe (OWASP's rule), which spreadsheets read as "text, shown without the
    apostrophe"; also before a value that already starts with apostrophes and a formula sign, so
    that `unneutralise_cell` gives back exactly what was exported."""
    return "'" + value if _read_as_formula(value) else value


def unneutralise_cell(value: str) -> str:
    """The inverse of `neutralise_cell` on import: an exported file round-trips unchanged."""
    return value[1:] if value[:1] == "'" and _read_as_formula(value[1:]) else value


def export_csv(directory: Directory, tenant: str | None = None) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for r in directory.recipients(tenant):
        writer.writerow([neutralise_cell(cell) for cell in (
            r.address, r.name, r.organisation, r.department, r.title, r.memo,
            "on" if r.spam_filter else "off", " ".join(r.aliases), r.kind)])
    return out.getvalue()
