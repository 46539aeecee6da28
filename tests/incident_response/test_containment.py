"""Containment steps against real listeners: read-only archive (STOW 403, C-STORE refused, WADO keeps working), a
device (its running association's next C-STORE is refused, its next association too), a network (refused at HTTPS)."""

from __future__ import annotations

import io
import ssl
import time

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from dicomguard.core import network_blocks
from tests.dicom_factory import ALICE, BOB, ct_series
from tests.dimse.conftest import dcmtk
from tests.web.conftest import start_server
from tests.web.multipart_util import encode

pytestmark = pytest.mark.slow  # DIMSE and HTTPS listeners, dcmtk


def _success(status) -> bool:  # type: ignore[no-untyped-def]
    return bool(status) and int(status.Status) == 0


def test_read_only_refuses_stores_and_changes_and_keeps_reading(archive, dimse, issue, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stored = ct_series(ALICE, n=1, size=16, seed=41)[0]
    archive.operator.store.ingest(stored)
    study = str(pydicom.dcmread(io.BytesIO(stored)).StudyInstanceUID)
    modality = issue("CT7", ("echo", "store"))
    server, stop = start_server(archive)
    try:
        officer = archive.operator.incidents
        number = officer.open("ransomware note found on a workstation")
        step = officer.read_only(number, "stop every write until the scope is known")
        tech = server.token("t.tech", "technologist")
        rad = server.token("dr.read", "radiologist")
        content_type, body = encode(ct_series(BOB, n=1, size=16, seed=42))
        with server.http(tech) as http:
            assert http.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type}).status_code == 403
        new = tmp_path / "new.dcm"
        new.write_bytes(ct_series(BOB, n=1, size=16, seed=43)[0])
        refused = dcmtk("storescu", modality, dimse.port, "-v", files=[new])
        output = (refused.stdout + refused.stderr).lower()
        assert "0x0124" in output or "0x124" in output, output  # Refused: Not Authorized (PS3.7 C.5)
        with pytest.raises(Exception, match="read-only|forbidden"):
            archive.operator.store.ingest(new.read_bytes())  # the operator too: forbid wins
        with server.http(rad) as http:
            assert http.get(f"/dicomweb/studies/{study}").status_code == 200  # reading for care goes on
        officer.release(number, step, "backups verified, scope known")
        with server.http(tech) as http:
            assert http.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type}).status_code == 200
    finally:
        stop()


def test_a_contained_device_is_cut_off_mid_association(archive, dimse, issue) -> None:  # type: ignore[no-untyped-def]
    creds = issue("CT8", ("echo", "store"))
    ae = AE(ae_title="CT8")
    ae.add_requested_context(CTImageStorage)
    context = ssl.create_default_context(cafile=str(creds.ca))
    context.load_cert_chain(str(creds.cert), str(creds.key))
    context.check_hostname = False
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title="DICOMGUARD", tls_args=(context, None))
    assert assoc.is_established
    try:
        first, second = (pydicom.dcmread(io.BytesIO(d)) for d in ct_series(BOB, n=2, size=16, seed=44))
        assert _success(assoc.send_c_store(first))
        officer = archive.operator.incidents
        number = officer.open("modality CT8 sends studies of unknown patients")
        officer.contain_device(number, "CT8", "pulled off the network for forensics")
        time.sleep(1.2)  # a running association re-reads revocation at most once a second (the sweep aborts it soon after)
        if assoc.is_established:
            assert not _success(assoc.send_c_store(second))
        deadline = time.monotonic() + 15
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not assoc.is_established  # the archive ended the running association
    finally:
        if assoc.is_established:
            assoc.release()
    found = {r.sop_instance_uid for r in archive.operator.query.find_instances(series_uid=str(second.SeriesInstanceUID))}
    assert found == {str(first.SOPInstanceUID)}  # the second object never arrived
    again = ae.associate("127.0.0.1", dimse.port, ae_title="DICOMGUARD", tls_args=(context, None))
    assert not again.is_established


def test_a_contained_network_is_refused_at_https(archive) -> None:  # type: ignore[no-untyped-def]
    server, stop = start_server(archive)
    try:
        officer = archive.operator.incidents
        number = officer.open("scanning from the guest network")
        step = officer.contain_network(number, "127.0.0.0/8", "the scanner sits on loopback in this test")
        network_blocks.forget()
        with server.http() as http:
            assert http.get("/healthz").status_code == 403
        officer.release(number, step, "scanner removed")
        network_blocks.forget()
        with server.http() as http:
            assert http.get("/healthz").status_code == 200
    finally:
        stop()
