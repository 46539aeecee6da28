"""The plaintext listener in-process: allow-list decisions, fail-closed paths, spool handling."""

from __future__ import annotations

import io
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context

from dicomguard.gateway.config import GatewayConfig
from dicomguard.gateway.listener import Listener, purge_spool
from dicomguard.gateway.queue import Incoming
from dicomguard.gateway.status import GatewayStats
from tests.dicom_factory import ALICE, ct_series
from tests.gateway.peers import GATEWAY_AE

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


class StubAllowList:
    def __init__(self, pairs: set[tuple[str, str]], broken: bool = False) -> None:
        self.pairs = pairs
        self.broken = broken

    def is_allowed(self, ae: str, ip: str) -> bool:
        if self.broken:
            raise ConnectionError("database down")
        return (ae.strip(), ip) in self.pairs


class RecordingSink:
    def __init__(self, status: int = 0x0000, fail: bool = False) -> None:
        self.status = status
        self.fail = fail
        self.seen: list[tuple[str, object, Incoming]] = []

    def store(self, assoc: Association, source: Path | bytes, incoming: Incoming) -> int:
        if isinstance(source, Path):
            self.seen.append(("path", source, incoming))
            assert source.read_bytes()[128:132] == b"DICM"
        else:
            self.seen.append(("bytes", len(source), incoming))
        if self.fail:
            raise OSError(28, "No space left on device")
        return self.status

    def closed(self, assoc: Association) -> None:
        pass


@pytest.fixture
def start(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    listeners: list[Listener] = []

    def make(allow: StubAllowList, sink: RecordingSink, spool: Path | None) -> tuple[Listener, GatewayStats]:
        config = GatewayConfig(
            listen=("127.0.0.1", 0),  # bound by the listener itself: no race with other workers for a chosen port
            upstream=("127.0.0.1", 1), upstream_ae="UP", cert_file=Path("c"),
            key_file=Path("k"), ca_file=Path("a"), ae_title=GATEWAY_AE,
        )
        stats = GatewayStats()
        listener = Listener(config, allow, sink, stats, spool)  # type: ignore[arg-type]
        listener.start()
        listeners.append(listener)
        return listener, stats

    saved = (_config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir)
    try:
        yield make
    finally:
        for listener in listeners:
            listener.close()
        assert (_config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir) == saved  # process-wide settings restored


def _associate(port: int, calling: str = "CT1") -> Association:
    ae = AE(calling)
    ae.add_requested_context(CT, [EXPLICIT])
    ae.add_requested_context("1.2.840.10008.1.1")
    return ae.associate("127.0.0.1", port, ae_title=GATEWAY_AE)


def _answer_to_request(port: int, calling: str = "CT1") -> A_ASSOCIATE_RJ:
    """The PDU the listener answers an A-ASSOCIATE-RQ with, read off the wire (PS3.8 9.3.4).

    A pynetdicom requestor can report a fast rejection as an abort: its DUL thread may read the A-ASSOCIATE-RJ and
    close the transport (AE-4) before the calling thread checks that the transport is connected, which then
    aborts. Reading the answer from a plain socket asserts what the listener sent.
    """
    request = A_ASSOCIATE()
    request.application_context_name = "1.2.840.10008.3.1.1.1"
    request.calling_ae_title, request.called_ae_title = calling, GATEWAY_AE
    echo = build_context("1.2.840.10008.1.1")
    echo.context_id = 1
    request.presentation_context_definition_list = [echo]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16382
    request.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(request)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as peer:
        peer.sendall(pdu.encode())
        head = peer.recv(6, socket.MSG_WAITALL)
        assert head[:1] == b"\x03", f"expected an A-ASSOCIATE-RJ, got PDU type {head[:1]!r}"
        body = peer.recv(struct.unpack(">I", head[2:6])[0], socket.MSG_WAITALL)
    answer = A_ASSOCIATE_RJ()
    answer.decode(head + body)
    return answer


def _dataset() -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(ct_series(ALICE, n=1)[0]))


def test_disk_spool_is_private_and_emptied_after_each_store(start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "left-by-a-crash.dcm").write_bytes(b"plaintext")
    sink = RecordingSink()
    listener, stats = start(StubAllowList({("CT1", "127.0.0.1")}), sink, spool)
    assert list(spool.iterdir()) == []  # purged at start
    assert spool.stat().st_mode & 0o777 == 0o700
    assoc = _associate(listener.address[1])
    ds = _dataset()
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    kind, path, incoming = sink.seen[0]
    assert kind == "path" and Path(path).parent == spool  # type: ignore[arg-type]
    assert incoming == Incoming(CT, str(ds.SOPInstanceUID), EXPLICIT, "CT1", "127.0.0.1")
    assert list(spool.iterdir()) == []


def test_closing_removes_the_spool_folder(start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each run's spool (on /dev/shm by default) is removed at exit: none piles up, nothing received is left."""
    spool = tmp_path / "spool"
    listener, _ = start(StubAllowList({("CT1", "127.0.0.1")}), RecordingSink(), spool)
    assert spool.is_dir()
    (spool / "partial.dcm").write_bytes(b"plaintext of an interrupted store")
    listener.close()
    assert not spool.exists()


def test_memory_spool_never_touches_a_file(start) -> None:  # type: ignore[no-untyped-def]
    sink = RecordingSink()
    listener, _ = start(StubAllowList({("CT1", "127.0.0.1")}), sink, None)
    assoc = _associate(listener.address[1])
    assert assoc.send_c_store(_dataset()).Status == 0x0000
    assoc.release()
    assert sink.seen[0][0] == "bytes"


def test_each_association_negotiates_on_its_own_cheap_copy_of_the_contexts(start) -> None:  # type: ignore[no-untyped-def]
    from dicomguard.dimse.contexts import AcceptorContexts

    listener, _ = start(StubAllowList({("CT1", "127.0.0.1")}), RecordingSink(), None)
    templates = listener._server.contexts
    assert isinstance(templates, AcceptorContexts)
    before = [vars(c) | {"_transfer_syntax": list(c.transfer_syntax)} for c in templates]
    for _ in range(2):
        assoc = _associate(listener.address[1])
        assert assoc.is_established and assoc.send_c_store(_dataset()).Status == 0x0000
        assoc.release()
    assert [vars(c) | {"_transfer_syntax": list(c.transfer_syntax)} for c in templates] == before


def test_a_failing_store_is_never_acknowledged(start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    listener, _ = start(StubAllowList({("CT1", "127.0.0.1")}), RecordingSink(fail=True), tmp_path / "spool")
    assoc = _associate(listener.address[1])
    assert assoc.send_c_store(_dataset()).Status == 0xA700
    assoc.release()


def test_unknown_peer_is_rejected_permanently(start) -> None:  # type: ignore[no-untyped-def]
    listener, stats = start(StubAllowList({("CT1", "127.0.0.2")}), RecordingSink(), None)
    rj = _answer_to_request(listener.address[1])
    assert (rj.result, rj.source, rj.reason_diagnostic) == (0x01, 0x01, 0x03)
    assert stats.snapshot()["refused_associations"] == 1


def test_unreadable_allow_list_fails_closed(start) -> None:  # type: ignore[no-untyped-def]
    listener, _ = start(StubAllowList(set(), broken=True), RecordingSink(), None)
    assert _answer_to_request(listener.address[1]).result == 0x02  # transient: try again later


def test_deny_takes_effect_inside_a_running_association(start) -> None:  # type: ignore[no-untyped-def]
    allow = StubAllowList({("CT1", "127.0.0.1")})
    sink = RecordingSink()
    listener, stats = start(allow, sink, None)
    assoc = _associate(listener.address[1])
    assert assoc.send_c_echo().Status == 0x0000
    allow.pairs.clear()
    assert assoc.send_c_store(_dataset()).Status == 0x0124
    assert assoc.send_c_echo().Status == 0x0124
    assoc.release()
    assert sink.seen == [] and stats.snapshot()["refused_stores"] == 1


def test_purge_spool_only_removes_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a").write_bytes(b"x")
    assert purge_spool(tmp_path) == 1
    assert (tmp_path / "sub").is_dir()


def test_spool_defaults_to_the_memory_file_system_and_warns_on_a_disk(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """Secure by default: received plaintext is spooled on a tmpfs (or held in memory), never on the home's disk."""
    import dataclasses
    import logging

    from dicomguard.gateway.runner import filesystem_type, spool_folder

    config = GatewayConfig(listen=("127.0.0.1", 1), upstream=("127.0.0.1", 2), upstream_ae="UP", cert_file=Path("c"),
                           key_file=Path("k"), ca_file=Path("a"))
    default = spool_folder(config, tmp_path / "home")
    if filesystem_type(Path("/dev/shm")) == "tmpfs":
        assert default is not None and default.parent == Path("/dev/shm")
    else:
        assert default is None  # no memory file system: in-memory receive
    assert spool_folder(dataclasses.replace(config, spool="memory"), tmp_path / "home") is None
    assert spool_folder(config, tmp_path / "other-home") != default  # one spool per home (purged at start)
    with caplog.at_level(logging.WARNING, logger="dicomguard.gateway.runner"):
        on_disk = spool_folder(dataclasses.replace(config, spool_dir=tmp_path), tmp_path / "home")
    assert on_disk is not None and on_disk.parent == tmp_path
    if filesystem_type(tmp_path) not in ("tmpfs", "ramfs"):
        assert "not on a memory file system" in caplog.text
