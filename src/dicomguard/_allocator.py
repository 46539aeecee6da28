"""How the serving process's C allocator treats large buffers (glibc ``mallopt(3)``).

A received object, its Part 10 bytes, its blob and a retrieved object's plaintext are
each one large buffer. glibc serves every allocation above its mmap threshold (at most
32 MiB by default) with a fresh ``mmap``, returns it to the kernel on ``free``, and the
next object faults every page in again: for a 50 MB cine, about 20 ms per copy spent
zeroing pages, on a path whose whole budget is a few hundred milliseconds
(``bench/README.md``, "Network benchmark"). ``serve`` therefore raises the threshold to
:data:`MMAP_THRESHOLD` and keeps up to :data:`TRIM_THRESHOLD` of free memory at the top
of a heap, so buffers up to that size are reused instead of faulted in.

The price is memory held after a peak: each allocator arena (glibc makes up to 8 per
core, one per busy thread) may keep up to about :data:`TRIM_THRESHOLD` it no longer
uses. Larger objects are still mapped and unmapped as before. An operator who sets
glibc's own ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` keeps that choice
(``docs/operations.md``). Nothing here changes what is stored or its protection.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 64 * 1024 * 1024
"""Allocations below this come from the arenas (threads' arenas grow in heaps of 64 MiB, so larger ones are mapped anyway)."""
TRIM_THRESHOLD = 128 * 1024 * 1024
"""Free memory at the top of a heap kept for reuse, per arena."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_large_buffers() -> bool:
    """Apply the thresholds above (glibc only; elsewhere, or when the operator set them, nothing). True if applied."""
    if any(name in os.environ for name in _OPERATOR_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: its allocator has its own policy
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not applied:
        log.info("the C allocator refused the large-buffer thresholds; running with its defaults")
    return applied
