"""A received PDU is read from its socket in as few calls as TLS allows, straight into its buffer, and its
P-DATA values are views of that buffer.

pynetdicom 3.0 reads each PDU in pieces of at most 4096 bytes (``AssociationSocket.recv``): for a 50 MB cine,
12,800 socket reads, each a TLS read of a quarter of a record, a new bytes object and a copy into the PDU's
buffer, all on the association's DUL thread. On two cores that thread shares the CPU with the peer sending, so
its work is the object's transfer time. Here the PDU's buffer is filled by ``recv_into`` (one TLS record, up
to 16 KB, per call; no intermediate object, PS3.8 9.3.1 framing unchanged).

The buffer is not sized from the peer's length field alone (a 6-byte header may announce 4 GB): it starts at
:data:`FIRST_BYTES` at most and doubles only when the peer has filled it, so memory follows what arrived, as
with pynetdicom's own reads. A connection closed early returns what arrived, as pynetdicom does.

A P-DATA-TF PDU (PS3.8 9.3.5) was then copied twice more by its decoding (the variable field, then each
presentation data value) and once more by the DIMSE layer (the value after its message control header). Its
values are now ``memoryview`` slices of the PDU's buffer (:func:`_decode_p_data_tf`), checked as pynetdicom checks
them; the DIMSE layer's slicing of a view copies nothing, and the message's buffer copies each fragment once.

Installed once per process by the DIMSE service on the pynetdicom 3.0 series (``dimse/pynetdicom_patch.py``).
"""

from __future__ import annotations

import struct

from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_items import PresentationDataValueItem
from pynetdicom.transport import AssociationSocket

from dicomguard.dimse.pynetdicom_patch import ProcessPatch
from dicomguard.dimse.sockets import acknowledge_at_once

FIRST_BYTES = 1024 * 1024
"""Bytes allocated before any has arrived (a PDU this size or smaller is read without growing its buffer)."""


def read_exactly(sock, nr_bytes: int) -> bytearray:  # type: ignore[no-untyped-def]
    """``nr_bytes`` from ``sock`` (fewer if the peer closed the connection first), read into one growing buffer.

    Before each PDU it reads, the connection is told to acknowledge at once (:func:`dimse.sockets.acknowledge_at_once`):
    a sender that keeps Nagle's algorithm on would otherwise hold the last segment of every object back until a
    delayed ACK."""
    acknowledge_at_once(sock)
    buffer = bytearray(min(nr_bytes, FIRST_BYTES))
    received = 0
    while received < nr_bytes:
        if received == len(buffer):  # the peer filled what was allocated: double it, never past the PDU
            grown = bytearray(min(nr_bytes, 2 * len(buffer)))
            grown[:received] = buffer
            buffer = grown
        with memoryview(buffer) as whole, whole[received:] as free:
            count = sock.recv_into(free)
        if not count:
            del buffer[received:]
            return buffer
        received += count
    return buffer


def _recv(self: AssociationSocket, nr_bytes: int) -> bytearray:
    return read_exactly(self.socket, nr_bytes)


_PDV_HEADER = struct.Struct(">IB")
"""A presentation data value item's length and presentation context ID (PS3.8 Table 9-23)."""


class MalformedPdu(ValueError):
    """A PDV item that runs past its PDU, or is too short to hold its header (pynetdicom: an assertion)."""


def _decode_p_data_tf(self: P_DATA_TF, bytestream: bytes | bytearray) -> None:
    """``P_DATA_TF.decode``: the same items, with values that are views of ``bytestream`` (the whole PDU).

    As in pynetdicom, an item shorter than its header or longer than what is left of the PDU raises (the DUL then
    signals Evt19, an invalid PDU, and aborts the association)."""
    view = memoryview(bytestream)
    items = []
    offset = 6
    while offset < len(view):
        try:
            item_length, context_id = _PDV_HEADER.unpack_from(view, offset)
        except struct.error:
            raise MalformedPdu(f"presentation data value item header cut at offset {offset}") from None
        value = view[offset + 5 : offset + 4 + item_length]
        if len(value) != item_length - 1:  # a zero length too: no room for the control header
            raise MalformedPdu(f"presentation data value item of {item_length} bytes at offset {offset} does not fit its PDU")
        item = PresentationDataValueItem()
        item.presentation_context_id = context_id
        item.presentation_data_value = value  # type: ignore[assignment]
        items.append(item)
        offset += 4 + item_length
    self.presentation_data_value_items = items


_PATCH = ProcessPatch("PDUs are read 4096 bytes at a time")


def install() -> bool:
    """Read every PDU of this process's associations with :func:`read_exactly` and decode P-DATA-TF PDUs into views;
    True if installed."""

    def fits() -> bool:
        return callable(getattr(AssociationSocket, "recv", None)) and "presentation_data_value_items" in P_DATA_TF().__dict__

    def apply() -> None:
        AssociationSocket.recv = _recv  # type: ignore[method-assign, assignment]
        P_DATA_TF.decode = _decode_p_data_tf  # type: ignore[method-assign, assignment]

    return _PATCH.install(fits, apply)
