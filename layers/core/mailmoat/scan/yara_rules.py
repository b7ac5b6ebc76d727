"""YARA-X over every attachment and member: the project's rules plus the operator's (issue 16).

The project's rules are mailmoat/data/mailmoat.yar. An operator adds *.yar / *.yara files in
MAILMOAT_YARA_RULES_DIR: they are compiled beside the project's at the first scan and again when
a file there changes (names, sizes and mtimes looked at no more often than every
MAILMOAT_YARA_RELOAD_CHECK_SECONDS, like the TLS pair in mailmoat.local.tls). A set that fails to
compile is logged and the previous good set kept; with none yet, the project's rules alone.

A match is SANDBOX_YARA (risky) or SANDBOX_YARA_DANGER (a rule with meta verdict = "danger"),
the rule names in the detail. `rules_version()` is a hash of the compiled sources: the scan
cache keys on it, and a retro-hunt (issue 17) rescans when it changes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailmoat.scan.result import FileResult
from mailmoat.settings import AnalysisSettings

log = logging.getLogger("mailmoat.scan")

PROJECT_RULES = Path(__file__).resolve().parents[1] / "data" / "mailmoat.yar"
SUFFIXES = (".yar", ".yara")
MAX_RULE_FILES = 1000
MAX_RULE_BYTES = 16 << 20  # all operator sources together
MAX_NAMES = 10

Snapshot = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: Any  # yara_x.Rules
    version: str
    snapshot: Snapshot


class _Loader:
    """The current rule set, recompiled when the operator directory changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: RuleSet | None = None
        self._checked = 0.0
        self._failed: Snapshot | None = None  # a directory state that did not compile
        self.settings: AnalysisSettings | None = None

    def reset(self, settings: AnalysisSettings | None = None) -> None:
        with self._lock:
            self._current, self._checked, self._failed, self.settings = None, 0.0, None, settings

    def current(self) -> RuleSet:
        with self._lock:
            settings = self.settings = self.settings or AnalysisSettings()
            now = time.monotonic()
            if self._current is not None and \
                    now - self._checked < settings.yara_reload_check_seconds:
                return self._current
            self._checked = now
            snapshot = _snapshot(settings.yara_rules_dir)
            if self._current is not None and snapshot == self._current.snapshot:
                return self._current
            if snapshot == self._failed and self._current is not None:
                return self._current
            try:
                self._current = _compile(_sources(settings.yara_rules_dir, snapshot), snapshot)
                self._failed = None
                log.info("yara rules compiled: version %s, %d operator file(s)",
                         self._current.version, len(snapshot))
            except Exception as exc:
                self._failed = snapshot
                log.error("yara: operator rules do not compile, %s: %s",
                          "previous set kept" if self._current else "project rules only",
                          " ".join(str(exc).split())[:500])
                if self._current is None:
                    self._current = _compile(_sources(None, ()), snapshot)
            return self._current


_LOADER = _Loader()


def configure(settings: AnalysisSettings | None) -> None:
    """Start over with these settings (tests, and a process that changes them)."""
    _LOADER.reset(settings)


def rules_version() -> str:
    """A hash of the rule sources in force (the project's and the operator's): a stable name for
    "what these rules would find". Changes whenever a rule file changes and compiles."""
    try:
        return _LOADER.current().version
    except Exception as exc:  # the project's own rules missing: scan() reports SCAN_FAILED
        log.error("yara: no rules: %s: %s", type(exc).__name__, exc)
        return "unavailable"


def scan(data: bytes, result: FileResult) -> None:
    """Add SANDBOX_YARA / SANDBOX_YARA_DANGER for the rules `data` matches (its first
    MAILMOAT_YARA_MAX_BYTES), or SCAN_FAILED when the scan cannot run or times out."""
    try:
        ruleset = _LOADER.current()
        settings = _LOADER.settings or AnalysisSettings()
        scanner = _scanner(ruleset, settings)
        matches = scanner.scan(data[:settings.yara_max_bytes]).matching_rules
    except Exception as exc:  # a timeout included: a check that cannot run fails closed
        log.warning("yara scan failed: %s: %s", type(exc).__name__, exc)
        result.add("SCAN_FAILED", f"yara: {type(exc).__name__}: {exc}"[:300])
        return
    danger: list[str] = []
    risky: list[str] = []
    for rule in matches:
        meta = dict(rule.metadata)
        name = rule.identifier if rule.namespace == "mailmoat" else \
            f"{rule.namespace}:{rule.identifier}"
        (danger if str(meta.get("verdict", "")).lower() == "danger" else risky).append(name)
    if danger:
        result.add("SANDBOX_YARA_DANGER", ", ".join(danger[:MAX_NAMES])[:300])
    if risky:
        result.add("SANDBOX_YARA", ", ".join(risky[:MAX_NAMES])[:300])


_THREAD = threading.local()


def _scanner(ruleset: RuleSet, settings: AnalysisSettings) -> Any:
    """One yara_x.Scanner per thread and rule set (creating one costs ten times a small scan)."""
    import yara_x

    cached = getattr(_THREAD, "scanner", None)
    if cached is not None and cached[0] is ruleset and cached[1] == settings.yara_timeout_seconds:
        return cached[2]
    scanner = yara_x.Scanner(ruleset.rules)
    scanner.set_timeout(settings.yara_timeout_seconds)
    _THREAD.scanner = (ruleset, settings.yara_timeout_seconds, scanner)
    return scanner


def _snapshot(directory: Path | None) -> Snapshot:
    if directory is None:
        return ()
    try:
        files = sorted(p for p in directory.iterdir()
                       if p.suffix.lower() in SUFFIXES and p.is_file())[:MAX_RULE_FILES]
        return tuple((p.name, (st := p.stat()).st_mtime_ns, st.st_size) for p in files)
    except OSError as exc:
        log.error("yara: rules directory %s unreadable: %s", directory, exc)
        return (("<unreadable>", 0, 0),)


def _sources(directory: Path | None, snapshot: Snapshot) -> list[tuple[str, str, str]]:
    """(namespace, origin, text): the project's file, then each operator file in its own
    namespace (its file stem), so two operators' rule names never collide."""
    sources = [("mailmoat", PROJECT_RULES.name, PROJECT_RULES.read_text(encoding="utf-8"))]
    total = 0
    for name, _mtime, size in snapshot:
        if directory is None or name.startswith("<"):
            raise OSError("rules directory unreadable")
        total += size
        if total > MAX_RULE_BYTES:
            raise ValueError(f"operator rules over {MAX_RULE_BYTES} bytes")
        text = (directory / name).read_text(encoding="utf-8")
        namespace = "operator_" + re.sub(r"\W", "_", Path(name).stem)
        sources.append((namespace, name, text))
    return sources


def _compile(sources: list[tuple[str, str, str]], snapshot: Snapshot) -> RuleSet:
    import yara_x

    compiler = yara_x.Compiler()
    digest = hashlib.sha256()
    for namespace, origin, text in sources:
        compiler.new_namespace(namespace)
        compiler.add_source(text, origin=origin)
        for part in (namespace, origin, text):
            raw = part.encode("utf-8")
            digest.update(len(raw).to_bytes(8, "big") + raw)
    return RuleSet(compiler.build(), digest.hexdigest()[:16], snapshot)
