"""PDUs are read straight into their buffer, whole, and memory follows what arrived; P-DATA values are views
that decode as pynetdicom decodes them (dimse/pdu_reads.py)."""

from __future__ import annotations

import os
import socket
import threading
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom.pdu import P_DATA_TF, PDU
from pynetdicom.pdu_primitives import P_DATA

from dicomguard.dimse.pdu_reads import FIRST_BYTES, _decode_p_data_tf, read_exactly


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
    assert P_DATA_TF.decode is _decode_p_data_tf


# -- P-DATA-TF values as views ----------------------------------------------------------------------------


def _items(pdu: P_DATA_TF) -> list[tuple[int, bytes]]:
    return [(i.presentation_context_id, bytes(i.presentation_data_value)) for i in pdu.presentation_data_value_items]


def _decoded(decode, raw: bytes) -> list[tuple[int, bytes]] | str:  # type: ignore[no-untyped-def]
    pdu = P_DATA_TF()
    try:
        decode(pdu, bytearray(raw))
    except Exception:  # noqa: BLE001 - either way the DUL signals an invalid PDU (Evt19)
        return "invalid"
    return _items(pdu)


_PDVS = st.lists(st.tuples(st.integers(1, 255), st.binary(min_size=1, max_size=3000)), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(pdvs=_PDVS, cut=st.integers(min_value=0, max_value=20_000))
def test_p_data_tf_pdus_decode_as_pynetdicom_decodes_them(pdvs: list[tuple[int, bytes]], cut: int) -> None:
    """Whole or cut anywhere (the DUL hands over what the PDU length said): the same items, or invalid alike."""
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[context, value] for context, value in pdvs]
    raw = P_DATA_TF(primitive).encode()
    assert _decoded(_decode_p_data_tf, raw) == _decoded(PDU.decode, raw) == list(pdvs)
    truncated = raw[: 6 + cut % (len(raw) - 5)]
    assert _decoded(_decode_p_data_tf, truncated) == _decoded(PDU.decode, truncated)


def test_a_zero_length_item_is_invalid_as_in_pynetdicom() -> None:
    raw = bytes([0x04, 0]) + (4).to_bytes(4, "big") + (0).to_bytes(4, "big")
    assert _decoded(_decode_p_data_tf, raw) == _decoded(PDU.decode, raw) == "invalid"


def test_the_values_are_views_of_the_pdu() -> None:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[1, b"\x02" + b"x" * 100_000]]
    raw = bytearray(P_DATA_TF(primitive).encode())
    pdu = P_DATA_TF()
    _decode_p_data_tf(pdu, raw)
    value = pdu.presentation_data_value_items[0].presentation_data_value
    assert isinstance(value, memoryview) and value.obj is raw  # no copy of the fragment
    assert bytes(pdu.to_primitive().presentation_data_value_list[0][1]) == b"\x02" + b"x" * 100_000


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = socket.create_connection(server.getsockname())
        receiver, _ = server.accept()
    return receiver, sender


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
def test_each_pdu_read_leaves_the_connection_acknowledging_at_once() -> None:
    """A sender with Nagle on waits for the ACK of what it sent before it sends an object's last short segment;
    the receiver must not be delaying that ACK (``dimse.sockets.acknowledge_at_once``)."""
    receiver, sender = _tcp_pair()
    try:
        for _ in range(3):
            receiver.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)  # what answering each object leads to
            assert receiver.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 0  # delayed ACKs: the kernel's mode
            sender.sendall(b"0123456789")
            assert read_exactly(receiver, 10) == b"0123456789"
            assert receiver.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1
    finally:
        receiver.close()
        sender.close()


def test_a_socket_that_is_not_tcp_reads_as_before() -> None:
    receiver = _sent_in_pieces(b"abc", [1, 1, 1])
    try:
        assert read_exactly(receiver, 3) == b"abc"  # the option is refused by a Unix socket, and ignored
    finally:
        receiver.close()
