"""The members of one container (an archive, a PDF's embedded files): read within the bounds, reported."""

from __future__ import annotations

import io
import posixpath
import re
from collections.abc import Callable, Iterator
from typing import IO

from mailmoat.context import MemberReport, Verdict
from mailmoat.scan.filetype import name_findings
from mailmoat.scan.lists import Lists
from mailmoat.scan.result import Budget, FileResult, LimitReached, verdict_of

CHUNK = 64 * 1024
# Below this many expanded bytes a high ratio is normal (a page of spaces compresses 500:1).
RATIO_FLOOR = 1024 * 1024

# (member name as shown, content, depth) → what the content is, including its own members
MemberAnalyser = Callable[[str, bytes, int], FileResult]

_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_path(name: str) -> bool:
    """A member name that would land outside the extraction directory."""
    n = name.replace("\\", "/")
    if n.startswith("/") or _DRIVE.match(n):
        return True
    return ".." in n.split("/")


class Walker:
    """Shared bookkeeping for one container: bounds, member reports, nested results."""

    def __init__(self, result: FileResult, prefix: str, depth: int, budget: Budget, lists: Lists,
                 analyse_member: MemberAnalyser, archive_size: int) -> None:
        self.result = result
        self.prefix = prefix
        self.depth = depth
        self.budget = budget
        self.lists = lists
        self.analyse_member = analyse_member
        self.archive_size = max(archive_size, 1)
        self.expanded_here = 0

    def count_member(self) -> None:
        if self.budget.stopped:
            raise LimitReached(self.budget.stopped)
        self.budget.members += 1
        if self.budget.members > self.budget.limits.archive_max_members:
            raise LimitReached(f"more than {self.budget.limits.archive_max_members} members")
        if self.budget.out_of_time():
            raise LimitReached(f"scan time over {self.budget.limits.scan_seconds:g} s")

    def count_expanded(self, n: int, member_size: int = 0, compressed: int | None = None) -> None:
        """Count `n` more expanded bytes against the bounds; `member_size` of the member so far,
        which was `compressed` bytes in the container (when known)."""
        limits = self.budget.limits
        self.budget.expanded += n
        self.expanded_here += n
        if self.budget.expanded > limits.archive_max_expanded_bytes:
            raise LimitReached(f"expanded size over {limits.archive_max_expanded_bytes} bytes")
        if member_size > RATIO_FLOOR and compressed is not None and \
                member_size > max(compressed, 1) * limits.archive_max_ratio:
            raise LimitReached(f"compression ratio over {limits.archive_max_ratio}")
        if self.expanded_here > RATIO_FLOOR and \
                self.expanded_here > self.archive_size * limits.archive_max_ratio:
            raise LimitReached(f"compression ratio over {limits.archive_max_ratio}")
        if self.budget.out_of_time():
            raise LimitReached(f"scan time over {limits.scan_seconds:g} s")

    def read_bounded(self, chunks: Iterator[bytes] | IO[bytes], compressed: int | None) -> bytes:
        """Read a member chunk by chunk, counting bytes as they come (bomb-proof). Into a
        BytesIO, whose getvalue() hands over its buffer: a bytearray needed a bytes copy at the
        end, the member twice in memory (25 MB more for a 25 MB member)."""
        buf = io.BytesIO()
        iterator: Iterator[bytes] = (iter(lambda: chunks.read(CHUNK), b"")  # type: ignore[union-attr]
                                     if hasattr(chunks, "read") else chunks)  # type: ignore[assignment]
        for chunk in iterator:
            buf.write(chunk)
            self.count_expanded(len(chunk), buf.tell(), compressed)
        if self.budget.stopped:
            raise LimitReached(self.budget.stopped)
        return buf.getvalue()

    def member(self, name: str, *, encrypted: str | None = None, content: bytes | None = None,
               size: int | None = None, extra: list[tuple[str, str]] | None = None) -> MemberReport:
        """Report one member: its name checks, its encryption, and (if read) its content's analysis."""
        shown = f"{self.prefix}!{name}" if self.prefix else name
        symbols: list[str] = []
        details: list[tuple[str, str]] = list(extra or [])
        if unsafe_path(name):
            details.append(("PATH_TRAVERSAL", name))
        base = posixpath.basename(name.replace("\\", "/")) or name
        inner: FileResult | None = None
        if content is not None:
            inner = self.analyse_member(shown, content, self.depth + 1)
            detected = inner.detected_type
        else:
            detected = "application/octet-stream"
        for symbol, detail in name_findings(base, detected, self.lists):
            # Inside archives a name without extension (README) and a nested archive
            # type (walked anyway) are normal; the rest still counts.
            if symbol in {"NO_EXTENSION", "ARCHIVE_TYPE"}:
                continue
            details.append((symbol, detail))
        if encrypted:
            details.append(("ENCRYPTED_ARCHIVE", encrypted))
        for symbol, detail in details:
            if symbol not in symbols:
                symbols.append(symbol)
            self.result.add(symbol, detail, member=shown)
        nested: list[MemberReport] = []
        if inner is not None:
            for hit in inner.hits:
                if hit.member is None and hit.symbol not in symbols:
                    symbols.append(hit.symbol)
                self.result.add(hit.symbol, hit.detail, member=hit.member or shown)
            nested = inner.members
            if not inner.cacheable:
                self.result.cacheable = False
        verdict = Verdict.worst([verdict_of(symbols), *(m.verdict for m in nested)])
        report = MemberReport(name=shown, verdict=verdict, symbols=symbols,
                              size=size if size is not None else (len(content) if content else None))
        self.result.members.append(report)
        self.result.members.extend(nested)
        return report
