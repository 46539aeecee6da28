"""A study medium end to end: members identical to the input, DICOMDIR resolving to them, refusals before emission."""

from __future__ import annotations

import builtins
import io
import os
import re
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.fileset import FileSet
from pydicom.uid import UID

from dicomguard.errors import DicomGuardError
from dicomguard.media import DICOMDIR, MediaError, StudyMedia, stream_study_media
from tests.dicom_factory import ALICE, BOB, CAROL, ct_series, phi_needles, us_multiframe
from tests.share_media.objects import chunks_until_error, extract, header, members, sop_uid, sr_document, stream_all

FILE_ID = re.compile(r"[A-Z0-9_]{1,8}(/[A-Z0-9_]{1,8}){0,7}")  # PS3.10 8.2, 8.5


def interleave(*series: list[bytes]) -> list[bytes]:
    out = []
    for i in range(max(map(len, series))):
        out += [s[i] for s in series if i < len(s)]
    return out


def check_medium(archive: bytes, media: StudyMedia, objects: list[bytes], folder: Path) -> dict[str, bytes]:
    """Members byte-identical to the input; the DICOMDIR, read by pydicom, resolves every instance to its member."""
    got = members(archive)
    assert list(got)[-1] == DICOMDIR
    files = {name: data for name, data in got.items() if name != DICOMDIR}
    assert sorted(files.values()) == sorted(objects)
    assert all(FILE_ID.fullmatch(name) for name in files)
    by_uid = {sop_uid(o): o for o in objects}
    assert set(media.file_ids) == set(by_uid)
    for uid, name in media.file_ids.items():
        assert files[name] == by_uid[uid]
    root = extract(archive, folder)
    fs = FileSet(dcmread(root / DICOMDIR))
    assert len(fs) == len(objects)
    for instance in fs:
        path = Path(instance.path)
        assert path.relative_to(root).as_posix() == media.file_ids[instance.SOPInstanceUID]
        assert dcmread(path, stop_before_pixels=True).SOPInstanceUID == instance.SOPInstanceUID
    return files


def test_a_study_round_trips(tmp_path: Path) -> None:
    objects = ct_series(ALICE, n=4) + [us_multiframe(ALICE)]
    archive, media = stream_all(objects)
    check_medium(archive, media, objects, tmp_path)
    assert media.complete and media.payload_bytes == sum(map(len, objects)) and media.total_bytes == len(archive)


def test_interleaved_series_group_by_folder(tmp_path: Path) -> None:
    a, b = ct_series(ALICE, n=3, seed=1), ct_series(ALICE, n=3, seed=2)
    objects = interleave(a, b)
    archive, media = stream_all(objects)
    check_medium(archive, media, objects, tmp_path)
    folders = {s: {media.file_ids[sop_uid(o)].rsplit("/", 1)[0] for o in s} for s in (tuple(a), tuple(b))}
    assert all(len(f) == 1 for f in folders.values()) and len(set().union(*folders.values())) == 2
    fs = FileSet(dcmread(tmp_path / DICOMDIR))
    series = [node for node in fs._tree if node.record_type == "SERIES"]  # type: ignore[attr-defined]
    assert len(series) == 2 and all(len(s.children) == 3 for s in series)


def test_two_patients_in_one_archive(tmp_path: Path) -> None:
    objects = interleave(ct_series(ALICE, n=2), ct_series(BOB, n=2)) + [sr_document(CAROL)]
    archive, media = stream_all(objects)
    check_medium(archive, media, objects, tmp_path)
    fs = FileSet(dcmread(tmp_path / DICOMDIR))
    assert sorted(fs.find_values("PatientID")) == sorted([ALICE.patient_id, BOB.patient_id, CAROL.patient_id])
    assert {name.split("/")[1] for name in media.file_ids.values()} == {"PT000001", "PT000002", "PT000003"}


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_buffers_other_than_bytes(kind: type, tmp_path: Path) -> None:
    objects = ct_series(BOB, n=2)
    archive, media = stream_all([kind(o) for o in objects])
    check_medium(archive, media, objects, tmp_path)


def test_header_supplied_by_the_caller(tmp_path: Path) -> None:
    objects = ct_series(CAROL, n=2)
    seen: list[int] = []

    def header_of(view: memoryview) -> object:
        seen.append(view.nbytes)
        return header(bytes(view))

    archive, media = stream_all(objects, header_of=header_of)
    check_medium(archive, media, objects, tmp_path)
    assert seen == [len(o) for o in objects]


@pytest.mark.parametrize("bad", [
    b"not dicom at all",
    b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff",  # a prefix, then a broken meta element
    os.urandom(4000),
])
def test_a_non_dicom_object_is_refused_before_any_of_it_is_emitted(bad: bytes) -> None:
    good = ct_series(ALICE, n=2)
    received, error = chunks_until_error(stream_study_media([good[0], bad, good[1]]))
    assert isinstance(error, MediaError) and isinstance(error, DicomGuardError)
    assert error.index == 1 and str(error).startswith("object 1:")
    # What left is exactly the first member: its local header and its bytes, nothing of the refused object.
    assert received.endswith(good[0]) and len(received) - len(good[0]) == 30 + len("DICOM/PT000001/ST000001/SE000001/IM000001")


def test_refusal_messages_carry_no_phi() -> None:
    objects = ct_series(ALICE, n=1)
    no_series = header(objects[0])
    del no_series.SeriesInstanceUID
    from tests.dicom_factory import to_bytes

    for stream in (stream_study_media([objects[0], objects[0]]), stream_study_media([to_bytes(no_series)])):
        _, error = chunks_until_error(stream)
        assert isinstance(error, MediaError)
        text = str(error).encode()
        assert not any(needle in text for needle in phi_needles())


def test_a_repeated_instance_is_refused() -> None:
    [ct] = ct_series(ALICE, n=1)
    _, error = chunks_until_error(stream_study_media([ct, ct]))
    assert isinstance(error, MediaError) and error.index == 1 and "already" in str(error)


def test_nothing_is_written_to_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """No plaintext PHI on disk: streaming opens no file at all (headers and DICOMDIR stay in memory)."""
    objects = ct_series(ALICE, n=2) + [sr_document(ALICE)]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"file opened: {args[:1]}")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(io, "open", refuse)
    monkeypatch.setattr(os, "open", refuse)
    archive = b"".join(bytes(c) for c in stream_study_media(objects))
    monkeypatch.undo()
    assert len(members(archive)) == 4


def test_streams_once_and_reports_progress() -> None:
    media = StudyMedia()
    objects = ct_series(ALICE, n=2)
    stream = media.stream(objects)
    with pytest.raises(RuntimeError):
        media.stream(objects)
    next(stream)
    assert not media.complete
    for _ in stream:
        pass
    assert media.complete and len(media.file_ids) == 2


def test_file_set_id_and_deterministic_layout() -> None:
    objects = ct_series(ALICE, n=2) + ct_series(BOB, n=1)
    first, media1 = stream_all(objects, file_set_id="SHARE", file_set_uid="1.2.3.4")
    second, media2 = stream_all(objects, file_set_id="SHARE", file_set_uid="1.2.3.4")
    assert dict(media1.file_ids) == dict(media2.file_ids)
    assert members(first)[DICOMDIR] == members(second)[DICOMDIR]
    assert dcmread(io.BytesIO(members(first)[DICOMDIR])).FileSetID == "SHARE"


@pytest.mark.parametrize(("syntax", "implicit", "little"), [
    ("1.2.840.10008.1.2", True, True),  # Implicit VR Little Endian
    ("1.2.840.10008.1.2.2", False, False),  # Explicit VR Big Endian (retired, still archived)
    ("1.2.840.10008.1.2.1.99", False, True),  # Deflated Explicit VR Little Endian
])
def test_other_transfer_syntaxes(syntax: str, implicit: bool, little: bool, tmp_path: Path) -> None:
    """Files are copied as they are; their records name their own transfer syntax."""
    objects = []
    for data in ct_series(BOB, n=2, size=16):
        ds = dcmread(io.BytesIO(data))
        ds.file_meta.TransferSyntaxUID = UID(syntax)
        buf = io.BytesIO()
        # force_encoding: pydicom converts between byte orders only when told to (pixel bytes are copied as they are).
        dcmwrite(buf, ds, implicit_vr=implicit, little_endian=little, force_encoding=True)
        assert buf.getvalue()[128:132] == b"DICM"
        objects.append(buf.getvalue())
    archive, media = stream_all(objects)
    check_medium(archive, media, objects, tmp_path)
    fs = FileSet(dcmread(tmp_path / DICOMDIR))
    assert {str(i.TransferSyntaxUID) for i in fs} == {syntax}


def test_an_empty_medium_is_a_valid_archive() -> None:
    archive, media = stream_all([])
    got = members(archive)
    assert list(got) == [DICOMDIR] and media.complete and dict(media.file_ids) == {}
    assert len(dcmread(io.BytesIO(got[DICOMDIR])).DirectoryRecordSequence) == 0


def test_options_are_checked_before_anything_is_sent() -> None:
    with pytest.raises(ValueError):
        StudyMedia(file_set_id="not valid")
    with pytest.raises(ValueError):
        StudyMedia(root="DICOMDIR")
