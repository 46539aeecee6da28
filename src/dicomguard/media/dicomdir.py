"""The DICOMDIR of a medium, encoded in memory (PS3.10 8.6, PS3.3 Annex F).

The DICOMDIR is a PS3.10 file (preamble, ``DICM``, file meta information) of
the Media Storage Directory SOP Class (1.2.840.10008.1.3.10) in Explicit VR
Little Endian, whose Media Storage SOP Instance UID is the File-set UID
(PS3.10 8.6). Its data set is the Basic Directory IOD (PS3.3 F.3): File-set ID,
the offsets of the first and last root records (0004,1200)/(0004,1202), the
consistency flag, and the Directory Record Sequence (0004,1220), one item per
record, PATIENT -> STUDY -> SERIES -> leaf (see :mod:`dicomguard.media.records`).

Offsets are byte positions from the first byte of the file (the preamble) to
the item tag of a record (PS3.3 F.3.2.2). Each record is encoded once when its
instance is added (an object whose record cannot be encoded is refused then,
before its file is emitted), and the offsets are patched in at the end: they
are fixed-length UL values at fixed places in an Explicit VR Little Endian
record, so the lengths, hence the offsets, do not depend on them.

Why not ``pydicom.fileset.FileSet``: ``FileSet.add`` stages every instance as
a file in a temporary folder and ``FileSet.write`` chooses its own File IDs;
the archive writes no plaintext header to disk and the medium's File IDs are
the allocator's. pydicom's record-type table and leaf-record builders are used.

Records are kept in arrival order within their parent: patients, their
studies, series and instances appear in the order they first arrived, in
depth-first order in the sequence (the usual order; PS3.3 does not require one).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from dicomguard.media.errors import MediaError
from dicomguard.media.file_ids import is_conformant
from dicomguard.media.records import Hierarchy, hierarchy_of, leaf_keys, patient_keys, series_keys, study_keys

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
"""Media Storage Directory Storage SOP Class (PS3.4 Annex I)."""

_FILE_SET_ID = re.compile(r"[A-Z0-9_]{0,16}")  # PS3.10 8.5 characters, CS length of (0004,1130)

# Explicit VR Little Endian, short form (PS3.5 7.1.2): tag, VR, 16-bit length, value.
_SHORT = struct.Struct("<HH2sH")
# A record opens with (0004,1400) UL, (0004,1410) US, (0004,1420) UL: 12 + 10 + 12 bytes; the two offsets are at:
_NEXT_AT, _LOWER_AT = 8, 30
_ITEM = struct.Struct("<HHI")  # item tag (FFFE,E000) and its defined length
_SQ_HEADER = struct.Struct("<HH2s2xI")  # (0004,1220) SQ, reserved, defined length


class DicomdirEntry(NamedTuple):
    """One instance for :func:`build_dicomdir`: its File ID components and its header (pixel data not needed)."""

    file_id: Sequence[str]
    header: Dataset


@dataclass(eq=False)
class _Node:
    record: bytearray
    children: list[_Node] = field(default_factory=list)


class DicomdirBuilder:
    """Collects the records of a medium's instances, then encodes the DICOMDIR once.

    Keeps only encoded records (a few hundred bytes per instance), never the headers.
    """

    def __init__(self) -> None:
        self._patients: list[_Node] = []
        self._patient_by_key: dict[tuple[str, ...], _Node] = {}
        self._study_by_uid: dict[str, _Node] = {}
        self._series_by_key: dict[tuple[str, str], _Node] = {}
        self._instances: set[str] = set()

    def __len__(self) -> int:
        return len(self._instances)

    def add(self, file_id: Sequence[str], header: Dataset, hierarchy: Hierarchy | None = None) -> None:
        """Add one instance stored under ``file_id``; :class:`MediaError` leaves the builder unchanged.

        ``hierarchy`` is :func:`hierarchy_of` ``(header)``, passed by callers that already computed it.
        """
        h = hierarchy if hierarchy is not None else hierarchy_of(header)
        if not is_conformant(file_id):
            raise MediaError("File ID does not conform to PS3.10 8.2/8.5", sop_instance_uid=h.sop_instance_uid)
        if h.sop_instance_uid in self._instances:
            raise MediaError("SOP Instance UID already in the directory", sop_instance_uid=h.sop_instance_uid)
        # Build and encode everything first, then link: a failure changes nothing.
        study = self._study_by_uid.get(h.study_uid)
        patient = self._patient_by_key.get(h.patient_key) if study is None else None
        series = self._series_by_key.get((h.study_uid, h.series_uid)) if study is not None else None
        try:
            new_patient = new_study = new_series = None
            if study is None and patient is None:
                new_patient = _Node(_record("PATIENT", patient_keys(header, len(self._patients) + 1)))
            if study is None:
                new_study = _Node(_record("STUDY", study_keys(header, _next_position(patient))))
            if series is None:
                new_series = _Node(_record("SERIES", series_keys(header, _next_position(study))))
            leaf_type, keys = leaf_keys(header, _next_position(series))
            leaf = _Node(_record(leaf_type, keys, file_id, h))
        except MediaError:
            raise
        except Exception as exc:
            # The exception text may quote a value (PHI): only its type is reported.
            raise MediaError(f"directory record does not encode ({type(exc).__name__})",
                             sop_instance_uid=h.sop_instance_uid) from None
        if new_patient is not None:
            self._patients.append(new_patient)
            self._patient_by_key[h.patient_key] = patient = new_patient
        if new_study is not None:
            assert patient is not None
            patient.children.append(new_study)
            self._study_by_uid[h.study_uid] = study = new_study
        if new_series is not None:
            assert study is not None
            study.children.append(new_series)
            self._series_by_key[(h.study_uid, h.series_uid)] = series = new_series
        assert series is not None
        series.children.append(leaf)
        self._instances.add(h.sop_instance_uid)

    def encode(self, *, file_set_id: str = "", file_set_uid: str | None = None) -> bytes:
        """The DICOMDIR file (PS3.10 8.6); ``file_set_uid`` defaults to a new UID."""
        check_file_set_id(file_set_id)
        uid = file_set_uid or generate_uid()
        ordered: list[_Node] = []
        _preorder(self._patients, ordered)
        prefix_length = len(_prefix(file_set_id, uid, 0, 0))
        offset = prefix_length + _SQ_HEADER.size
        offsets: dict[int, int] = {}
        for node in ordered:
            offsets[id(node)] = offset
            offset += _ITEM.size + len(node.record)
        for siblings in _sibling_lists(self._patients):
            for i, node in enumerate(siblings):
                following = offsets[id(siblings[i + 1])] if i + 1 < len(siblings) else 0
                lower = offsets[id(node.children[0])] if node.children else 0
                struct.pack_into("<I", node.record, _NEXT_AT, following)
                struct.pack_into("<I", node.record, _LOWER_AT, lower)
        first = offsets[id(self._patients[0])] if self._patients else 0
        last = offsets[id(self._patients[-1])] if self._patients else 0
        prefix = _prefix(file_set_id, uid, first, last)
        assert len(prefix) == prefix_length  # UL values are fixed length: the layout cannot move
        body = sum(_ITEM.size + len(n.record) for n in ordered)
        out = bytearray(prefix)
        out += _SQ_HEADER.pack(0x0004, 0x1220, b"SQ", body)
        for node in ordered:
            out += _ITEM.pack(0xFFFE, 0xE000, len(node.record))
            out += node.record
        return bytes(out)


def check_file_set_id(value: str) -> None:
    """ValueError unless ``value`` is a File-set ID: up to 16 characters from A-Z, 0-9 and _ (PS3.10 8.5, PS3.3 F.3.2.1)."""
    if not _FILE_SET_ID.fullmatch(value):
        raise ValueError("a File-set ID is up to 16 characters from A-Z, 0-9 and _ (PS3.10 8.5)")


def build_dicomdir(entries: Iterable[DicomdirEntry | tuple[Sequence[str], Dataset]], *, file_set_id: str = "",
                   file_set_uid: str | None = None) -> bytes:
    """The DICOMDIR (PS3.10 8.6) of the given instances, each as (File ID components, header)."""
    builder = DicomdirBuilder()
    for file_id, header in entries:
        builder.add(file_id, header)
    return builder.encode(file_set_id=file_set_id, file_set_uid=file_set_uid)


def _prefix(file_set_id: str, file_set_uid: str, first: int, last: int) -> bytes:
    """Preamble, ``DICM``, file meta (PS3.10 7.1) and the Basic Directory attributes before the record sequence."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MEDIA_STORAGE_DIRECTORY)
    meta.MediaStorageSOPInstanceUID = UID(file_set_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.FileSetID = file_set_id
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = first
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = last
    ds.FileSetConsistencyFlag = 0  # PS3.3 F.3.2.2: 0 = no known inconsistencies
    fp = _writer()
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    write_dataset(fp, ds)
    return bytes(fp.getvalue())


def _record(record_type: str, keys: Dataset, file_id: Sequence[str] = (), refers: Hierarchy | None = None) -> bytearray:
    """One encoded directory record: the Directory Information attributes (PS3.3 F.3.2.2), then the keys.

    Group 0004 is encoded here (the offsets stay 0 until :meth:`DicomdirBuilder.encode`
    patches them); the keys, all of higher groups, by pydicom in the record's character set.
    """
    out = bytearray()
    out += _SHORT.pack(0x0004, 0x1400, b"UL", 4) + b"\0\0\0\0"  # Offset of the Next Directory Record
    out += _SHORT.pack(0x0004, 0x1410, b"US", 2) + b"\xff\xff"  # Record In-use Flag (retired; 0xFFFF = in use)
    out += _SHORT.pack(0x0004, 0x1420, b"UL", 4) + b"\0\0\0\0"  # Offset of Referenced Lower-Level Directory Entity
    out += _text(0x1430, b"CS", record_type, b" ")
    if refers is not None:
        out += _text(0x1500, b"CS", "\\".join(file_id), b" ")  # Referenced File ID, one value per component
        out += _text(0x1510, b"UI", refers.sop_class_uid, b"\0")
        out += _text(0x1511, b"UI", refers.sop_instance_uid, b"\0")
        out += _text(0x1512, b"UI", refers.transfer_syntax_uid, b"\0")
    fp = _writer()
    write_dataset(fp, keys)
    out += fp.getvalue()
    return out


def _text(element: int, vr: bytes, value: str, pad: bytes) -> bytes:
    """A group 0004 string element, padded to even length (PS3.5 6.2: CS with space, UI with NUL)."""
    data = value.encode("ascii")
    if len(data) % 2:
        data += pad
    return _SHORT.pack(0x0004, element, vr, len(data)) + data


def _writer() -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    return fp


def _preorder(nodes: list[_Node], out: list[_Node]) -> None:
    for node in nodes:
        out.append(node)
        _preorder(node.children, out)


def _sibling_lists(roots: list[_Node]) -> Iterable[list[_Node]]:
    stack = [roots]
    while stack:
        siblings = stack.pop()
        yield siblings
        stack.extend(n.children for n in siblings if n.children)


def _next_position(parent: _Node | None) -> int:
    """1-based position of a new child of ``parent`` (a new parent has none yet)."""
    return 1 if parent is None else len(parent.children) + 1
