"""A DIMSE message leaves in a few large writes, and a stored object is sent as stored (ADR 0020).

pynetdicom 3.0 splits each message into P-DATA fragments of at most the peer's
maximum PDU length (PS3.8 9.3.5) and hands every fragment to its DUL thread on
its own: a queue hand-off and a wake-up, a state-machine step, a PDU object, a
copy and a TLS write per fragment. A 0.5 MB CT slice sent to a peer that
receives 16 KB PDUs (dcmtk's default) is 33 of each; measured on a C-GET of 200
such slices, those hand-offs were most of the archive's CPU.

Here the association thread encodes the P-DATA-TF PDUs of a message itself,
byte for byte those pynetdicom would send (the same fragments, one PDV per PDU,
the same message control headers, PS3.8 9.3.5.1 and annex E.2), and hands them
to the DUL thread in groups of about :data:`GROUP_BYTES`: one hand-off, one
state-machine step (Sta6 + Evt9 -> DT-1 -> Sta6, as for a single fragment) and
one write per group. Memory grows by one group, never by a message.

:class:`StoredDataSet` lets a C-GET or C-MOVE sub-operation send a verified
object's data set as it is stored (the bytes after its File Meta Information,
PS3.10 7.1) instead of parsing it and encoding it again: pynetdicom's
``encode`` is given the stored bytes whenever the presentation context's
transfer syntax encodes them as stored; for any other (a peer that accepted only
a conversion) the object is parsed and encoded as before.

Installed once per process by the DIMSE service; if the pynetdicom installed is
not the 3.0 series this was written against, nothing is installed (logged once)
and messages are sent fragment by fragment as before.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from pynetdicom import association as _association
from pynetdicom import dimse as _dimse
from pynetdicom import evt
from pynetdicom import fsm as _fsm
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from dicomguard.dimse.pynetdicom_patch import ProcessPatch

GROUP_BYTES = 4 * 1024 * 1024
"""Bytes of encoded PDUs handed to the DUL thread at a time."""

_P_DATA_TF = 0x04
_PDV_HEADER = struct.Struct(">BBIIBB")
"""PDU type, reserved, PDU length | PDV item length, presentation context ID, message control header (PS3.8 9.3.5)."""
_PDV_OVERHEAD = 6
"""Bytes of a one-PDV PDU's variable field besides the fragment: item length (4), context ID (1), control header (1)."""
_COMMAND, _LAST = 0x01, 0x02


def message_pdus(command: bytes, data_set: bytes | memoryview | None, context_id: int, max_pdu: int,
                 group_bytes: int = GROUP_BYTES) -> Iterator[bytes]:
    """The P-DATA-TF PDUs of one message, encoded, in groups of about ``group_bytes``.

    ``max_pdu``: the peer's Maximum Length Received (PS3.8 D.1), the largest PDV list of one PDU; 0 means unlimited.
    The command set's fragments carry control header bit 0 set (PS3.8 E.2), the last fragment of each bit 1.
    """
    group = bytearray()
    for data, kind in ((command, _COMMAND), (data_set, 0)):
        if data is None or (kind == 0 and len(data) == 0):
            continue
        view = memoryview(data).cast("B")
        step = len(view) if max_pdu == 0 else max_pdu - _PDV_OVERHEAD
        if step <= 0:
            raise ValueError(f"a maximum PDU length of {max_pdu} leaves no room for data")
        for start in range(0, max(len(view), 1), step):
            fragment = view[start:start + step]
            control = kind | (_LAST if start + step >= len(view) else 0)
            group += _PDV_HEADER.pack(_P_DATA_TF, 0, len(fragment) + _PDV_OVERHEAD, len(fragment) + 2, context_id, control)
            group += fragment
            if len(group) >= group_bytes:
                yield bytes(group)
                group.clear()
    if group:
        yield bytes(group)


_ELEMENT = struct.Struct("<HHI")
"""An Implicit VR Little Endian element header: group, element, value length (PS3.5 7.1.3)."""
_NUMBERS = {"UL": struct.Struct("<I"), "US": struct.Struct("<H")}
_TEXT_PADDING = {"UI": b"\x00", "AE": b" ", "CS": b" ", "SH": b" ", "LO": b" ", "ST": b" "}


def _command_value(vr: str, value: object) -> bytes | None:
    """One command element's value as pydicom writes it, or None where this encoder does not know how."""
    if value is None or value == "":
        return b""
    number = _NUMBERS.get(vr)
    if number is not None:
        return number.pack(value) if type(value) is int else None
    padding = _TEXT_PADDING.get(vr)
    if padding is None or not isinstance(value, str) or not value.isascii():
        return None
    raw = value.encode("ascii")
    return raw + padding if len(raw) % 2 else raw


def encode_command_set(command_set: Dataset) -> bytes:
    """A command set in Implicit VR Little Endian (PS3.7 6.3.1, E.1), byte for byte pydicom's encoding.

    Command sets hold a few numbers, UIDs and AE titles: they are written here directly instead of through
    pydicom's writer, which costs about as much as sending a small message. Any element this encoder does not
    know (another VR, a multi-valued or non-ASCII value) hands the whole set to pydicom."""
    out = bytearray()
    for elem in command_set:
        value = _command_value(elem.VR, elem.value)
        if value is None:
            encoded = encode(command_set, True, True)
            if encoded is None:
                raise ValueError("the command set could not be encoded")
            return encoded
        out += _ELEMENT.pack(elem.tag >> 16, elem.tag & 0xFFFF, len(value))
        out += value
    return bytes(out)


def _set_command_group_length(self: Any) -> None:
    """``DIMSEMessage._set_command_group_length`` with the fast encoder: the length of every element after it."""
    del self.command_set.CommandGroupLength
    self.command_set.CommandGroupLength = len(encode_command_set(self.command_set))


class _EncodedPData(P_DATA):
    """P-DATA-TF PDUs already encoded: one DT-1 step of the DUL sends them all."""

    def __init__(self, encoded: bytes) -> None:
        super().__init__()
        self.encoded = encoded


def _p_data_tf(primitive: P_DATA | None = None) -> P_DATA_TF:
    """The state machine's P-DATA-TF for a primitive (DT-1, AR-7): encoded PDUs are written as they are."""
    if isinstance(primitive, _EncodedPData):
        pdu = P_DATA_TF()
        encoded = primitive.encoded
        pdu.encode = lambda: encoded  # type: ignore[method-assign]
        return pdu
    return P_DATA_TF(primitive)


def _send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    """``DIMSEServiceProvider.send_msg`` with the message's PDUs encoded here, a group per hand-off."""
    if primitive.MessageIDBeingRespondedTo is None:
        message = _dimse._RQ_TO_MESSAGE[primitive.__class__]()  # type: ignore[attr-defined]
    else:
        message = _dimse._RSP_TO_MESSAGE[primitive.__class__]()  # type: ignore[attr-defined]
    message.primitive_to_message(primitive)
    message.context_id = context_id
    evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": message})
    if getattr(message, "_data_set_path", None) is not None:  # a data set streamed from a file: pynetdicom's own way
        for pdata in message.encode_msg(context_id, self.maximum_pdu_size):
            self.dul.send_pdu(pdata)
        return
    command = encode_command_set(message.command_set)
    data_set = message.data_set.getvalue() if message.data_set is not None else None
    for encoded in message_pdus(command, data_set, context_id, self.maximum_pdu_size):
        self.dul.send_pdu(_EncodedPData(encoded))


class StoredDataSet(Dataset):  # type: ignore[misc]
    """A verified object for a C-STORE sub-operation: its identity for pynetdicom, its data set as stored.

    ``data``: the whole Part 10 object; ``offset``: where its data set starts (after the File Meta Information).
    Only for a transfer syntax that is not Deflated (the stored bytes are then the data set's encoding).
    """

    def __init__(self, data: bytes, offset: int, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        self.file_meta = FileMetaDataset()
        self.file_meta.TransferSyntaxUID = transfer_syntax
        self._stored = (data, offset)

    def encoded_as(self, implicit_vr: bool, little_endian: bool, deflated: bool) -> bytes:
        """The data set in the encoding asked: the stored bytes if they are in it, else parsed and encoded again."""
        data, offset = self._stored
        syntax = UID(self.file_meta.TransferSyntaxUID)
        if (syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated) == (implicit_vr, little_endian, deflated):
            return data[offset:]
        converted = encode(dcmread(io.BytesIO(data)), implicit_vr, little_endian, deflated)
        if converted is None:
            raise ValueError("the stored object cannot be encoded in the transfer syntax of the presentation context")
        return converted


def _encode_stored_as_is(original: Callable[..., bytes | None]) -> Callable[..., bytes | None]:
    def encode_data_set(ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> bytes | None:
        if isinstance(ds, StoredDataSet):
            return ds.encoded_as(is_implicit_vr, is_little_endian, deflated)
        return original(ds, is_implicit_vr, is_little_endian, deflated)

    return encode_data_set


_PATCH = ProcessPatch("DIMSE messages are sent fragment by fragment")


def install() -> bool:
    """Send every message of this process's associations in groups, and stored data sets as stored; True if installed."""

    def fits() -> bool:
        return (getattr(_fsm, "P_DATA_TF", None) is P_DATA_TF and getattr(_association, "encode", None) is encode
                and hasattr(_dimse, "_RSP_TO_MESSAGE") and hasattr(DIMSEMessage, "_set_command_group_length"))

    def apply() -> None:
        _fsm.P_DATA_TF = _p_data_tf  # type: ignore[attr-defined, assignment]
        _association.encode = _encode_stored_as_is(encode)  # type: ignore[attr-defined, assignment]
        DIMSEServiceProvider.send_msg = _send_msg  # type: ignore[method-assign]
        DIMSEMessage._set_command_group_length = _set_command_group_length  # type: ignore[method-assign]

    return _PATCH.install(fits, apply)
