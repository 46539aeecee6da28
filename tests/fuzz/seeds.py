"""Writes the seed corpus ``tests/fuzz/corpus/<target>/`` (run ``python -m tests.fuzz.seeds``; the output is committed).

Seeds are small valid inputs of every shape the parsers handle (so mutation
starts deep inside them) plus a few known-hostile ones. Files named
``regression-*`` are inputs that once broke a parser; they are written by hand
(or copied from a fuzzer's finding) and never regenerated, so this script
leaves them alone. Generated seeds are deterministic: running the script twice
gives the same files.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from dicomguard.audit.codes import Code, EventIds, EventTypes, MediaTypes, ObjectIdTypes, Roles
from dicomguard.audit.message import AuditMessage, ObjectDescription, Participant, ParticipantObject, SopClassRef, to_xml
from dicomguard.audit.syslog import format_message, frame
from tests.fuzz import dicom_gen as g
from tests.fuzz.targets import BOUNDARY

CORPUS = Path(__file__).resolve().parent / "corpus"


def _dicom() -> dict[str, bytes]:
    uid = g.Element(0x00080018, b"UI", b"1.2.3.4.5\0")
    name = g.Element(0x00100010, b"PN", b"FUZZ^SEED")
    rows = g.Element(0x00280010, b"US", b"\x04\x00")
    pixels = g.Element(0x7FE00010, b"OW", bytes(range(32)))
    item = g.Item((g.Element(0x00081150, b"UI", b"1.2.3\0"), g.Element(0x00081155, b"UI", b"1.2.3.4\0")), undefined=False)
    nested = g.Sequence(0x00081115, b"SQ", (
        g.Item((g.Sequence(0x00081199, b"SQ", (item,), undefined=True),), undefined=True),
        item,
    ), undefined=False)
    base = (g.Element(0x00080016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"), uid, name, rows)
    out = {
        "explicit-le-pixels.dcm": g.encode((*base, pixels), g.EXPLICIT_LE),
        "implicit-le-pixels.dcm": g.encode((*base, pixels), g.IMPLICIT_LE),
        "explicit-be-pixels.dcm": g.encode((*base, pixels), g.EXPLICIT_BE),
        "deflated.dcm": g.encode((*base, nested, pixels), g.DEFLATED_LE),
        "nested-sequences.dcm": g.encode((*base, nested), g.EXPLICIT_LE),
        "nested-sequences-implicit.dcm": g.encode((*base, nested), g.IMPLICIT_LE),
        "encapsulated-fragments.dcm": g.encode(
            (*base, g.Encapsulated(0x7FE00010, b"OB", (b"", b"\xff\xd8\xff\xe0" + bytes(12), b"\xff\xd9\0"))), g.JPEG_BASELINE),
        "undefined-length-un.dcm": g.encode((*base, g.Sequence(0x00091020, b"UN", (item,), undefined=True)), g.EXPLICIT_LE),
        "float-pixel-data.dcm": g.encode((*base, g.Element(0x7FE00008, b"OF", bytes(16))), g.EXPLICIT_LE),
        "labelled-explicit-written-implicit.dcm": g.part10(g.encode_nodes(base, implicit=True), g.EXPLICIT_LE),
    }
    out["pydicom-written.dcm"] = _pydicom_written()
    return out


def _pydicom_written() -> bytes:
    """An object as pydicom writes it (fixed UIDs, so the seed is the same every time), 4 x 4 pixels."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = g.CT_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"
    ds.PatientName, ds.PatientID, ds.Modality = "FUZZ^SEED", "FUZZSEED1", "CT"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = g.CT_IMAGE, "1.2.826.0.1.3680043.8.498.4"
    ds.ReferencedImageSequence = [ref]
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel, ds.PhotometricInterpretation = 15, 0, 1, "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return buf.getvalue()


def _multipart() -> dict[str, bytes]:
    from tests.fuzz.dicom_gen import EXPLICIT_LE, Element, encode

    dicom = encode((Element(0x00080018, b"UI", b"1.2.3.4.5\0"), Element(0x7FE00010, b"OW", bytes(8))), EXPLICIT_LE)
    d = b"--" + BOUNDARY.encode()

    def part(body: bytes, headers: bytes = b"Content-Type: application/dicom\r\n") -> bytes:
        return b"\r\n" + d + b"\r\n" + headers + b"\r\n" + body

    return {
        "one-dicom-part.bin": part(dicom)[2:] + b"\r\n" + d + b"--\r\n",
        "two-parts-preamble-epilogue.bin": b"preamble text" + part(dicom) + part(b"second", b"Content-Type: text/plain\r\nX-A: b\r\n")
        + b"\r\n" + d + b"-- epilogue\r\n",
        "part-without-headers.bin": part(b"bare", b"")[2:] + b"\r\n" + d + b"--",
        "transport-padding.bin": d + b" \t \r\nContent-Type: application/dicom\r\n\r\nx\r\n" + d + b"--\r\n",
        "empty-part.bin": part(b"")[2:] + b"\r\n" + d + b"--\r\n",
        "delimiter-lookalike-in-content.bin": part(b"\r\n--dgfuzz-boundar\r\n" + d[:-1])[2:] + b"\r\n" + d + b"--\r\n",
        "no-closing-delimiter.bin": part(dicom)[2:],
    }


def _audit_message() -> AuditMessage:
    return AuditMessage(
        event_id=EventIds.INSTANCES_TRANSFERRED, time=datetime(2026, 2, 28, 23, 59, 59, 5, tzinfo=UTC), outcome=4,
        participants=(
            Participant("CT1", True, (Roles.SOURCE,), "AETITLES=CT1", "CT scanner", "10.0.0.5", 2),
            Participant("DICOMGUARD", False, (Roles.DESTINATION, Roles.APPLICATION), None, None, "pacs.example.org", 1),
            Participant("file://pacs", False, (Roles.DESTINATION_MEDIA,), media_type=MediaTypes.URI),
        ),
        source_id="DICOMGUARD", action="C", event_types=(EventTypes.USE_OF_RESTRICTED_FUNCTION,),
        outcome_description="partial & <escaped>", site_id="Hospital",
        source_types=(Code("4", "", ""), Code("5", "RFC-3881", "Security Server")),
        objects=(
            ParticipantObject("1.2.3", ObjectIdTypes.STUDY_INSTANCE_UID, type_code=2, role=3, lifecycle=6, sensitivity="N",
                              descriptions=(ObjectDescription(("1.2.9",), ("ACC1",),
                                                              (SopClassRef(g.CT_IMAGE, 2, ("1.2.3.1",)), SopClassRef(None, 0)),
                                                              ("1.2.3",), True, False),)),
            ParticipantObject("PID1^^^HOSP", ObjectIdTypes.PATIENT_NUMBER, name="PID1", type_code=1, role=1,
                              details=(("Alert Description", b"xyz"), ("empty", b""))),
            ParticipantObject("1.2.840.10008.5.1.4.1.2.2.1", ObjectIdTypes.SOP_CLASS_UID, query=b"\x08\x00R\x00", type_code=2, role=24),
        ),
    )


MINIMAL_XML = (b'<AuditMessage><EventIdentification EventDateTime="2026-01-01T00:00:00Z" EventOutcomeIndicator="0">'
               b'<EventID csd-code="110100" codeSystemName="DCM" originalText="Application Activity"/></EventIdentification>'
               b'<ActiveParticipant UserID="x" UserIsRequestor="false"/><AuditSourceIdentification AuditSourceID="s"/></AuditMessage>')


def _syslog_line(xml: bytes, seq: int | None = 7) -> bytes:
    return format_message(xml, time=datetime(2026, 1, 5, 10, 0, tzinfo=UTC), hostname="otherpacs", procid="42", outcome=0, seq=seq)


def _audit() -> dict[str, bytes]:
    full = to_xml(_audit_message())
    return {
        "every-part-of-the-grammar.xml": full,
        "minimal.xml": MINIMAL_XML,
        "pretty-with-comment-and-pi.xml": b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- c -->\n'
        + MINIMAL_XML.replace(b"><", b">\n  <").replace(b"<ActiveParticipant", b"<?pi x?><ActiveParticipant"),
        "utf16.xml": b'<?xml version="1.0" encoding="UTF-16"?>'.decode().encode("utf-16") + MINIMAL_XML.decode().encode("utf-16")[2:],
        "doctype-entity.xml": b"<!DOCTYPE x [<!ENTITY e 'boom'>]>" + MINIMAL_XML.replace(b'UserID="x"', b'UserID="&e;"'),
        "collector-file.log": (_syslog_line(full) + b"\n" + MINIMAL_XML + b"\n\nnot a syslog line\n"
                               + _syslog_line(MINIMAL_XML, None) + b"\n"),
        "two-messages-one-file.xml": MINIMAL_XML + b"\n" + MINIMAL_XML + b"\n",
    }


def _syslog_frames() -> dict[str, bytes]:
    full, minimal = to_xml(_audit_message()), MINIMAL_XML
    return {
        "two-frames.bin": frame(_syslog_line(full)) + frame(_syslog_line(minimal, 2**31 - 1)),
        "partial-second-frame.bin": frame(_syslog_line(minimal)) + frame(_syslog_line(minimal))[:40],
        "zero-length-prefix.bin": b"0 " + frame(_syslog_line(minimal)),
        "length-over-limit.bin": b"99999999 <85>1 ",
    }


def _syslog_messages() -> dict[str, bytes]:
    return {
        "audit-message.txt": _syslog_line(MINIMAL_XML),
        "no-structured-data.txt": _syslog_line(MINIMAL_XML, None),
        "escaped-structured-data.txt": b'<13>1 - host app - - [a x="q\\"]\\\\" y="2"][meta sequenceId="5"] msg',
        "empty-msg.txt": b"<0>1 2026-01-01T00:00:00Z h a p m -",
    }


def _qido() -> dict[str, bytes]:
    return {
        "study-search.txt": b"PatientName=DOE*&StudyDate=20240101-20240131&limit=10&offset=0&fuzzymatching=true"
        b"&includefield=00100020,StudyDescription,all",
        "uid-lists.txt": b"StudyInstanceUID=1.2.3,1.2.4&SeriesInstanceUID=1.2.3.4%5C1.2.3.5&SOPInstanceUID=1.2.840.10008.1",
        "instance-level.txt": b"Modality=CT,MR&SeriesNumber=%2B3&InstanceNumber=-1&StudyTime=101500.123-&0020000D=1.2.3",
        "universal-matching.txt": b"PatientID=&AccessionNumber=&ModalitiesInStudy=C%3FT*",
        "duplicates-and-unknowns.txt": b"limit=1&limit=2&NoSuchKeyword=1&PatientID=%00&StudyDate=2024",
    }


def write(corpus: Path = CORPUS) -> None:
    for target, seeds in {
        "dicom_structure": _dicom(), "multipart": _multipart(), "audit_xml": _audit(),
        "syslog_frames": _syslog_frames(), "syslog_message": _syslog_messages(), "qido_params": _qido(),
    }.items():
        folder = corpus / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(data)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS)
