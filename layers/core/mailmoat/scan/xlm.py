"""Excel 4.0 (XLM) macros emulated: what the formulas do once deobfuscated (issue 16 item 3).

xls (BIFF8), xlsm and xlsb go to XLMMacroDeobfuscator's interpreter in a child process
(`mailmoat.scan.xlm_child`: memory and CPU capped, killed at the budget's deadline); its output
is bounded and read back as JSON. SYLK has no emulator: the formulas olevba extracts from it are
read the same way. Findings:

- SANDBOX_XLM_EXEC (danger): EXEC, CALL, REGISTER, or a Win32 API that runs or downloads code;
- SANDBOX_XLM_URL: the URLs the formulas build, in the detail (capped);
- SANDBOX_XLM_AUTO: an auto_open defined name (the macro runs when the workbook opens).

A child that fails, times out or cannot start, or an emulation the interpreter broke off at
an error, is SCAN_FAILED (fail closed), never a pass.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mailmoat.scan import filetype as ft
from mailmoat.scan.result import FileResult
from mailmoat.settings import AnalysisSettings

log = logging.getLogger("mailmoat.scan")

MAX_REPORT = 16 << 20  # bytes of the child's out.json read back
MAX_URLS = 10
MAX_DETAIL = 600

_EXEC = re.compile(
    r"\b(EXEC|CALL|REGISTER(?:\.ID)?|URLDownloadToFile[AW]?|ShellExecute[AW]?|WinExec|"
    r"CreateProcess[AW]?|CreateThread|VirtualAlloc(?:Ex)?|WriteProcessMemory|RtlCopyMemory|"
    r"RtlMoveMemory|QueueUserAPC)\b\s*\(?", re.IGNORECASE)
_URL = re.compile(r"(?:https?|ftp)://[^\s\"'<>()\[\],;|]{3,}", re.IGNORECASE)
_CHILD_KIND = {ft.XLS: "xls", ft.XLSM: "xlsm", ft.XLSB: "xlsb"}


def emulatable(detected: str) -> bool:
    return detected in _CHILD_KIND


def analyse_xlm(data: bytes, detected: str, result: FileResult, deadline: float,
                settings: AnalysisSettings | None = None) -> None:
    """Emulate a workbook's XLM macros (call it when XLM_MACRO was found) and add the findings."""
    settings = settings or AnalysisSettings()
    seconds = min(settings.xlm_timeout_seconds, deadline - time.monotonic())
    if seconds < 1:
        result.add("SCAN_FAILED", "xlm: no time left to emulate the Excel 4.0 macros")
        return
    report = _run_child(data, _CHILD_KIND[detected], seconds, settings.xlm_memory_bytes)
    if "error" in report:
        log.warning("xlm emulation failed: %s", report["error"])
        result.add("SCAN_FAILED", f"xlm: {report['error']}"[:300])
        return
    steps = [str(s) for s in report.get("steps", [])]
    _findings(steps, [str(a) for a in report.get("auto_open", [])], result, "emulated")
    if report.get("truncated"):
        result.add("ARCHIVE_LIMIT", "xlm: emulation stopped at its step or time bound")
    errors = [str(e) for e in report.get("errors", [])]
    if errors:  # what the formulas did after the error is unknown: fail closed
        log.warning("xlm emulation broke off: %s", errors[0])
        result.add("SCAN_FAILED", f"xlm: emulation broke off at an error: {errors[0]}"[:300])


def analyse_sylk(data: bytes, result: FileResult) -> None:
    """SYLK's formulas as olevba extracts them (macro sheet), else each cell's formula field."""
    from oletools.olevba import VBA_Parser

    lines: list[str] = []
    try:
        parser = VBA_Parser("document.slk", data=data)
        try:
            if parser.detect_xlm_macros():
                lines = [str(line) for line in (parser.xlm_macros or [])]
        finally:
            parser.close()
    except Exception as exc:  # olevba refusing it: the cells are still read below
        log.info("olevba on SYLK: %s: %s", type(exc).__name__, exc)
    if not lines:
        for record in data.splitlines()[:100_000]:
            if record.startswith(b"C;"):
                lines += [field[1:].decode("latin-1") for field in record.split(b";")
                          if field.startswith(b"E")]
    autos = [line.split(":", 1)[1].strip() for line in lines
             if line.startswith("Named cell:") and "auto_open" in line.lower()]
    _findings([line for line in lines if not line.startswith("Named cell:")], autos, result,
              "SYLK formulas")


def _findings(steps: list[str], autos: list[str], result: FileResult, how: str) -> None:
    calls: list[str] = []
    urls: list[str] = []
    first = ""
    for step in steps:
        for match in _EXEC.finditer(step):
            name = match.group(1).upper()
            if name not in calls:
                calls.append(name)
                first = first or step
        for url in _URL.findall(step):
            if url not in urls and len(urls) < MAX_URLS:
                urls.append(url[:200])
    if autos:
        result.add("SANDBOX_XLM_AUTO", f"{how}: " + ", ".join(autos[:5])[:MAX_DETAIL])
    if calls:
        result.add("SANDBOX_XLM_EXEC",
                   f"{how}: {', '.join(calls)}; {' '.join(first.split())}"[:MAX_DETAIL])
    if urls:
        result.add("SANDBOX_XLM_URL", f"{how}: " + " ".join(urls)[:MAX_DETAIL])


def _run_child(data: bytes, kind: str, seconds: float, memory: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mailmoat-xlm-") as work:
        (Path(work) / "in").write_bytes(data)
        command = [sys.executable, "-m", "mailmoat.scan.xlm_child", work, kind,
                   str(max(1, int(seconds) - 1)), str(memory)]
        path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": path, "HOME": work,
               "TMPDIR": work, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=env, cwd=work, timeout=seconds,
                           check=False, start_new_session=True)
        except subprocess.TimeoutExpired:
            return {"error": f"emulation timed out after {seconds:.0f}s"}
        except OSError as exc:
            return {"error": f"emulator did not start: {exc}"}
        out = Path(work) / "out.json"
        try:
            with out.open("rb") as handle:
                text = handle.read(MAX_REPORT + 1)
        except OSError:
            return {"error": "emulator ended without a report"}
        if len(text) > MAX_REPORT:
            return {"error": "emulator report over its bound"}
        try:
            report = json.loads(text)
        except ValueError:
            return {"error": "emulator ended without a complete report"}
        return report if isinstance(report, dict) else {"error": "emulator report malformed"}


def _package_root() -> str:
    """The directory holding the mailmoat package, for the child's PYTHONPATH."""
    return str(Path(__file__).resolve().parents[2])
