"""A study as removable media: a ZIP of PS3.10 files with a DICOMDIR, streamed (share-link downloads).

Layout of the archive (a PS3.10 File-set, as on a CD, unpacked anywhere)::

    DICOM/PT000001/ST000001/SE000001/IM000001   PS3.10 files, byte for byte as given
    DICOM/PT000001/ST000001/SE000001/IM000002
    DICOM/PT000001/ST000001/SE000002/IM000001
    ...
    DICOMDIR                                    the File-set's directory (PS3.10 8.6)

* Paths are PS3.10 File IDs (8.2: at most 8 components of 1-8 characters;
  8.5: A-Z, 0-9, _), numbered patient/study/series/instance in order of first
  arrival; instances group by series even when they arrive interleaved
  (:mod:`.file_ids`). No path carries an attribute value.
* ``DICOMDIR`` (Media Storage Directory, Explicit VR Little Endian) holds one
  PATIENT, STUDY and SERIES record per group and one leaf record per file
  (IMAGE, SR DOCUMENT, ... by SOP class), with the PS3.3 F.5 keys and the
  Referenced File ID / SOP Class / SOP Instance / Transfer Syntax UID in File
  (:mod:`.dicomdir`, :mod:`.records`). It comes last: it can only be written
  once every file is known, and the stream does not look ahead.
* The ZIP stores members uncompressed, with sizes and CRC-32 in the local
  headers, ZIP64 where needed (:mod:`.zip_stream`, APPNOTE 6.3.10).

Use::

    media = StudyMedia()
    for chunk in media.stream(objects):   # objects: PS3.10 files (bytes or memoryview), one at a time
        send(chunk)                        # bytes or memoryview
    media.file_ids                         # SOP Instance UID -> member name, for the caller's records

or ``stream_study_media(objects)`` when the File IDs are not needed.

Nothing is written to disk: headers are parsed in memory, the DICOMDIR is
encoded in memory, and only one object (the one being sent) plus a few
hundred bytes per object already sent are held. An object that is not a
PS3.10 file, or cannot be placed (no Study/Series Instance UID, a repeated
SOP Instance UID), raises :class:`MediaError` before any byte of it is
emitted; the archive is then incomplete and the caller must abort the
response rather than end it normally (a client would otherwise keep a
truncated ZIP).

This package is a control: it imports nothing from dicomguard but
:mod:`dicomguard.errors`; access decisions, audit and retrieval are the caller's.
"""

from __future__ import annotations

from dicomguard.media.dicomdir import MEDIA_STORAGE_DIRECTORY, DicomdirBuilder, DicomdirEntry, build_dicomdir
from dicomguard.media.errors import MediaError
from dicomguard.media.file_ids import FileId, FileIdAllocator, as_path, is_conformant
from dicomguard.media.header import read_header
from dicomguard.media.stream import DICOMDIR, StudyMedia, stream_study_media
from dicomguard.media.zip_stream import ZipStreamWriter

__all__ = [
    "DICOMDIR",
    "MEDIA_STORAGE_DIRECTORY",
    "DicomdirBuilder",
    "DicomdirEntry",
    "FileId",
    "FileIdAllocator",
    "MediaError",
    "StudyMedia",
    "ZipStreamWriter",
    "as_path",
    "build_dicomdir",
    "is_conformant",
    "read_header",
    "stream_study_media",
]
