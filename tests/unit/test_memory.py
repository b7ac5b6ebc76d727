"""A freed large block leaves the process (mailmoat.memory), and the composition root sets it."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
if sys.argv[1] == "set":
    from mailmoat.memory import return_large_blocks_to_the_system
    assert return_large_blocks_to_the_system()
# glibc raises its mmap threshold when an mmapped block is freed: the next blocks of 25 MB
# then come from the heap, and stay resident after they are freed.
first = b"x" * (30 << 20); del first
base = rss_mb()
blocks, pins = [], []
for _ in range(3):
    blocks.append(b"x" * (25 << 20))
    pins.append(b"y" * (200 << 10))  # what the pipeline allocates meanwhile, above it
del blocks
print(rss_mb() - base)
"""


def _retained_mb(mode: str) -> float:
    proc = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          timeout=60, check=True)
    return float(proc.stdout.strip())


def test_freed_attachment_sized_blocks_are_returned_once_the_threshold_is_set() -> None:
    assert _retained_mb("default") > 50  # glibc's dynamic threshold keeps them (the reason)
    assert _retained_mb("set") < 10


def test_the_composition_root_sets_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = ("import mailmoat.memory as m; from mailmoat.bootstrap import bootstrap; "
            "from mailmoat.settings import Settings; from pathlib import Path; import sys; "
            "assert not m._done; bootstrap(Settings(data_dir=Path(sys.argv[1]))); "
            "print(m._done)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "True"
