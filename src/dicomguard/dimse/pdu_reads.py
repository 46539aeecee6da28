"""A received PDU is read from its socket in as few calls as TLS allows, straight into its buffer.

pynetdicom 3.0 reads each PDU in pieces of at most 4096 bytes (``AssociationSocket.recv``): for a 50 MB cine,
12,800 socket reads, each a TLS read of a quarter of a record, a new bytes object and a copy into the PDU's
buffer, all on the association's DUL thread. On two cores that thread shares the CPU with the peer sending, so
its work is the object's transfer time. Here the PDU's buffer is filled by ``recv_into`` (one TLS record, up
to 16 KB, per call; no intermediate object, PS3.8 9.3.1 framing unchanged).

The buffer is not sized from the peer's length field alone (a 6-byte header may announce 4 GB): it starts at
:data:`FIRST_BYTES` at most and doubles only when the peer has filled it, so memory follows what arrived, as
with pynetdicom's own reads. A connection closed early returns what arrived, as pynetdicom does.

Installed once per process by the DIMSE service on the pynetdicom 3.0 series (``dimse/pynetdicom_patch.py``).
"""

from __future__ import annotations

from pynetdicom.transport import AssociationSocket

from dicomguard.dimse.pynetdicom_patch import ProcessPatch

FIRST_BYTES = 1024 * 1024
"""Bytes allocated before any has arrived (a PDU this size or smaller is read without growing its buffer)."""


def read_exactly(sock, nr_bytes: int) -> bytearray:  # type: ignore[no-untyped-def]
    """``nr_bytes`` from ``sock`` (fewer if the peer closed the connection first), read into one growing buffer."""
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


_PATCH = ProcessPatch("PDUs are read 4096 bytes at a time")


def install() -> bool:
    """Read every PDU of this process's associations with :func:`read_exactly`; True if installed."""

    def fits() -> bool:
        return callable(getattr(AssociationSocket, "recv", None))

    def apply() -> None:
        AssociationSocket.recv = _recv  # type: ignore[method-assign, assignment]

    return _PATCH.install(fits, apply)
