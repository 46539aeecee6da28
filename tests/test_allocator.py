"""``serve``'s allocator setting (``dicomguard._allocator``): large buffers are reused, not unmapped and faulted in
again; an operator's own glibc setting wins. Each case runs in a child process (the setting is process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = r"""
import ctypes, json, sys
from dicomguard._allocator import keep_large_buffers

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
applied = keep_large_buffers()
buffer = bytearray(48 * 1024 * 1024)
during = libc.mallinfo2()
del buffer
after = libc.mallinfo2()
print(json.dumps({"applied": applied, "mapped_during": during.hblkhd, "free_after": after.fordblks}))
"""

MB48 = 48 * 1024 * 1024


def _probe(**env: str) -> dict[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=clean | env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_a_large_buffer_comes_from_the_heap_and_is_kept_for_the_next_one() -> None:
    seen = _probe()
    assert seen["applied"]
    assert seen["mapped_during"] < MB48  # not a fresh mapping ...
    assert seen["free_after"] >= MB48  # ... and still there, free, for the next object


def test_the_operators_own_glibc_setting_wins() -> None:
    seen = _probe(MALLOC_MMAP_THRESHOLD_=str(1024 * 1024))
    assert not seen["applied"]
    assert seen["mapped_during"] >= MB48  # glibc's behaviour under the operator's threshold: mapped ...
    assert seen["free_after"] < MB48  # ... and returned
