"""The HL7 v2 context feed end to end: a real TLS MLLP client with a registered device certificate, the listener,
the detection service's merge, the sealed context, the records, and the detector in ``serve`` picking it up."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from dicomguard.app.detection.engine import DetectionEngine
from dicomguard.app.detection.hl7_listener import NOT_PERMITTED, Hl7Listener
from dicomguard.core.access import Principal
from dicomguard.detect.context import context_from_texts
from dicomguard.detect.explain import ORDERING_USER
from dicomguard.detect.hl7v2 import MAX_MESSAGE_BYTES, ack_fields, frame
from dicomguard.index.db import write_session
from dicomguard.pki.devices import DeviceRegistry
from dicomguard.pki.tls import client_context
from tests.audit.conftest import entries
from tests.detect_hl7 import messages as M
from tests.detect_hl7.messages import PHI


@pytest.fixture
def listener(archive) -> Iterator[Hl7Listener]:  # type: ignore[no-untyped-def]
    server = Hl7Listener(archive.ctx, archive.services, "127.0.0.1", 0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def tls_for(issue, ae: str, operations: tuple[str, ...] = ("context-feed",)) -> ssl.SSLContext:  # type: ignore[no-untyped-def]
    creds = issue(ae, operations)
    return client_context(creds.ca.read_bytes(), creds.cert.read_bytes(), creds.key.read_bytes(), check_hostname=False)


class Client:
    """An interface engine's MLLP sender: one message, then wait for its ACK (original mode)."""

    def __init__(self, port: int, tls: ssl.SSLContext) -> None:
        self.sock = tls.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
        self.buf = b""

    def read_ack(self) -> dict[str, str]:
        while b"\x1c\r" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        block, self.buf = self.buf.split(b"\x1c\r", 1)
        assert block.startswith(b"\x0b")
        return ack_fields(block[1:])

    def send(self, message: bytes) -> dict[str, str]:
        self.sock.sendall(frame(message))
        return self.read_ack()

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def context(archive):  # type: ignore[no-untyped-def]
    files = archive.operator.detection.context_files()
    return context_from_texts(files.get("users", ""), files.get("patients", ""), files.get("orders", ""))


def feed_records(archive) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.message.outcome_description or "" for e in entries(archive)
            if "detection context hl7:" in (e.message.outcome_description or "")]


def test_adt_and_orders_are_applied_and_acknowledged_after_commit(archive, issue, listener) -> None:
    client = Client(listener.port, tls_for(issue, "ENGINE1"))
    try:
        assert client.send(M.adt(vip="Y")) == {"code": "AA", "control_id": "MSG0001", "text": ""}
        ctx = context(archive)  # committed before the AA
        assert ctx.patients["MRN-0001"].vip and {o.ordering_user for o in ctx.orders} == {"asmith", "bjones", "cdoe"}
        assert client.send(M.orm())["code"] == "AA"
        assert client.send(M.omi())["code"] == "AA"
        assert client.send(M.mfn())["code"] == "AA"
        # a malformed message: AE with the segment and field, and the connection goes on
        bad = client.send(M.adt(control="MSG0005", pid3=""))
        assert (bad["code"], bad["control_id"], bad["text"]) == ("AE", "MSG0005", "PID-3 missing")
        refused = client.send(M.adt(control="MSG0006").replace(b"ADT^A08^ADT_A01", b"ORU^R01^ORU_R01"))
        assert (refused["code"], refused["text"]) == ("AR", "message type ORU^R01 not accepted")
        assert client.send(M.orm("CA", control="MSG0007"))["code"] == "AA"  # the next message is applied
    finally:
        client.close()
    ctx = context(archive)
    assert "ACC-100" not in {o.accession for o in ctx.orders}
    assert {o.accession for o in ctx.orders if o.study_uid} == {"ACC-200", "ACC-201"}
    assert ctx.users["eking"].department == "Neuroradiology" and set(ctx.patients) == {"MRN-0001"}
    # one recorded action per applied message, none for the refused ones, no PHI in the records
    records = feed_records(archive)
    assert records == ["detection context hl7:ADT^A08 imported: 4 rows", "detection context hl7:ORM^O01 imported: 1 rows",
                       "detection context hl7:OMI^O23 imported: 2 rows", "detection context hl7:MFN^M02 imported: 1 rows",
                       "detection context hl7:ORM^O01 imported: 1 rows"]
    assert (listener.stats.applied, listener.stats.errors, listener.stats.rejected) == (5, 1, 1)
    for e in entries(archive):
        assert not any(value.encode() in e.xml for value in PHI)


def test_messages_arriving_together_are_one_transaction_each_acknowledged(archive, issue, listener) -> None:
    client = Client(listener.port, tls_for(issue, "ENGINE1"))
    try:
        client.sock.sendall(frame(M.adt()) + frame(M.orm()) + frame(M.adt(control="MSG0009", pid3="")))
        acks = [client.read_ack() for _ in range(3)]
    finally:
        client.close()
    assert [(a["code"], a["control_id"]) for a in acks] == [("AA", "MSG0001"), ("AA", "MSG0002"), ("AE", "MSG0009")]
    assert feed_records(archive) == ["detection context hl7:ADT^A08+ORM^O01 imported: 5 rows"]


def test_a_registered_device_not_allowed_to_feed_gets_AR_and_nothing_changes(archive, issue, listener) -> None:
    client = Client(listener.port, tls_for(issue, "MODALITY1", ("echo", "store", "query", "retrieve", "audit-relay")))
    try:
        replies = [client.send(M.adt(control=f"MSG{i}")) for i in range(3)]
    finally:
        client.close()
    assert {(r["code"], r["text"]) for r in replies} == {("AR", NOT_PERMITTED)}
    assert archive.operator.detection.context_files() == {}
    refusals = [e for e in entries(archive) if "context-feed" in (e.message.outcome_description or "")]
    assert len(refusals) == 3  # each refusal is a recorded Security Alert


def test_refused_senders_are_closed_after_the_limit(archive, issue, listener) -> None:
    from dicomguard.app.detection.hl7_listener import MAX_REFUSED

    client = Client(listener.port, tls_for(issue, "MODALITY2", ("store",)))
    try:
        for i in range(MAX_REFUSED):
            assert client.send(M.adt(control=f"MSG{i}"))["code"] == "AR"
        assert client.closed()
    finally:
        client.close()


def test_peers_without_a_registered_certificate_are_refused(archive, issue, listener) -> None:
    plain = client_context((archive.home / "tls" / "ca.pem").read_bytes(), check_hostname=False)  # no client certificate
    with pytest.raises(OSError):
        c = Client(listener.port, plain)
        c.send(M.adt())
    revoked_tls = tls_for(issue, "ENGINE9")
    with write_session(archive.ctx.engine) as s:  # revoked behind the test's back: no administration record
        DeviceRegistry.revoke(s, "ENGINE9")
    c = Client(listener.port, revoked_tls)
    try:
        with pytest.raises(OSError):
            c.send(M.adt())
    finally:
        c.close()
    deadline = time.monotonic() + 5
    while listener.stats.refused_peers < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener.stats.refused_peers == 1 and listener.stats.applied == 0
    assert archive.operator.detection.context_files() == {}
    assert any("HL7 listener" in (e.message.outcome_description or "") for e in entries(archive))  # Node Authentication


def test_oversize_and_broken_frames_close_and_apply_nothing(archive, issue, listener) -> None:
    tls = tls_for(issue, "ENGINE1")
    client = Client(listener.port, tls)
    try:
        with pytest.raises(OSError):
            client.sock.sendall(b"\x0b" + M.adt() + b"NTE|" + b"x" * MAX_MESSAGE_BYTES)
            client.read_ack()
    except OSError:
        pass
    finally:
        client.close()
    for stream in (b"junk before a frame" + frame(M.adt()), b"\x0b" + M.adt() + b"\x0b" + frame(M.orm())):
        client = Client(listener.port, tls)
        try:
            client.sock.sendall(stream)
            assert client.closed()
        finally:
            client.close()
    # closed mid-frame: the unfinished message is not applied
    client = Client(listener.port, tls)
    client.sock.sendall(b"\x0b" + M.adt()[:-10])
    client.close()
    deadline = time.monotonic() + 5
    while listener.stats.framing_errors < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert listener.stats.framing_errors == 3 and listener.stats.applied == 0
    assert archive.operator.detection.context_files() == {}
    # the listener still serves
    client = Client(listener.port, tls)
    try:
        assert client.send(M.adt())["code"] == "AA"
    finally:
        client.close()


def test_the_connection_limit(archive, issue) -> None:
    server = Hl7Listener(archive.ctx, archive.services, "127.0.0.1", 0, max_connections=1)
    server.start()
    tls = tls_for(issue, "ENGINE1")
    try:
        first = Client(server.port, tls)
        assert first.send(M.adt())["code"] == "AA"
        with pytest.raises(OSError):
            second = Client(server.port, tls)
            second.send(M.orm())
        first.close()
        time.sleep(0.2)
        third = Client(server.port, tls)
        assert third.send(M.orm())["code"] == "AA"
        third.close()
    finally:
        server.stop()
    assert server.stats.busy == 1


def test_the_detector_in_serve_picks_up_fed_context_without_relearning(archive, issue, tmp_path) -> None:
    users = tmp_path / "users.csv"
    users.write_text("user_id,name,role,department,home_address\nasmith,Smith^Ann,radiologist,RADIOLOGY,\n")
    archive.operator.detection.import_context("users", users)
    engine = DetectionEngine(archive.services(Principal.operator("detector")))
    assert engine.build()
    engine.CONTEXT_CHECK_S = 0.0  # type: ignore[misc]
    now = datetime.now(UTC)
    stamp = (now - timedelta(hours=1)).strftime("%Y%m%d%H%M%S+0000")
    assert engine.detector.explainer.explain("asmith", "MRN-0001", now) is None
    explainer = engine.detector.explainer
    explainer.colleagues = {"asmith": frozenset({"bjones"})}  # something learned, to carry over
    device = archive.services(Principal.operator("feed"))  # the operator may feed too (operator-all)
    [outcome] = device.detection.apply_hl7([M.orm(ordered=stamp)])
    assert outcome.ack == "AA"
    engine.poll()
    assert engine.detector.explainer is not explainer
    assert engine.detector.explainer.explain("asmith", "MRN-0001", now) == ORDERING_USER
    assert engine.detector.explainer.colleagues == {"asmith": frozenset({"bjones"})}
    assert "MRN-0001" in engine.detector.context.orders_by_patient
    current = engine.detector.explainer
    engine.poll()  # nothing changed: nothing reloaded
    assert engine.detector.explainer is current


def test_concurrent_feeds_lose_no_update(archive, issue, listener) -> None:
    """Two connections upserting at once: each merge reads the stored document in its own locked transaction."""
    import threading

    tls = tls_for(issue, "ENGINE1")
    codes: list[str] = []

    def send(prefix: str) -> None:
        client = Client(listener.port, tls)
        try:
            for i in range(15):
                codes.append(client.send(M.orm(control=f"{prefix}{i}", accession=f"{prefix}-{i}"))["code"])
        finally:
            client.close()

    threads = [threading.Thread(target=send, args=(p,)) for p in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == ["AA"] * 30
    assert {o.accession for o in context(archive).orders} == {f"{p}-{i}" for p in "AB" for i in range(15)}


def test_a_feed_that_found_no_document_never_overwrites_one_created_meanwhile(archive, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Forced interleaving: feed B reads (no orders document yet, so nothing to lock), feed A creates the document and
    commits, then B writes. B must fail its insert and merge again into A's document, not upsert over it (an update
    acknowledged to A would be lost). On PostgreSQL A commits while B waits; on SQLite B holds the write lock, so A
    waits for B instead (B's pause ends after a bound) and the same no-loss result must hold."""
    import threading

    from dicomguard.detect import hl7v2

    real_merge = hl7v2.merge
    b_read = threading.Event()
    a_done = threading.Event()
    merges: list[str] = []

    def merge(texts, updates):  # type: ignore[no-untyped-def]
        merges.append(threading.current_thread().name)
        if threading.current_thread().name == "feed-B" and not b_read.is_set():
            b_read.set()
            a_done.wait(3)  # A creates and commits the document while B's transaction holds its (empty) read
        return real_merge(texts, updates)

    monkeypatch.setattr(hl7v2, "merge", merge)
    outcomes: dict[str, object] = {}

    def feed(name: str, accession: str) -> None:
        services = archive.services(Principal.operator(f"feed-{name}"))
        outcomes[name] = [o.ack for o in services.detection.apply_hl7([M.orm(control=accession, accession=accession)])]

    b = threading.Thread(target=feed, args=("B", "B-0"), name="feed-B")
    b.start()
    assert b_read.wait(10)
    a = threading.Thread(target=feed, args=("A", "A-0"), name="feed-A")
    a.start()
    a.join(10 if archive.ctx.engine.dialect.name == "postgresql" else 0.5)
    a_done.set()
    b.join(30)
    a.join(30)
    assert outcomes == {"A": ["AA"], "B": ["AA"]}
    assert {o.accession for o in context(archive).orders} == {"A-0", "B-0"}
    if archive.ctx.engine.dialect.name == "postgresql":
        assert merges.count("feed-B") == 2  # B's first insert failed against A's document and it merged again
