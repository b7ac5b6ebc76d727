"""Recipients as CSV: import (UTF-8 or CP932, all-or-nothing, errors by line) and export."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from email.utils import parseaddr

from mailmoat.ports import Directory, Recipient

# The product's column order; a header row with these (or the Japanese) names is optional.
COLUMNS = ("address", "name", "organisation", "department", "title", "memo", "spam_filter")
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


def parse_rows(text: str, directory: Directory, tenant: str | None) -> tuple[list[Recipient], list[str]]:
    rows: list[Recipient] = []
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
        cells = [c.strip() for c in row] + [""] * (len(COLUMNS) - len(row))
        if len(row) > len(COLUMNS):
            errors.append(f"line {lineno}: {len(row)} columns, expected at most {len(COLUMNS)}")
            continue
        address = cells[0].lower()
        _, parsed = parseaddr(address)
        local, at, domain = address.partition("@")
        if not at or not local or not domain or parsed != address or " " in address:
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
        if address in seen:
            errors.append(f"line {lineno}: {address} repeats line {seen[address]}")
            continue
        seen[address] = lineno
        rows.append(Recipient(address=address, tenant=row_tenant, name=cells[1],
                              organisation=cells[2], department=cells[3], title=cells[4],
                              memo=cells[5], spam_filter=spam))
    return rows, errors


def import_csv(directory: Directory, data: bytes, *, tenant: str | None = None,
               replace: bool = False, dry_run: bool = False) -> ImportResult:
    result = ImportResult()
    try:
        text = decode_csv(data)
    except UnicodeDecodeError:
        result.errors.append("line 1: the file is neither UTF-8 nor CP932 (Shift_JIS)")
        return result
    rows, result.errors = parse_rows(text, directory, tenant)
    if result.errors:
        return result
    tenants = {tenant} if tenant else {r.tenant for r in rows}
    existing = {r.address: r for t in sorted(tenants) for r in directory.recipients(t)}
    for r in rows:
        old = existing.get(r.address)
        if old is None:
            result.added.append(r.address)
        elif old != r:
            result.changed.append(r.address)
        else:
            result.unchanged.append(r.address)
    if replace:
        present = {r.address for r in rows}
        result.removed = sorted(a for a in existing if a not in present)
    if dry_run:
        return result
    if replace:
        for t in sorted(tenants):
            directory.replace_recipients(t, [r for r in rows if r.tenant == t])
    else:
        directory.upsert_recipients(rows)
    result.applied = True
    return result


def export_csv(directory: Directory, tenant: str | None = None) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for r in directory.recipients(tenant):
        writer.writerow([r.address, r.name, r.organisation, r.department, r.title, r.memo,
                         "on" if r.spam_filter else "off"])
    return out.getvalue()
