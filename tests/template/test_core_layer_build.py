"""The CoreLayer as `sam build` makes it (layers/core/Makefile, no Docker), for this machine's
architecture, run the way Lambda runs it: only the layer's python/ on PYTHONPATH and its lib/ on
LD_LIBRARY_PATH, no site-packages. libmagic and its database must come from the layer (the
python3.12 runtime has neither), and the layer must fit Lambda's 250 MB.

The build pip-installs from PyPI (about 30 s): once per test session, shared by the xdist workers."""

from __future__ import annotations

import fcntl
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Lambda: "250 MB" unzipped for the function and all its layers (262,144,000 bytes).
LAMBDA_UNZIPPED_BYTES = 262_144_000
AL2023_GLIBC = (2, 34)
AL2023_PROVIDES = {"libc.so.6", "libz.so.1"}  # in the python3.12 runtime (its zlib module)
ARCHITECTURE = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())

PROBE = r"""
import io, json, zipfile
import magic
from mailmoat.scan import filetype

buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as zf:
    zf.writestr("notes.txt", "a plain member\n")
pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
print(json.dumps({
    "magic_module": magic.__file__,
    "problem": filetype.magic_problem(),
    "pdf": filetype.detect(pdf), "zip": filetype.detect(buf.getvalue()),
    "direct": [filetype._magic().from_buffer(pdf), filetype._magic().from_buffer(buf.getvalue())],
    "mapped": sorted({line.split()[-1] for line in open("/proc/self/maps") if "magic" in line}),
}))
"""


@pytest.fixture(scope="session")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if ARCHITECTURE is None:
        pytest.skip(f"no Lambda architecture for {platform.machine()}")
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # Under xdist the parent of each worker's basetemp is this run's; alone, basetemp is.
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    out = shared / f"core-layer-{ARCHITECTURE}"
    with open(shared / f"core-layer-{ARCHITECTURE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = shared / f"core-layer-{ARCHITECTURE}.done"
        if not built.exists():
            done = subprocess.run(
                ["make", "-C", str(ROOT / "layers" / "core"), "build-CoreLayer",
                 f"ARTIFACTS_DIR={out}", f"ARCHITECTURE={ARCHITECTURE}", f"PYTHON={sys.executable}"],
                capture_output=True, text=True, timeout=840)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            built.touch()
    return out


def _size(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_the_layer_names_pdf_and_zip_with_its_own_libmagic_and_database(layer: Path) -> None:
    import json

    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",  # /opt is read-only
           "PYTHONPATH": str(layer / "python"), "LD_LIBRARY_PATH": str(layer / "lib")}
    # -S: no site-packages, as the runtime has none of ours; the base interpreter, not the venv's.
    done = subprocess.run([sys._base_executable, "-S", "-c", PROBE], capture_output=True,  # type: ignore[attr-defined]
                          text=True, env=env, cwd=layer, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["magic_module"].startswith(str(layer / "python")), seen
    assert seen["problem"] is None, seen
    assert seen["pdf"] == ["application/pdf", None] and seen["zip"] == ["application/zip", None]
    assert seen["direct"] == ["application/pdf", "application/zip"]
    # The machine's libmagic is right there (ldconfig knows it): not one byte of it was used.
    assert seen["mapped"] == [str(layer / "lib" / "libmagic.so.1"),
                              str(layer / "share" / "misc" / "magic.mgc")], seen


def test_the_layers_libmagic_loads_under_amazon_linux_2023(layer: Path) -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    library = layer / "lib" / "libmagic.so.1"
    needed = set(re.findall(r"NEEDED\s+(\S+)", subprocess.run(
        [objdump, "-p", str(library)], capture_output=True, text=True, check=True).stdout))
    assert needed <= AL2023_PROVIDES, needed
    versions = {tuple(int(n) for n in v.split(".")) for v in re.findall(r"GLIBC_([0-9.]+)", subprocess.run(
        [objdump, "-T", str(library)], capture_output=True, text=True, check=True).stdout)}
    assert max(versions) <= AL2023_GLIBC, max(versions)


def test_the_layer_and_the_largest_zip_function_fit_lambdas_250_mb(layer: Path,
                                                                   record_property: pytest.RecordProperty) -> None:
    layer_bytes = _size(layer)
    function_bytes = max(_size(ROOT / "web"), *(_size(d) for d in (ROOT / "functions").iterdir() if d.is_dir()))
    record_property("core_layer_unzipped_bytes", layer_bytes)
    print(f"CoreLayer unzipped: {layer_bytes:,} bytes ({layer_bytes / 2**20:.1f} MiB)")
    assert layer_bytes + function_bytes < LAMBDA_UNZIPPED_BYTES, (layer_bytes, function_bytes)
    assert not (layer / ".build").exists()  # the build's scratch is not shipped
