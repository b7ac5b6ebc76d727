"""One file in, one FileResult out: dispatch to the analysers, bound the work, cache by SHA-256."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailmoat.context import Verdict
from mailmoat.ports import Antivirus, Sandbox
from mailmoat.scan import archives, dde, filetype, html, office, xlm, yara_rules
from mailmoat.scan.lists import Lists
from mailmoat.scan.result import Budget, FileResult, LimitReached
from mailmoat.scan.sandbox import SandboxConfig, consult
from mailmoat.settings import Limits

if TYPE_CHECKING:
    from mailmoat.config import TenantConfig
    from mailmoat.pipeline import Services

CACHE_ENTRIES = 2048

# (sha256, the lists, antivirus on, the YARA rules version): new rules are never masked.
CacheKey = tuple[str, tuple[frozenset[str], frozenset[str]], bool, str]


class ResultCache:
    """Content results by SHA-256 for the worker's lifetime; bounded LRU."""

    def __init__(self, maxsize: int = CACHE_ENTRIES) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[CacheKey, FileResult] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> FileResult | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: CacheKey, value: FileResult) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


CACHE = ResultCache()


@dataclass(slots=True)
class Engine:
    limits: Limits
    antivirus: Antivirus | None = None
    sandbox: Sandbox | None = None
    sandbox_config: SandboxConfig = field(default_factory=SandboxConfig)
    cache: ResultCache = CACHE

    def analyse(self, data: bytes, filename: str | None, lists: Lists, *,
                deadline: float | None = None, sha256: str | None = None) -> FileResult:
        """Everything about one attachment: content (cached) plus the checks on its name."""
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        key: CacheKey = (sha256, lists.key, self.antivirus is not None,
                         yara_rules.rules_version())
        content = self.cache.get(key)
        if content is None:
            budget = Budget(self.limits, deadline)
            content = self.content(data, filename, "", 0, budget, lists)
            self._antivirus(data, content)
            if content.cacheable:
                self.cache.put(key, content)
        result = FileResult(detected_type=content.detected_type, hits=list(content.hits),
                            members=list(content.members), cacheable=content.cacheable)
        for symbol, detail in filetype.name_findings(filename, content.detected_type, lists):
            result.add(symbol, detail)
        if html.has_active_name(filename) and not html.is_active_type(content.detected_type):
            # A browser renders it by its name (.html, .svg …) whatever libmagic calls it.
            html.analyse_html(data, content.detected_type, result)
        if self.sandbox is not None and self.sandbox_config.enabled and \
                str(result.verdict) in self.sandbox_config.verdicts:
            outcome = consult(self.sandbox, data, filename, self.sandbox_config)
            if outcome is not None:
                result.add(*outcome)
        return result

    def content(self, data: bytes, name: str | None, prefix: str, depth: int, budget: Budget,
                lists: Lists) -> FileResult:
        """What the bytes are, whatever they are called. Members recurse through here."""
        detected, unknown = filetype.detect(data)
        result = FileResult(detected_type=detected)
        if unknown:  # without a real type no name check means anything: fail closed
            result.add("SCAN_FAILED", f"file type unknown: {unknown}"[:300])

        def member(shown: str, content: bytes, member_depth: int) -> FileResult:
            return self.content(content, shown.rsplit("!", 1)[-1], shown, member_depth, budget, lists)

        try:
            if detected in archives.ARCHIVE_READABLE:
                archives.walk_archive(data, detected, name, result, prefix, depth, budget, lists,
                                      member)
            elif office.is_office(detected):
                office.analyse_office(
                    data, detected, result,
                    lambda inner: self.content(inner, name, prefix, depth + 1, budget, lists))
                if xlm.emulatable(detected) and "XLM_MACRO" in result.own_symbols:
                    xlm.analyse_xlm(data, detected, result, budget.deadline)
            elif detected == "application/pdf":
                self._pdf(data, result, prefix, depth, budget, lists, member)
            elif html.is_active_type(detected) or (prefix and html.has_active_name(name)):
                # Inside a container the member's name is part of the cached content; at the
                # top the name is checked in analyse(), outside the cache.
                html.analyse_html(data, detected, result)
            elif dde.is_text_document(detected):
                dde.analyse_text_document(data, result)
                if detected == filetype.SYLK:
                    xlm.analyse_sylk(data, result)
            yara_rules.scan(data, result)
        except LimitReached as exc:
            result.add("ARCHIVE_LIMIT", str(exc))
        except RecursionError:
            result.add("ARCHIVE_LIMIT", "nesting too deep")
        except Exception as exc:  # an analyser failing on a file is a finding (fail closed)
            result.add("SCAN_FAILED", f"{type(exc).__name__}: {exc}"[:300])
        return result

    def _pdf(self, data: bytes, result: FileResult, prefix: str, depth: int, budget: Budget,
             lists: Lists, member: archives.MemberAnalyser) -> None:
        from mailmoat.scan.pdf import analyse_pdf

        walker = archives._Walker(result, prefix, depth, budget, lists, member, len(data))

        def embedded(name: str, chunks: Iterator[bytes], compressed: int) -> None:
            walker.count_member()
            content = walker.read_bounded(chunks, compressed)
            walker.member(name, content=content, size=len(content))

        analyse_pdf(data, result, budget.deadline,
                    embedded if depth < self.limits.archive_max_depth else None)

    def _antivirus(self, data: bytes, result: FileResult) -> None:
        # clamd unpacks archives itself, so the top-level file is enough.
        if self.antivirus is None:
            return
        try:
            verdict = self.antivirus.scan(data)
        except Exception as exc:  # configured but no engine answered: fail closed
            result.add("SCAN_FAILED", f"antivirus: {type(exc).__name__}: {exc}"[:300])
            return
        if verdict.infected:
            result.add("VIRUS", f"{verdict.engine}: {verdict.signature or 'infected'}")


def worst(results: list[FileResult]) -> Verdict:
    return Verdict.worst([r.verdict for r in results])


def monotonic_deadline(limits: Limits) -> float:
    return time.monotonic() + limits.scan_seconds


def engine_for(services: Services, tenant: TenantConfig | None = None) -> Engine:
    """The engine every scan uses, from the runtime's services: the scan stage's and the
    portal's second look after decryption or a safe copy (same limits, antivirus, sandbox),
    with the sandbox thresholds of the tenant whose mail it scans."""
    return Engine(services.settings.limits, antivirus=services.antivirus,
                  sandbox=services.sandbox,
                  sandbox_config=services.sandbox_config.for_tenant(tenant))
