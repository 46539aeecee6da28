"""Reading the header of a PS3.10 file held in memory, without copying the file.

A PS3.10 file starts with a 128-byte preamble, the prefix ``DICM`` and the
file meta information group (PS3.10 7.1); anything else is refused. The data
set is parsed up to, not including, Pixel Data (pydicom ``stop_before_pixels``),
so the header of a 60 MB cine costs what the header of a CT slice costs.
"""

from __future__ import annotations

import io

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicomguard.media.errors import MediaError

_PREFIX_AT = 128


def read_header(data: bytes | bytearray | memoryview, *, index: int | None = None) -> Dataset:
    """The file meta information and the data set up to Pixel Data; :class:`MediaError` if not a PS3.10 file."""
    view = memoryview(data)
    check_prefix(view, index=index)
    # BytesIO shares an immutable bytes object instead of copying it; any other buffer is read through a view.
    source = io.BytesIO(data) if isinstance(data, bytes) else _ViewReader(view)
    try:
        return dcmread(source, stop_before_pixels=True)
    except Exception as exc:
        # pydicom's messages may quote element values (PHI): only the exception type is reported.
        raise MediaError(f"header does not parse ({type(exc).__name__})", index=index) from None


def check_prefix(view: memoryview, *, index: int | None = None) -> None:
    """:class:`MediaError` unless ``view`` starts with a 128-byte preamble and ``DICM`` (PS3.10 7.1)."""
    if view.nbytes < _PREFIX_AT + 4 or view[_PREFIX_AT:_PREFIX_AT + 4].tobytes() != b"DICM":
        raise MediaError("not a PS3.10 file (no DICM prefix after the 128-byte preamble, PS3.10 7.1)", index=index)


class _ViewReader(io.RawIOBase):
    """A seekable, read-only file over a memoryview: reads copy only what is read."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        end = min(self._pos + len(buffer), self._view.nbytes)
        n = max(end - self._pos, 0)
        buffer[:n] = self._view[self._pos:end]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._view.nbytes}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos
