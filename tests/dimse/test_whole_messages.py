"""DIMSE messages leave in large writes and stored data sets as stored (ADR 0020), and nothing a peer receives changes.

The PDUs the archive encodes itself are compared byte for byte with those pynetdicom encodes fragment by
fragment, for any message size, any peer maximum PDU length and any grouping. Over real mutual TLS, a C-GET
peer that receives small PDUs gets each object's stored data set byte for byte, and a peer that accepted only
Implicit VR gets the same objects converted, as before.
"""

from __future__ import annotations

import io
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.dimse_messages import C_GET_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_GET, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

from dicomguard.core.retrieve import retrieve
from dicomguard.dimse import whole_messages
from dicomguard.dimse.whole_messages import StoredDataSet, encode_command_set, message_pdus
from tests.dicom_factory import ALICE, ct_series

CONTEXT_ID = 3


def _store_message(data_set: bytes) -> C_STORE_RQ:
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.7"
    primitive.Priority = 2
    primitive.DataSet = io.BytesIO(data_set)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return message


def _as_pynetdicom_sends(message: C_STORE_RQ, max_pdu: int) -> bytes:
    return b"".join(P_DATA_TF(pdata).encode() for pdata in message.encode_msg(CONTEXT_ID, max_pdu))


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 40_000), max_pdu=st.sampled_from([0, 16_384]) | st.integers(7, 5_000), group=st.integers(1, 70_000))
def test_pdus_are_byte_for_byte_those_pynetdicom_sends(size: int, max_pdu: int, group: int) -> None:
    data_set = bytes(range(256)) * (size // 256) + bytes(size % 256)
    message = _store_message(data_set)
    command = encode(message.command_set, True, True)
    assert command is not None
    groups = list(message_pdus(command, data_set, CONTEXT_ID, max_pdu, group_bytes=group))
    assert b"".join(groups) == _as_pynetdicom_sends(message, max_pdu)
    largest_pdu = 12 + (max(len(command), len(data_set)) if max_pdu == 0 else max_pdu - 6)
    assert all(len(g) < group + largest_pdu for g in groups)  # a group is handed over as soon as it is full


_UIDS = st.from_regex(r"[12](\.[1-9][0-9]{0,6}){1,8}", fullmatch=True)
_AE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"), min_size=1, max_size=16)


@settings(max_examples=80, deadline=None)
@given(message_id=st.integers(1, 65535), status=st.integers(0, 0xFFFF), sop=_UIDS, instance=_UIDS, origin=st.none() | _AE,
       remaining=st.none() | st.integers(0, 65535), comment=st.none() | st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF),
                                                                                max_size=64))
def test_command_sets_are_encoded_byte_for_byte_as_pydicom_encodes_them(
    message_id: int, status: int, sop: str, instance: str, origin: str | None, remaining: int | None, comment: str | None,
) -> None:
    assert whole_messages.install()  # the group length below is computed by the archive's encoder
    request = C_STORE()
    request.MessageID, request.AffectedSOPClassUID, request.AffectedSOPInstanceUID, request.Priority = message_id, sop, instance, 0
    request.MoveOriginatorApplicationEntityTitle = origin
    request.MoveOriginatorMessageID = message_id if origin else None
    request.DataSet = io.BytesIO(b"\x00" * 8)
    store_rsp = C_STORE()
    store_rsp.MessageIDBeingRespondedTo, store_rsp.AffectedSOPClassUID, store_rsp.AffectedSOPInstanceUID = message_id, sop, instance
    store_rsp.Status = status
    get_rsp = C_GET()
    get_rsp.MessageIDBeingRespondedTo, get_rsp.AffectedSOPClassUID, get_rsp.Status = message_id, sop, status
    get_rsp.NumberOfRemainingSuboperations = remaining
    get_rsp.NumberOfCompletedSuboperations = 0 if remaining is not None else None
    get_rsp.ErrorComment = comment  # any text: the Latin-1 ones go to pydicom itself
    for primitive, message in ((request, C_STORE_RQ()), (store_rsp, C_STORE_RSP()), (get_rsp, C_GET_RSP())):
        message.primitive_to_message(primitive)
        expected = encode(message.command_set, True, True)
        assert encode_command_set(message.command_set) == expected
        assert message.command_set.CommandGroupLength == len(expected) - 12  # the length of every element after it


def test_a_maximum_pdu_too_small_for_any_data_is_refused() -> None:
    with pytest.raises(ValueError):
        list(message_pdus(b"\x00" * 8, None, CONTEXT_ID, 6))


def test_a_stored_data_set_is_sent_as_stored_or_converted() -> None:
    (data,) = ct_series(ALICE, n=1)
    ds = dcmread(io.BytesIO(data))
    offset = len(data) - len(encode(ds, False, True))  # the data set follows the File Meta Information
    stored = StoredDataSet(data, offset, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian)
    assert stored.encoded_as(False, True, False) == data[offset:]
    assert stored.encoded_as(True, True, False) == encode(ds, True, True)  # a conversion: parsed and encoded again
    assert stored.SOPInstanceUID == ds.SOPInstanceUID and stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def _c_get(creds, port: int, study: str, syntaxes: list[str], max_pdu: int) -> list[tuple[str, bytes, Dataset]]:  # type: ignore[no-untyped-def]
    """A pynetdicom C-GET over mutual TLS; what arrived: (transfer syntax, data set bytes as received, data set)."""
    received: list[tuple[str, bytes, Dataset]] = []

    def on_store(event):  # type: ignore[no-untyped-def]
        received.append((str(event.context.transfer_syntax), event.request.DataSet.getvalue(), event.dataset))
        return 0x0000

    context = ssl.create_default_context(cafile=str(creds.ca))
    context.check_hostname = False
    context.load_cert_chain(str(creds.cert), str(creds.key))
    ae = AE(ae_title=creds.ae)
    ae.maximum_pdu_size = max_pdu
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, syntaxes)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMGUARD", tls_args=(context, None),
                         ext_neg=[build_role(CTImageStorage, scp_role=True)], evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study
        statuses = [s.Status for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet) if s]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000, statuses
    return received


@pytest.mark.slow
def test_c_get_peers_get_the_stored_data_sets_in_small_pdus_or_converted(archive, dimse, issue, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert whole_messages.install()
    asked: list[tuple[bool, bool, bool]] = []
    encoded_as = StoredDataSet.encoded_as
    monkeypatch.setattr(StoredDataSet, "encoded_as", lambda self, *how: asked.append(how) or encoded_as(self, *how))
    objects = ct_series(ALICE, n=3, size=128)  # 32 KB of pixels each: several 4 KB PDUs per object
    for data in objects:
        archive.operator.store.ingest(data, source="test")
    originals = {ds.SOPInstanceUID: ds for ds in (dcmread(io.BytesIO(d)) for d in objects)}
    stored = {}
    for uid in originals:
        kept = retrieve(archive.ctx, uid)
        stored[uid] = kept.data[kept.structure.dataset_offset:]
    study = next(iter(originals.values())).StudyInstanceUID
    creds = issue("GETPEER")

    as_stored = _c_get(creds, dimse.port, study, [ExplicitVRLittleEndian, ImplicitVRLittleEndian], max_pdu=4096)
    assert {ds.SOPInstanceUID: raw for _, raw, ds in as_stored} == stored
    assert {ts for ts, _, _ in as_stored} == {ExplicitVRLittleEndian}
    assert asked == [(False, True, False)] * 3  # sent as stored, never parsed

    converted = _c_get(creds, dimse.port, study, [ImplicitVRLittleEndian], max_pdu=16_384)
    assert {ts for ts, _, _ in converted} == {ImplicitVRLittleEndian}
    assert len(converted) == len(originals)
    for _, raw, ds in converted:
        original = originals[ds.SOPInstanceUID]
        assert ds.PixelData == original.PixelData and ds.PatientID == original.PatientID
        assert raw == encode(original, True, True)
