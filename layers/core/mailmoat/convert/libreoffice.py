"""The local PDF converter: one long-lived LibreOffice (headless, no network, private profile,
macros disabled) driven over UNO for office files; Pillow for images; poppler for PDFs."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mailmoat.convert import (
    IMAGE_EXTENSIONS,
    ConversionError,
    active_content,
    extension,
    strip_active,
)

log = logging.getLogger("mailmoat.convert")

_CLIENT = Path(__file__).with_name("uno_client.py")
_RASTER = "mailmoat.convert.raster"
# Macro security "very high" and macro execution off, written into the private profile before
# soffice first starts (LibreOffice reads registrymodifications.xcu at start).
_PROFILE_SETTINGS = (
    ("Security/Scripting", "MacroSecurityLevel", "3"),
    ("Security/Scripting", "DisableMacrosExecution", "true"),
    ("Security/Scripting", "BlockUntrustedRefererLinks", "true"),
    ("Misc", "UseLocking", "false"),
    ("Misc", "FirstRun", "false"),
)
_PROFILE_XCU = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<oor:items xmlns:oor="http://openoffice.org/2001/registry" '
    'xmlns:xs="http://www.w3.org/2001/XMLSchema" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
    + "".join(f'<item oor:path="/org.openoffice.Office.Common/{path}"><prop oor:name="{name}" '
              f'oor:op="fuse"><value>{value}</value></prop></item>\n'
              for path, name, value in _PROFILE_SETTINGS)
    + "</oor:items>\n")


@dataclass(frozen=True, slots=True)
class ConvertLimits:
    seconds: float = 60.0  # one conversion, load to PDF
    memory_bytes: int = 2 << 30  # RLIMIT_AS of soffice and of the raster child
    output_bytes: int = 64 << 20  # RLIMIT_FSIZE: no file it writes grows past this
    input_bytes: int = 50 << 20
    unpacked_bytes: int = 200 << 20  # an OOXML/ODF zip's declared members, summed
    max_pages: int = 50
    dpi: int = 100


def _confine(limits: ConvertLimits) -> None:
    """preexec_fn of every converter child: own process group, memory and file-size caps."""
    os.setsid()
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def no_network_prefix() -> list[str]:
    """`unshare -n` (an empty network namespace) where we may make one: root, or a kernel that
    lets users; otherwise [] and the converter runs with the host's network (logged)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    try:
        ok = subprocess.run([unshare, "-n", "true"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if ok:
        return [unshare, "-n"]
    unshare_user = [unshare, "-r", "-n"]
    try:
        if subprocess.run([*unshare_user, "true"], capture_output=True, timeout=5).returncode == 0:
            return unshare_user
    except (OSError, subprocess.TimeoutExpired):
        pass
    log.warning("converter runs without a private network namespace (unshare not permitted)")
    return []


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _run_confined(argv: list[str], limits: ConvertLimits, env: dict[str, str] | None = None
                  ) -> tuple[int, str]:
    """A short-lived child under the caps; killed with its whole group at the deadline."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: _confine(limits))
    try:
        _, err = proc.communicate(timeout=limits.seconds)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise ConversionError(f"conversion took longer than {limits.seconds:g} s") from None
    return proc.returncode, err.decode("utf-8", "replace")[-500:]


def _zip_bomb(data: bytes, limits: ConvertLimits) -> str | None:
    """An OOXML/ODF container whose members would unpack past the bound (declared sizes; the
    memory cap and the deadline stop one that lies about them)."""
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            total = 0
            for i, info in enumerate(zf.infolist()):
                total += info.file_size
                if total > limits.unpacked_bytes or i > 10_000:
                    return f"unpacks past {limits.unpacked_bytes} bytes"
    except (zipfile.BadZipFile, ValueError, OSError):
        return None  # not a zip (doc, xls …): LibreOffice's own reader, under the caps
    return None


class LibreOfficePdfConverter:
    """PdfConverter. One soffice listens on a private pipe for the life of the process; each
    conversion is a /usr/bin/python3 UNO client (~0.1 s) under the deadline. A soffice that died
    or did not answer in time is killed with its process group and started again."""

    def __init__(self, limits: ConvertLimits | None = None, *, soffice: str | None = None,
                 uno_python: str = "/usr/bin/python3", work_dir: Path | None = None) -> None:
        self.limits = limits or ConvertLimits()
        self.soffice = soffice or shutil.which("soffice") or "soffice"
        self.uno_python = uno_python
        self._root = Path(tempfile.mkdtemp(prefix="mailmoat-convert-", dir=work_dir))
        os.chmod(self._root, 0o700)
        self._prefix = no_network_prefix()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pipe = ""

    # --- the long-lived soffice ---------------------------------------------------------
    def _start(self) -> None:
        profile = self._root / "profile"
        shutil.rmtree(profile, ignore_errors=True)
        (profile / "user").mkdir(parents=True)
        (profile / "user" / "registrymodifications.xcu").write_text(_PROFILE_XCU)
        self._pipe = f"mailmoat-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self._root),
               "TMPDIR": str(self._root), "LANG": "C.UTF-8", "SAL_USE_VCLPLUGIN": "svp"}
        argv = [*self._prefix, self.soffice, "--headless", "--invisible", "--nologo",
                "--norestore", "--nodefault", "--nolockcheck", "--nofirststartwizard",
                f"-env:UserInstallation={profile.as_uri()}",
                f"--accept=pipe,name={self._pipe};urp;StarOffice.ComponentContext"]
        limits = self.limits
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, env=env,
                                      preexec_fn=lambda: _confine(limits))
        log.info("soffice started", extra={"pid": self._proc.pid})

    def _ensure(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                log.warning("soffice had exited; starting it again",
                            extra={"returncode": self._proc.returncode})
            self._start()

    def restart(self) -> None:
        if self._proc is not None:
            _kill_group(self._proc)
        self._proc = None

    def close(self) -> None:
        self.restart()
        shutil.rmtree(self._root, ignore_errors=True)

    @property
    def soffice_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    # --- PdfConverter -------------------------------------------------------------------
    def convert(self, data: bytes, filename: str) -> bytes:
        if len(data) > self.limits.input_bytes:
            raise ConversionError(f"larger than {self.limits.input_bytes} bytes")
        ext = extension(filename)
        if ext == "pdf" or ext in IMAGE_EXTENSIONS:
            pdf = self._raster(data, "pdf" if ext == "pdf" else "image")
        else:
            pdf = strip_active(self._office(data, ext))
        found = active_content(pdf)
        if found:  # never expected: our outputs are pixels or stripped; fail closed if so
            raise ConversionError("converted PDF still has " + ", ".join(found))
        return pdf

    def _office(self, data: bytes, ext: str) -> bytes:
        bomb = _zip_bomb(data, self.limits)
        if bomb:
            raise ConversionError(bomb)
        with self._lock, tempfile.TemporaryDirectory(dir=self._root) as tmp:
            src, dst = Path(tmp) / f"input.{ext}", Path(tmp) / "output.pdf"
            src.write_bytes(data)
            self._ensure()
            started = time.monotonic()
            try:
                code, err = _run_confined(
                    [self.uno_python, str(_CLIENT), self._pipe, str(src), str(dst),
                     str(self.limits.max_pages), str(self.limits.seconds)],
                    self.limits, env={"PATH": "/usr/bin:/bin", "HOME": str(self._root)})
            except ConversionError:
                self.restart()  # the client gave up waiting; soffice may be stuck on this file
                raise
            if code != 0 or not dst.is_file():
                if self._proc is not None and self._proc.poll() is not None:
                    self.restart()
                raise ConversionError(f"LibreOffice did not convert it: {err.strip()[-200:]}")
            log.info("converted with LibreOffice", extra={
                "duration_ms": int((time.monotonic() - started) * 1000)})
            return dst.read_bytes()

    def _raster(self, data: bytes, kind: str) -> bytes:
        with tempfile.TemporaryDirectory(dir=self._root) as tmp:
            src, dst = Path(tmp) / "input", Path(tmp) / "output.pdf"
            src.write_bytes(data)
            code, err = _run_confined(
                [*self._prefix, sys.executable, "-m", _RASTER, kind, str(src), str(dst),
                 str(self.limits.max_pages), str(self.limits.dpi)],
                self.limits, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                  "PYTHONPATH": os.pathsep.join(sys.path)})
            if code != 0 or not dst.is_file():
                raise ConversionError(f"could not render it: {err.strip()[-200:]}")
            return dst.read_bytes()
