"""The forwarder against an in-process upstream over mutual TLS with scripted C-STORE statuses."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from dicomguard.crypto.aead import new_key
from dicomguard.gateway.config import GatewayConfig
from dicomguard.gateway.forwarder import Forwarder
from dicomguard.gateway.queue import DurableQueue, Incoming, scan
from dicomguard.gateway.runner import load_client_tls
from dicomguard.gateway.status import GatewayStats
from dicomguard.gateway.upstream import pynetdicom_settings
from dicomguard.pki.authority import CertificateAuthority, cert_pem
from dicomguard.pki.tls import server_context
from tests.dicom_factory import ALICE, ct_series
from tests.gateway.peers import GATEWAY_AE, PkiFiles, free_port, wait_until

pytestmark = pytest.mark.slow  # a forwarder against real upstreams


class FakeUpstream:
    """A TLS Storage SCP that requires a client certificate from the test CA; answers from a script."""

    def __init__(self, pki: PkiFiles, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[str, bytes]] = []
        self.associations = 0
        self.peer_subjects: list[str] = []
        self.lock = threading.Lock()
        ctx = server_context(pki.server_cert.read_bytes(), pki.server_key.read_bytes(), pki.ca.read_bytes())
        ae = AE("UPSTREAM")
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.port = free_port()
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, ssl_context=ctx,
            evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_ACCEPTED, self._accepted)],
        )

    def _accepted(self, event: evt.Event) -> None:
        with self.lock:
            self.associations += 1
            cert = event.assoc.dul.socket.socket.getpeercert()
            self.peer_subjects.append(dict(x[0] for x in cert["subject"])["commonName"])

    def _store(self, event: evt.Event) -> int:
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else 0x0000
            if status in (0x0000, 0xB000):
                self.received.append((str(event.request.AffectedSOPInstanceUID), event.encoded_dataset(include_meta=False)))
            return status

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def upstream_factory(test_pki: PkiFiles) -> Iterator:  # type: ignore[type-arg]
    made: list[FakeUpstream] = []

    def make(statuses: list[int]) -> FakeUpstream:
        made.append(FakeUpstream(test_pki, statuses))
        return made[-1]

    try:
        yield make
    finally:
        for u in made:
            u.stop()


def _config(pki: PkiFiles, port: int, ca: Path | None = None) -> GatewayConfig:
    return GatewayConfig(
        listen=("127.0.0.1", 1), upstream=("127.0.0.1", port), upstream_ae="UPSTREAM", cert_file=pki.client_cert,
        key_file=pki.client_key, ca_file=ca or pki.ca, ae_title=GATEWAY_AE, initial_backoff_s=0.02, max_backoff_s=0.1,
        dead_letter_after=3, upstream_timeout_s=5,
    )


def _fill(folder: Path, objects: list[bytes]) -> DurableQueue:
    q = DurableQueue(folder, new_key())
    for data in objects:
        ds = pydicom.dcmread(io.BytesIO(data))
        q.put_bytes(data, Incoming(str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID), "CT", "192.0.2.1"))
    return q


def _run(q: DurableQueue, config: GatewayConfig, until, what: str) -> GatewayStats:  # type: ignore[no-untyped-def]
    stats = GatewayStats()
    fwd = Forwarder(q, config, load_client_tls(config), stats)
    with pynetdicom_settings():
        fwd.start()
        try:
            wait_until(lambda: until(stats), 15, what=what)
        finally:
            fwd.stop()
            fwd.join(10)
    assert not fwd.is_alive()
    return stats


def _uid(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def test_retries_transient_dead_letters_permanent_keeps_order(tmp_path: Path, test_pki: PkiFiles, upstream_factory) -> None:  # type: ignore[no-untyped-def]
    objects = ct_series(ALICE, n=3)
    # item 1: out of resources, then success; item 2: refused 3 times -> dead letter; item 3: success
    up = upstream_factory([0xA700, 0x0000, 0xA900, 0xA900, 0xA900, 0x0000])
    q = _fill(tmp_path, objects)
    stats = _run(q, _config(test_pki, up.port), lambda s: len(q) == 0, "the queue to drain")
    assert [uid for uid, _ in up.received] == [_uid(objects[0]), _uid(objects[2])]
    snap = stats.snapshot()
    assert snap["delivered"] == 2 and snap["dead_lettered"] == 1
    assert "0xA900" in snap["last_error"]
    assert scan(tmp_path).dead_letters == 1
    assert set(up.peer_subjects) == {GATEWAY_AE}  # the upstream saw the gateway's client certificate


def test_one_association_carries_many_objects_byte_for_byte(tmp_path: Path, test_pki: PkiFiles, upstream_factory) -> None:  # type: ignore[no-untyped-def]
    objects = ct_series(ALICE, n=12, size=32)
    up = upstream_factory([])
    q = _fill(tmp_path, objects)
    _run(q, _config(test_pki, up.port), lambda s: len(q) == 0, "the queue to drain")
    assert up.associations == 1
    for (uid, body), data in zip(up.received, objects):
        assert uid == _uid(data) and data.endswith(body)


def test_an_upstream_with_the_wrong_certificate_gets_nothing(tmp_path: Path, test_pki: PkiFiles, upstream_factory) -> None:  # type: ignore[no-untyped-def]
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(cert_pem(CertificateAuthority.create("impostor").cert))
    up = upstream_factory([])
    q = _fill(tmp_path / "q", ct_series(ALICE, n=1))
    stats = _run(q, _config(test_pki, up.port, ca=other_ca), lambda s: s.snapshot()["upstream_failures"] >= 3, "failed attempts")
    assert len(q) == 1 and up.received == [] and up.associations == 0
    assert stats.snapshot()["state"] == "backing-off"


def test_an_unreachable_upstream_is_retried_with_backoff(tmp_path: Path, test_pki: PkiFiles) -> None:
    q = _fill(tmp_path, ct_series(ALICE, n=2))
    stats = _run(q, _config(test_pki, free_port()), lambda s: s.snapshot()["upstream_failures"] >= 3, "failed attempts")
    assert len(q) == 2
    assert stats.snapshot()["next_retry_at"] is not None
