"""Large blocks go back to the operating system when they are freed.

glibc serves an allocation of 128 KiB or more with its own mmap, and unmaps it on free; but
after the first such block is freed it raises that threshold (up to 32 MiB), so the next
25 MB attachment, its decoded copy and its zip member come from the heap, and the heap keeps
them: on the benchmark's 25 MB message a worker stayed 77 MB larger after the scan stage
than before it (bench/run.py large_message_runs, VmRSS). Setting the threshold explicitly
turns that adjustment off (mallopt(3): "setting M_MMAP_THRESHOLD disables the dynamic
adjustment"). Called once by each composition root; a no-op where there is no glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("mailmoat.memory")

M_MMAP_THRESHOLD = -3  # <malloc.h>
MMAP_THRESHOLD_BYTES = 1 << 20  # blocks from 1 MiB up: attachments, not the parser's objects

_done = False


def return_large_blocks_to_the_system() -> bool:
    """mallopt(M_MMAP_THRESHOLD, 1 MiB) once per process; True when glibc accepted it."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS: their allocators do not adjust like this
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _done = int(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) == 1
    if not _done:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; large attachments may stay resident")
    return _done
