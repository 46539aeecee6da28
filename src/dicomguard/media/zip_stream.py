"""A ZIP archive written front to back, for a sink that cannot seek (an HTTP response).

Format (PKWARE APPNOTE.TXT 6.3.10): for each member a local file header
(4.3.7) and the member's bytes, stored (compression method 0, 4.4.5): DICOM
pixel data rarely compresses and the writer must keep up with the network;
then the central directory (4.3.12) and the end of central directory record
(4.3.16), preceded by the ZIP64 end record (4.3.14) and locator (4.3.15) when
a count, size or offset does not fit its 16- or 32-bit field (4.4.1.4).

Each member is handed over whole (one object at a time is in memory anyway),
so its CRC-32 and size go into the local header and general purpose bit 3
(data descriptor, 4.3.9) is not used: readers that stream the archive, which
cannot find the end of a stored member without its size, read it too (Java's
``ZipInputStream`` refuses stored members with a data descriptor). Nothing is
ever written back, so the output needs no seek.

ZIP64 per member (4.5.3): a member of 4 GiB - 1 bytes or more gets 0xFFFFFFFF
in the local header's size fields and both sizes in a ZIP64 extra field; in
the central directory each field that overflows (sizes, local header offset)
is 0xFFFFFFFF and its value is in the extra field, in the APPNOTE order.

Member data is handed out as zero-copy ``memoryview`` slices of the caller's
buffer, except its last ``tail`` bytes (64 KiB by default), which are copied: a
consumer usually still holds the last chunk it got while it asks for the next
one (``for chunk in ...``), and a view would keep the whole previous member
alive while the next one is produced. The CRC-32 is computed on the buffer in
place.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterator

_MAX16 = 0xFFFF
_MAX32 = 0xFFFFFFFF
_VERSION = 20  # 2.0: stored members, folders (4.4.3.2)
_VERSION_ZIP64 = 45  # 4.5: ZIP64 format extensions
_UNIX = 3  # "version made by" upper byte (4.4.2.2): external attributes are Unix modes
_FILE_MODE = 0o100644 << 16  # regular file, rw-r--r--
_UTF8_NAME = 1 << 11  # general purpose bit 11 (4.4.4): name encoded in UTF-8

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sBBHHHHHIIIHHHHHII")
_ZIP64_END = struct.Struct("<4sQBBHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_END = struct.Struct("<4sHHHHIIH")

DosTime = tuple[int, int]
"""(time, date) in MS-DOS format (4.4.6)."""


def dos_time(when: time.struct_time) -> DosTime:
    """MS-DOS time and date (2-second resolution; years before 1980 are 1980)."""
    if when.tm_year < 1980:
        return 0, (1 << 5) | 1
    return ((when.tm_hour << 11) | (when.tm_min << 5) | (when.tm_sec // 2),
            ((when.tm_year - 1980) << 9) | (when.tm_mon << 5) | when.tm_mday)


def local_header(name: bytes, flags: int, crc: int, size: int, dos: DosTime) -> bytes:
    """Local file header of a stored member (4.3.7), with the ZIP64 extra field when ``size`` needs it (4.5.3)."""
    if size >= _MAX32:
        extra = struct.pack("<HHQQ", 0x0001, 16, size, size)  # original, then compressed size
        return _LOCAL.pack(b"PK\x03\x04", _VERSION_ZIP64, flags, 0, *dos, crc, _MAX32, _MAX32, len(name), len(extra)) + name + extra
    return _LOCAL.pack(b"PK\x03\x04", _VERSION, flags, 0, *dos, crc, size, size, len(name), 0) + name


def central_header(name: bytes, flags: int, crc: int, size: int, offset: int, dos: DosTime) -> bytes:
    """Central directory header of a stored member (4.3.12); overflowing fields move to a ZIP64 extra field (4.5.3)."""
    fields: list[int] = []
    if size >= _MAX32:
        fields += [size, size]
    if offset >= _MAX32:
        fields.append(offset)
    extra = struct.pack(f"<HH{len(fields)}Q", 0x0001, 8 * len(fields), *fields) if fields else b""
    stored_size = _MAX32 if size >= _MAX32 else size
    version = _VERSION_ZIP64 if fields else _VERSION
    return _CENTRAL.pack(b"PK\x01\x02", _VERSION_ZIP64, _UNIX, version, flags, 0, *dos, crc, stored_size, stored_size,
                         len(name), len(extra), 0, 0, 0, _FILE_MODE, min(offset, _MAX32)) + name + extra


def end_records(entries: int, directory_offset: int, directory_size: int) -> bytes:
    """End of central directory (4.3.16), preceded by the ZIP64 end record and locator when a field overflows."""
    zip64 = entries >= _MAX16 or directory_offset >= _MAX32 or directory_size >= _MAX32
    out = b""
    if zip64:
        end64_offset = directory_offset + directory_size
        out += _ZIP64_END.pack(b"PK\x06\x06", _ZIP64_END.size - 12, _VERSION_ZIP64, _UNIX, _VERSION_ZIP64, 0, 0,
                               entries, entries, directory_size, directory_offset)
        out += _ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, end64_offset, 1)
    out += _END.pack(b"PK\x05\x06", 0, 0, min(entries, _MAX16), min(entries, _MAX16), min(directory_size, _MAX32),
                     min(directory_offset, _MAX32), 0)
    return out


class ZipStreamWriter:
    """Writes one ZIP archive as a sequence of chunks; see the module docstring for the format.

    ``offset`` is the number of bytes the sink already holds before the
    archive (0 for a response body): member offsets are counted from the
    start of the sink, as readers expect. ``chunk_size`` bounds the member
    slices handed out (0: one slice per member); the last ``tail`` bytes of a
    member are handed out as a copy (see the module docstring).
    """

    def __init__(self, *, modified: time.struct_time | None = None, chunk_size: int = 1 << 20, offset: int = 0,
                 tail: int = 1 << 16) -> None:
        self._dos = dos_time(modified or time.localtime())
        self._chunk = chunk_size
        self._tail = tail
        self._offset = offset
        self._directory: list[bytes] = []
        self._names: set[bytes] = set()
        self._finished = False

    @property
    def offset(self) -> int:
        """Bytes handed out so far, counted from the start of the sink."""
        return self._offset

    @property
    def entries(self) -> int:
        return len(self._directory)

    def add(self, name: str, data: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
        """The chunks of one stored member: its local header, then its bytes (zero-copy slices).

        Everything is computed before anything is returned, so a refused name
        (repeated, absolute, empty) leaves the archive unchanged.
        """
        if self._finished:
            raise RuntimeError("the archive is already finished")
        encoded, flags = _member_name(name)
        if encoded in self._names:
            raise ValueError("a member of that name is already in the archive")
        view = data if isinstance(data, memoryview) else memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        size = view.nbytes
        crc = zlib.crc32(view)
        header = local_header(encoded, flags, crc, size, self._dos)
        self._directory.append(central_header(encoded, flags, crc, size, self._offset, self._dos))
        self._names.add(encoded)
        self._offset += len(header) + size
        chunks: list[bytes | memoryview] = [header]
        body = max(size - self._tail, 0)
        step = self._chunk if self._chunk > 0 else max(body, 1)
        chunks.extend(view[start:min(start + step, body)] for start in range(0, body, step))
        if body < size:
            chunks.append(bytes(view[body:]))  # a copy: see the module docstring
        return chunks

    def finish(self) -> bytes:
        """The central directory and end records; the archive is complete after them."""
        if self._finished:
            raise RuntimeError("the archive is already finished")
        self._finished = True
        directory = b"".join(self._directory)
        tail = directory + end_records(len(self._directory), self._offset, len(directory))
        self._offset += len(tail)
        return tail


def iter_chunks(chunks: list[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    """Yield non-empty chunks (an empty chunk would read as end of body to some HTTP servers)."""
    for chunk in chunks:
        if len(chunk):
            yield chunk


def _member_name(name: str) -> tuple[bytes, int]:
    # 4.4.17.1: relative path, forward slashes, no drive letter or leading slash.
    if not name or name.startswith("/") or "\\" in name or ".." in name.split("/") or ":" in name:
        raise ValueError("a member name must be a relative path with forward slashes")
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), _UTF8_NAME
