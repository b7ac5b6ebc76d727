"""libmagic from the CoreLayer (layers/core/Makefile): found from the package's place, and a layer
whose copy cannot be used fails closed instead of borrowing the machine's libmagic."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from mailmoat.scan import filetype
from tests.conftest import ROOT

PACKAGE = ROOT / "layers" / "core" / "mailmoat"


def test_outside_a_layer_there_is_no_bundled_libmagic() -> None:
    assert filetype.layer_magic(PACKAGE) is None  # the repository: the machine's libmagic
    assert filetype.layer_magic(Path("/var/task/mailmoat")) is None  # the scan image: file-libs


def test_in_a_layer_both_files_are_found_next_to_python(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "share" / "misc").mkdir(parents=True)
    (tmp_path / "lib" / "libmagic.so.1").write_bytes(b"")
    (tmp_path / "share" / "misc" / "magic.mgc").write_bytes(b"")
    assert filetype.layer_magic(tmp_path / "python" / "mailmoat") == (
        tmp_path / "lib" / "libmagic.so.1", tmp_path / "share" / "misc" / "magic.mgc")


def test_a_layer_whose_libmagic_is_missing_fails_closed_not_over_to_the_system_one(tmp_path: Path) -> None:
    """This machine has libmagic (the other tests use it); a layer that lost its own copy must
    not quietly use it: the layer's database would not match, and Lambda has none anyway."""
    shutil.copytree(PACKAGE, tmp_path / "python" / "mailmoat",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "share" / "misc").mkdir(parents=True)
    (tmp_path / "share" / "misc" / "magic.mgc").write_bytes(b"")
    script = ("from mailmoat.scan import filetype\n"
              "print(filetype.magic_problem())\n"
              "print(filetype.detect(b'%PDF-1.7\\n%\\xe2\\xe3\\xcf\\xd3\\n'))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "python"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    problem, detected = done.stdout.splitlines()
    assert problem.startswith("OSError: ") and str(tmp_path / "lib" / "libmagic.so.1") in problem
    assert detected.startswith("('application/octet-stream', 'libmagic unavailable (OSError")
    assert "libmagic unavailable" in done.stderr  # the log line, once
