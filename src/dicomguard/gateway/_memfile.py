"""Files that exist only in memory (Linux ``memfd_create``), for plaintext that must not reach a disk.

The same trick :mod:`dicomguard.pki.tls` uses for private keys: libraries that
want a path (pynetdicom streams a C-STORE from a path) get
``/proc/self/fd/<n>``; closing the descriptor frees the memory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def memory_file(chunks: Iterable[bytes | memoryview], name: str = "dicomguard-gw") -> Iterator[Path]:
    """A path to the concatenated ``chunks``, living only in memory; closed on exit.

    ``chunks`` is consumed before the path is handed out, so an exception
    raised while producing it (e.g. failed authentication) prevents any use.
    """
    fd = os.memfd_create(name, getattr(os, "MFD_CLOEXEC", 0))
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        yield Path(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
