"""Site-to-site transfer between two archives on loopback, each with its own CA (real mutual TLS, real STOW-RS).

Site A sends a study to site B: B authenticates A by the client certificate it issued
to A, verifies every object against A's ledger proofs, stores them and keeps the proofs.
An unknown certificate is refused in the handshake; a peer whose objects come without
valid proofs stores nothing; a receiver that is down is retried from A's queue and gets
the study once when it returns.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from dicomguard.app.archive import Archive
from dicomguard.app.home import init_home
from dicomguard.core.events import ProvenanceVerified, TransferDelivered
from dicomguard.index.db import read_session
from dicomguard.index.models import Instance, ObjectProvenance
from dicomguard.pki.store import CA_FILE, TLS_DIR
from dicomguard.web.server import serve_https
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, ct_series
from tests.web.conftest import free_port


@dataclass
class Site:
    archive: Archive
    port: int
    stop: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dicomweb"

    @property
    def ca_pem(self) -> str:
        return (Path(self.archive.home) / TLS_DIR / CA_FILE).read_text()

    def start(self) -> None:
        ready, stop = threading.Event(), threading.Event()
        thread = threading.Thread(target=serve_https, args=(self.archive, "127.0.0.1", self.port),
                                  kwargs={"ready": ready, "stop": stop}, daemon=True)
        thread.start()
        assert ready.wait(20)

        def halt() -> None:
            stop.set()
            thread.join(20)

        self.stop = halt

    def halt(self) -> None:
        if self.stop is not None:
            self.stop()
            self.stop = None


def _site(root: Path, name: str) -> Site:
    home = root / name
    init_home(home, PASSPHRASE, "admin")
    return Site(Archive.open(home, PASSPHRASE), free_port())


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    a, b = _site(tmp_path, "site-a"), _site(tmp_path, "site-b")
    try:
        yield a, b
    finally:
        for site in (a, b):
            site.halt()
            site.archive.close()


def _pair(a: Site, b: Site) -> None:
    """B issues A a client certificate and registers A as a peer with A's ledger key; A registers B to send to."""
    creds = b.archive.operator.devices.add("SITEA", "site A archive", operations=("store",))
    b.archive.operator.transfers.add_peer("site-a", url=a.url, ca_pem=a.ca_pem, device="SITEA",
                                          ledger_key=a.archive.ledger.verifier.to_verifier_key())
    a.archive.operator.transfers.add_peer("site-b", url=b.url, ca_pem=b.ca_pem, cert_pem=creds.cert_pem.decode(),
                                          key_pem=creds.key_pem.decode(), external=False)  # type: ignore[union-attr]


def _stored(site: Site) -> int:
    with read_session(site.archive.ctx.engine) as s:
        return int(s.scalar(select(func.count()).select_from(Instance).where(Instance.erased.is_(False))) or 0)


def _study(a: Site, n: int = 5) -> tuple[str, dict[str, bytes]]:
    objects = ct_series(ALICE, n=n, size=32, seed=5)
    for data in objects:
        a.archive.operator.store.ingest(data)
    by_uid = {str(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID): d for d in objects}
    return str(pydicom.dcmread(io.BytesIO(objects[0])).StudyInstanceUID), by_uid


def test_a_study_travels_with_its_provenance(sites: tuple[Site, Site]) -> None:
    a, b = sites
    _pair(a, b)
    b.start()
    study, objects = _study(a)
    seen: list = []  # type: ignore[type-arg]
    b.archive.ctx.bus.subscribe(lambda s, e: seen.append(e))
    job = a.archive.operator.transfers.send(study, "site-b")
    done = a.archive.operator.transfers.deliver_now(job.id, 30)
    assert done.state == "delivered", done.last_error
    assert done.objects == 5 and _stored(b) == 5
    # B holds exactly A's bytes, each with A's inclusion proof under A's key.
    for uid, data in objects.items():
        assert b.archive.operator.retrieve.instance(uid).data == data
    with read_session(b.archive.ctx.engine) as s:
        kept = list(s.scalars(select(ObjectProvenance)))
    assert {p.sop_instance_uid for p in kept} == set(objects) and {p.peer for p in kept} == {"site-a"}
    assert {p.origin for p in kept} == {a.archive.ledger.origin}
    verified = [e for e in seen if isinstance(e, ProvenanceVerified)]
    assert len(verified) == 1 and verified[0].principal.name == "SITEA" and set(verified[0].sop_instance_uids) == set(objects)


def test_a_peer_with_an_unknown_certificate_is_refused(sites: tuple[Site, Site], tmp_path: Path) -> None:
    a, b = sites
    _pair(a, b)
    b.start()
    # A third archive's CA issues a certificate with the same AE title: B does not trust it.
    stranger = _site(tmp_path, "stranger")
    try:
        forged = stranger.archive.operator.devices.add("SITEA", "not site A", operations=("store",))
    finally:
        stranger.archive.close()
    a.archive.operator.transfers.add_peer("site-b-forged", url=b.url, ca_pem=b.ca_pem, cert_pem=forged.cert_pem.decode(),
                                          key_pem=forged.key_pem.decode(), external=False)  # type: ignore[union-attr]
    study, _ = _study(a)
    job = a.archive.operator.transfers.send(study, "site-b-forged")
    done = a.archive.operator.transfers.deliver_now(job.id, 3)
    # B's handshake refuses the certificate (unknown CA). Under TLS 1.3 the client learns it only as a closed
    # connection, which could also be a restart: A keeps the job queued and retries, B stores nothing.
    assert done.state != "delivered" and done.attempts >= 1 and done.last_error and _stored(b) == 0
    assert "connection" in done.last_error.lower() or "tls" in done.last_error.lower()


def test_objects_without_valid_proofs_are_refused(sites: tuple[Site, Site], tmp_path: Path) -> None:
    from dicomguard.pki.tls import client_context
    from dicomguard.transfer import build_provenance, send_instances

    a, b = sites
    _pair(a, b)
    b.start()
    study, objects = _study(a, n=2)
    creds_b = b.archive.operator.devices.add("SITEA2", "site A second cert", operations=("store",))
    # A valid client certificate of a registered peer, but the proofs come from another log (B's own ledger).
    b.archive.operator.transfers.remove_peer("site-a")
    b.archive.operator.transfers.add_peer("site-a", url=a.url, ca_pem=a.ca_pem, device="SITEA2",
                                          ledger_key=a.archive.ledger.verifier.to_verifier_key())
    context = client_context(b.ca_pem.encode(), creds_b.cert_pem, creds_b.key_pem)
    uids = list(objects)
    no_proofs = send_instances(b.url, [objects[u] for u in uids], ssl_context=context)
    assert no_proofs.http_status == 409 and _stored(b) == 0
    proofs = build_provenance(a.archive.ledger.origin, {u: a.archive.ledger.prove_instance(u) for u in uids})
    tampered = bytearray(objects[uids[0]])
    tampered[-3] ^= 0xFF
    mixed = send_instances(b.url, [bytes(tampered), objects[uids[1]]], ssl_context=context, provenance=proofs)
    assert mixed.http_status == 202
    assert mixed.stored == [uids[1]] and _stored(b) == 1  # the altered object alone is refused


def test_the_queue_survives_a_receiver_that_is_down_and_delivers_once(sites: tuple[Site, Site]) -> None:
    a, b = sites
    _pair(a, b)
    study, objects = _study(a, n=3)
    events: list = []  # type: ignore[type-arg]
    a.archive.ctx.bus.subscribe(lambda s, e: events.append(e))
    job = a.archive.operator.transfers.send(study, "site-b")
    assert a.archive.operator.transfers.deliver_due() == 1  # B is down
    queued = a.archive.operator.transfers.jobs()[0]
    assert queued.state == "queued" and queued.attempts == 1 and queued.last_error
    # A restart of A's archive keeps the queue (it is in the index).
    home = a.archive.home
    a.archive.close()
    a.archive = Archive.open(home, PASSPHRASE)
    a.archive.ctx.bus.subscribe(lambda s, e: events.append(e))
    b.start()
    done = a.archive.operator.transfers.deliver_now(job.id, 30)
    assert done.state == "delivered" and _stored(b) == 3
    assert a.archive.operator.transfers.deliver_due() == 0  # nothing left: delivered once
    assert [e.delivered for e in events if isinstance(e, TransferDelivered)] == [True]
    assert set(objects) == {r.sop_instance_uid for r in b.archive.operator.query.find_instances()}
