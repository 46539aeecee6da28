"""Orthanc (Debian package) as a C-MOVE destination over mutual TLS (issue 4, real peers)."""

from __future__ import annotations

import io
import json

import pytest
from pydicom import dcmread

from dicomguard.core.query import IndexQuery
from tests.dicom_factory import ALICE, ct_series
from tests.dimse.conftest import plain
from tests.gateway.peers import OrthancServer, PkiFiles, private_file

pytestmark = pytest.mark.slow  # Orthanc as a C-MOVE destination


def test_c_move_to_orthanc_over_tls(archive, dimse, issue, tunnel, tmp_path) -> None:
    # Orthanc is registered as a device: its TLS server certificate comes from the archive CA.
    pki = PkiFiles(tmp_path / "orthanc-pki")
    pki.folder.mkdir()
    dest = issue("ORTHANC", operations=("echo",))
    (pki.ca).write_bytes(dest.ca.read_bytes())
    (pki.server_cert).write_bytes(dest.cert.read_bytes())
    private_file(pki.server_key, dest.key.read_bytes())
    (tmp_path / "orthanc").mkdir()
    orthanc = OrthancServer(tmp_path / "orthanc", pki)
    from dicomguard.index.db import write_session
    from dicomguard.index.models import Device
    from dicomguard.pki.devices import DeviceRegistry

    with write_session(archive.ctx.engine) as s:  # register where C-MOVE may reach it
        d = s.get(Device, "ORTHANC")
        d.move_host, d.move_port = "127.0.0.1", orthanc.dicom_port
    assert DeviceRegistry(archive.ctx.engine).get("ORTHANC").move_destination
    orthanc.start()
    try:
        objects = ct_series(ALICE, n=3)
        for data in objects:
            archive.operator.store.ingest(data)
        study = IndexQuery(archive.ctx).studies()[0].uid
        viewer = issue("WS1")
        r = plain("movescu", "WS1", tunnel(viewer, dimse.port), "-S", "-aem", "ORTHANC", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}")
        assert r.returncode == 0, r.stderr
        received = orthanc.sop_instance_uids()
        originals = {dcmread(io.BytesIO(d)).SOPInstanceUID: dcmread(io.BytesIO(d)) for d in objects}
        assert set(received) == set(originals)
        for uid, oid in received.items():
            assert dcmread(io.BytesIO(orthanc.get(f"/instances/{oid}/file"))) == originals[uid]
        assert json.loads(orthanc.get("/statistics"))["CountInstances"] == 3
    finally:
        orthanc.stop()
