"""A received C-STORE data set becomes the Part 10 file pynetdicom would make of it, byte for byte (PS3.10 7.1)."""

from __future__ import annotations

import io
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse_messages import C_FIND_RQ, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.dsutils import create_file_meta, encode, encode_file_meta

from dicomguard.core.retrieve import retrieve
from dicomguard.dimse import store
from dicomguard.dimse.part10 import Part10Buffer, file_meta_information, received_part10
from tests.dicom_factory import ALICE, BOB, ct_series, write_files
from tests.dimse.conftest import dcmtk

_MESSAGES = {C_STORE: C_STORE_RQ, C_FIND: C_FIND_RQ}

_UIDS = st.from_regex(r"[12](\.[1-9][0-9]{0,6}){1,8}", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(sop_class=_UIDS, instance=_UIDS, syntax=st.sampled_from(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50",
                                                                  "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.201"]))
def test_file_meta_information_is_pynetdicoms_byte_for_byte(sop_class: str, instance: str, syntax: str) -> None:
    expected = encode_file_meta(create_file_meta(sop_class_uid=sop_class, sop_instance_uid=instance, transfer_syntax=syntax))
    assert file_meta_information(sop_class, instance, syntax) == expected


# -- received as Part 10 --------------------------------------------------------------------------------------


def _decoded(request_primitive, buffer_for) -> object:  # type: ignore[no-untyped-def]
    """The request as the DUL would deliver it: encoded into 4 KB P-DATA primitives, decoded into one message."""
    sent = _MESSAGES[type(request_primitive)]()
    sent.primitive_to_message(request_primitive)
    message = DIMSEMessage()
    message.data_set = buffer_for(message)
    done = [message.decode_msg(p) for p in sent.encode_msg(1, 4096)]
    assert done[-1] and not any(done[:-1])
    return message.message_to_primitive()


def _store_request(data: bytes, syntax: str = ExplicitVRLittleEndian) -> C_STORE:
    ds = dcmread(io.BytesIO(data))
    request = C_STORE()
    request.MessageID = 7
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = io.BytesIO(encode(ds, syntax == ImplicitVRLittleEndian, True))
    return request


def _joined(request: C_STORE, syntax: str) -> bytes:
    """What pynetdicom's ``encoded_dataset(include_meta=True)`` gives, for comparison."""
    meta = create_file_meta(sop_class_uid=request.AffectedSOPClassUID, sop_instance_uid=request.AffectedSOPInstanceUID,
                            transfer_syntax=syntax)
    return bytes(128) + b"DICM" + encode_file_meta(meta) + request.DataSet.getvalue()


def test_a_c_store_request_arrives_as_its_part10_file() -> None:
    data = ct_series(ALICE, n=1, size=64)[0]  # 8 KB of pixels: several fragments
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        sent = _store_request(data, syntax)
        expected = _joined(sent, syntax)
        received = _decoded(sent, lambda m, syntax=syntax: Part10Buffer(m, lambda _cid: syntax))
        assert received.DataSet.written is not None  # the header went in ahead of the first fragment
        event = SimpleNamespace(request=received, context=SimpleNamespace(transfer_syntax=syntax))
        assert received_part10(event) == expected
        # a plain buffer (an association not received as Part 10) is joined to the same bytes
        plain = _decoded(sent, lambda _m: io.BytesIO())
        assert received_part10(SimpleNamespace(request=plain, context=event.context)) == expected


def test_a_header_that_does_not_fit_the_request_is_written_again() -> None:
    """The header is written from the message's own command set and context; should the event name another
    context's syntax, the object is still given the File Meta Information the event names."""
    sent = _store_request(ct_series(BOB, n=1, size=16)[0])
    received = _decoded(sent, lambda m: Part10Buffer(m, lambda _cid: ImplicitVRLittleEndian))
    assert received.DataSet.written is not None
    event = SimpleNamespace(request=received, context=SimpleNamespace(transfer_syntax=ExplicitVRLittleEndian))
    assert received_part10(event) == _joined(sent, ExplicitVRLittleEndian)


def test_a_c_store_on_a_context_the_association_did_not_accept_keeps_a_plain_data_set() -> None:
    """No header is made up for a context the association did not accept (the request is refused later, as before)."""
    sent = _store_request(ct_series(BOB, n=1, size=16)[0])
    received = _decoded(sent, lambda m: Part10Buffer(m, lambda _cid: None))
    assert received.DataSet.written is None
    assert received.DataSet.getvalue() == sent.DataSet.getvalue()


def test_other_messages_keep_a_plain_data_set() -> None:
    """A C-FIND request's identifier is a data set, not a file: nothing is written ahead of it."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = "ALICE"
    request = C_FIND()
    request.MessageID = 3
    request.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    request.Priority = 2
    request.Identifier = io.BytesIO(encode(identifier, False, True))
    received = _decoded(request, lambda m: Part10Buffer(m, lambda _cid: ExplicitVRLittleEndian))
    assert received.Identifier.written is None
    assert received.Identifier.getvalue() == request.Identifier.getvalue()


def test_the_archive_receives_its_peers_objects_as_part10_files(archive, dimse, issue, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Over a real association (storescu, mutual TLS) the archive's C-STORE handler is given Part 10 buffers, and
    what it stores is what was sent."""
    seen: list[bool] = []
    original = store.received_part10
    monkeypatch.setattr(store, "received_part10",
                        lambda event: seen.append(getattr(event.request.DataSet, "written", None) is not None) or original(event))
    objects = ct_series(ALICE, n=3, size=64)
    files = write_files(tmp_path / "in", objects)
    creds = issue("PART10")
    proc = dcmtk("storescu", creds, dimse.port, files=files)
    assert proc.returncode == 0, proc.stderr
    assert seen == [True, True, True]
    for data in objects:
        uid = dcmread(io.BytesIO(data)).SOPInstanceUID
        kept = retrieve(archive.ctx, uid)
        stored = kept.data[kept.structure.dataset_offset:]
        assert len(stored) > 64 * 64 and data.endswith(stored)  # the data set as sent (storescu sends the file's own)
