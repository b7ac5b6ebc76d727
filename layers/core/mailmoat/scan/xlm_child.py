"""The child that emulates Excel 4.0 macros: `python -m mailmoat.scan.xlm_child <dir>`.

It reads <dir>/in (xls, xlsm or xlsb), runs XLMMacroDeobfuscator's interpreter non-interactively
and writes <dir>/out.json: the auto_open names and the emulated formulas, bounded. It caps its
own memory and CPU first; the parent kills it at its deadline. Its stdout and stderr go nowhere.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import types
from pathlib import Path
from typing import Any

MAX_STEPS = 5000  # interpreted formulas kept
MAX_FORMULA = 2000  # characters of one
MAX_WRITE = 64 << 20


def _confine(memory_bytes: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_WRITE, MAX_WRITE))  # out.json, a decrypted copy
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _distutils_shim() -> None:
    # XLMMacroDeobfuscator 0.2.7 imports distutils.util.strtobool, gone since Python 3.12.
    if "distutils.util" in sys.modules:
        return
    try:
        import distutils.util  # noqa: F401
        return
    except ImportError:
        pass

    def strtobool(value: str) -> int:
        value = value.lower()
        if value in {"y", "yes", "t", "true", "on", "1"}:
            return 1
        if value in {"n", "no", "f", "false", "off", "0"}:
            return 0
        raise ValueError(f"invalid truth value {value!r}")

    package, util = types.ModuleType("distutils"), types.ModuleType("distutils.util")
    util.strtobool = strtobool  # type: ignore[attr-defined]
    package.util = util  # type: ignore[attr-defined]
    sys.modules["distutils"], sys.modules["distutils.util"] = package, util


def _record_errors(deobfuscator: Any) -> list[str]:
    """The interpreter catches an exception in a formula, prints "Error [...]" (nothing under
    silent_mode) and ends that entry point quietly: keep those lines, so that an emulation
    that broke off is not read as one that ran to its end."""
    errors: list[str] = []
    original = deobfuscator.uprint

    def uprint(*objects: Any, silent_mode: bool = False, **kwargs: Any) -> None:
        text = " ".join(str(o) for o in objects)
        if text.startswith("Error [") and len(errors) < 5:
            errors.append(text[:300])
        original(*objects, silent_mode=silent_mode, **kwargs)

    deobfuscator.uprint = uprint
    return errors


def emulate(path: Path, kind: str, seconds: int) -> dict[str, Any]:
    _distutils_shim()
    from XLMMacroDeobfuscator import deobfuscator
    from XLMMacroDeobfuscator.deobfuscator import XLMInterpreter
    from XLMMacroDeobfuscator.xls_wrapper_2 import XLSWrapper2
    from XLMMacroDeobfuscator.xlsb_wrapper import XLSBWrapper
    from XLMMacroDeobfuscator.xlsm_wrapper import XLSMWrapper

    wrapper: Any
    if kind == "xls":
        wrapper = XLSWrapper2(str(path), logfile=None)
    elif kind == "xlsb":
        wrapper = XLSBWrapper(str(path))
        # XLSBWrapper.get_workbook_name reads xlsm_workbook_name, which it never sets: without
        # it GET.DOCUMENT(76/88) and GET.WINDOW(1), common sandbox checks, end the emulation.
        wrapper.xlsm_workbook_name = wrapper.xlsb_workbook_name
        # Its defined names keep Excel's "_xlnm." built-in prefix (XLSMWrapper drops it), and
        # auto_open names are matched by prefix: "_xlnm.Auto_Open" was never emulated.
        wrapper._defined_names = {key.removeprefix("_xlnm."): value
                                  for key, value in wrapper.get_defined_names().items()}
    else:
        wrapper = XLSMWrapper(str(path))
    autos = [f"{name}->{cell}" for name, cell in
             wrapper.get_defined_name("auto_open", full_match=False)][:50]
    errors = _record_errors(deobfuscator)
    interpreter = XLMInterpreter(wrapper, output_level=0)
    steps: list[str] = []
    truncated = False
    for step in interpreter.deobfuscate_macro(False, "", timeout=seconds, silent_mode=True):
        if len(steps) >= MAX_STEPS:
            truncated = True
            break
        steps.append(f"{step[0].get_local_address()} {step[1].name} {step[2]}"[:MAX_FORMULA])
    # The interpreter stops quietly at its own timeout: what it did not reach is not clean.
    truncated = truncated or time.time() - interpreter._start_timestamp > seconds
    return {"auto_open": [str(a)[:200] for a in autos], "steps": steps, "truncated": truncated,
            "errors": errors}


def main() -> int:
    work = Path(sys.argv[1])
    kind, seconds, memory = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    out = work / "out.json"
    with out.open("w", encoding="utf-8") as handle:
        _confine(memory, seconds + 2)
        try:
            report = emulate(work / "in", kind, seconds)
        except Exception as exc:  # the parent turns this into SCAN_FAILED
            report = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        handle.write(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
