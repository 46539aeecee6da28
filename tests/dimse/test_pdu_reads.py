"""PDUs are read straight into their buffer, whole, and memory follows what arrived (dimse/pdu_reads.py)."""

from __future__ import annotations

import os
import socket
import threading
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from dicomguard.dimse.pdu_reads import FIRST_BYTES, read_exactly


def _sent_in_pieces(payload: bytes, pieces: list[int], close: bool = True) -> socket.socket:
    """The receiving end of a socket pair whose other end sends ``payload`` in pieces of the given sizes."""
    receiver, sender = socket.socketpair()

    def send() -> None:
        view, sizes = memoryview(payload), iter(pieces)
        while view:
            size = next(sizes, len(view))
            sender.sendall(view[:size])
            view = view[size:]
        if close:
            sender.close()

    threading.Thread(target=send, daemon=True).start()
    receiver.settimeout(10)
    return receiver


@settings(max_examples=30, deadline=None)
@given(size=st.integers(min_value=1, max_value=3 * FIRST_BYTES + 5), pieces=st.lists(st.integers(1, 300_000), max_size=40))
def test_exactly_the_bytes_asked_for_in_any_pieces(size: int, pieces: list[int]) -> None:
    payload = os.urandom(size) + b"next PDU"
    receiver = _sent_in_pieces(payload, pieces)
    try:
        assert read_exactly(receiver, size) == payload[:size]  # across the buffer's growth, whatever the pieces
        assert read_exactly(receiver, 8) == b"next PDU"  # nothing of what follows was taken
    finally:
        receiver.close()


def test_a_connection_closed_early_returns_what_arrived() -> None:
    receiver = _sent_in_pieces(b"0123456789", [3, 3])
    try:
        assert read_exactly(receiver, 1000) == b"0123456789"
    finally:
        receiver.close()


def test_a_length_announced_but_not_sent_costs_no_memory() -> None:
    """A peer's 6-byte PDU header may announce 4 GB: the buffer grows with what arrives, never with the claim."""
    receiver = _sent_in_pieces(b"x" * 10, [10])
    tracemalloc.start()
    try:
        got = read_exactly(receiver, 0xFFFFFFFF)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        receiver.close()
    assert got == b"x" * 10
    assert peak < 2 * FIRST_BYTES


def test_the_archive_reads_its_associations_pdus_this_way() -> None:
    """The DIMSE service installs the reader for its process (pynetdicom 3.0 series)."""
    from pynetdicom.transport import AssociationSocket

    from dicomguard.dimse import pdu_reads

    assert pdu_reads.install()
    assert AssociationSocket.recv is pdu_reads._recv
