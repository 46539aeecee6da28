"""One study medium streamed as a ZIP: PS3.10 files under their File IDs, then the DICOMDIR.

Per object, in order: read its header (or take it from ``header_of``), place
it in the hierarchy, give it a File ID, encode its directory records, and only
then emit its local header and bytes. Anything that fails raises
:class:`MediaError` before a byte of that object is emitted. After the last
object come the ``DICOMDIR`` member (at the root, PS3.10 8.6) and the ZIP
central directory.

Memory: the object being written, plus a few hundred bytes of encoded
directory records and a ZIP central directory entry per object. The header
is dropped once its records are encoded; the caller's buffer is released
before the next object is requested.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType

from pydicom.dataset import Dataset

from dicomguard.media.dicomdir import DicomdirBuilder, check_file_set_id
from dicomguard.media.errors import MediaError
from dicomguard.media.file_ids import ROOT, FileIdAllocator, as_path
from dicomguard.media.header import check_prefix, read_header
from dicomguard.media.records import hierarchy_of
from dicomguard.media.zip_stream import ZipStreamWriter, iter_chunks

DICOMDIR = "DICOMDIR"

Chunk = bytes | memoryview
HeaderOf = Callable[[memoryview], Dataset]


class StudyMedia:
    """A medium being streamed: call :meth:`stream` once, then read :attr:`file_ids`.

    ``header_of`` returns the header (file meta + data set; pixel data not
    needed) of an object; by default it is parsed from the bytes, which must be
    a PS3.10 file either way. ``file_set_id`` is the DICOMDIR's File-set ID
    (PS3.10 8.5, up to 16 characters), ``file_set_uid`` its File-set UID (new
    by default). ``modified`` stamps every member (default: now);
    ``chunk_size`` bounds the slices a large object is handed out in.

    ``header_of`` is called with a memoryview of the object, after the PS3.10
    prefix check; its exceptions are not translated. Objects should come from an
    iterator that does not itself keep the previous object while it produces the
    next one, or two objects are in memory at that moment.
    """

    def __init__(self, *, header_of: HeaderOf | None = None, file_set_id: str = "", file_set_uid: str | None = None,
                 modified: time.struct_time | None = None, chunk_size: int = 1 << 20, root: str = ROOT) -> None:
        # Checked now, not when the DICOMDIR is written after every file has been sent.
        check_file_set_id(file_set_id)
        if root == DICOMDIR:
            raise ValueError("the root folder cannot be named like the DICOMDIR file beside it")
        self._header_of = header_of
        self._file_set_id = file_set_id
        self._file_set_uid = file_set_uid
        self._zip = ZipStreamWriter(modified=modified, chunk_size=chunk_size)
        self._allocator = FileIdAllocator(root)
        self._directory = DicomdirBuilder()
        self._file_ids: dict[str, str] = {}
        self._payload = 0
        self._started = False
        self._complete = False

    @property
    def file_ids(self) -> Mapping[str, str]:
        """SOP Instance UID -> ZIP member name (the File ID joined by ``/``) of every object emitted so far."""
        return MappingProxyType(self._file_ids)

    @property
    def complete(self) -> bool:
        """Whether the whole archive (DICOMDIR and central directory included) was emitted."""
        return self._complete

    @property
    def payload_bytes(self) -> int:
        """Bytes of the objects themselves emitted so far (headers, DICOMDIR and directory excluded)."""
        return self._payload

    @property
    def total_bytes(self) -> int:
        """Bytes emitted so far, everything included."""
        return self._zip.offset

    def stream(self, objects: Iterable[bytes | bytearray | memoryview]) -> Iterator[Chunk]:
        """The ZIP archive, chunk by chunk (see the module docstring)."""
        if self._started:
            raise RuntimeError("a StudyMedia streams once")
        self._started = True
        return self._run(iter(objects))

    def _run(self, objects: Iterator[bytes | bytearray | memoryview]) -> Iterator[Chunk]:
        # Not enumerate(): its reused result tuple keeps the previous object alive while the next one is made.
        index = 0
        for data in objects:
            name, uid, chunks = self._admit(data, index)
            del data  # from here on only the chunks refer to the buffer: it can go as soon as the consumer drops them
            yield from iter_chunks(chunks)
            self._file_ids[uid] = name
            self._payload += sum(len(c) for c in chunks[1:])
            del chunks
            index += 1  # noqa: SIM113
        dicomdir = self._directory.encode(file_set_id=self._file_set_id, file_set_uid=self._file_set_uid)
        yield from iter_chunks(self._zip.add(DICOMDIR, dicomdir))
        yield self._zip.finish()
        self._complete = True

    def _admit(self, data: bytes | bytearray | memoryview, index: int) -> tuple[str, str, list[Chunk]]:
        """Everything that can fail for one object, done before any of it is emitted."""
        view = memoryview(data)
        if self._header_of is None:
            header = read_header(data, index=index)
        else:
            check_prefix(view, index=index)
            header = self._header_of(view)
        try:
            hierarchy = hierarchy_of(header)
            file_id = self._allocator.assign(patient_key=hierarchy.patient_key, study_uid=hierarchy.study_uid,
                                             series_uid=hierarchy.series_uid, sop_instance_uid=hierarchy.sop_instance_uid)
            self._directory.add(file_id, header, hierarchy)
        except MediaError as exc:
            raise MediaError(exc.reason, index=index, sop_instance_uid=exc.sop_instance_uid) from None
        name = as_path(file_id)
        return name, hierarchy.sop_instance_uid, self._zip.add(name, view)


def stream_study_media(objects: Iterable[bytes | bytearray | memoryview], *, header_of: HeaderOf | None = None,
                       file_set_id: str = "") -> Iterator[Chunk]:
    """The ZIP of a study medium (see :class:`StudyMedia`, which also reports the File IDs)."""
    return StudyMedia(header_of=header_of, file_set_id=file_set_id).stream(objects)
