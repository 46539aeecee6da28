"""dcmtk over TLS against the archive: store, find at every level, get and move back (issue 4)."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import split_dataset

from dicomguard.core.events import AccessRefused
from dicomguard.core.query import IndexQuery
from dicomguard.core.retrieve import retrieve
from tests.dicom_factory import ALICE, BOB, ct_series, us_multiframe, write_files
from tests.dimse.conftest import dcmtk, plain

pytestmark = pytest.mark.slow  # real dcmtk peers over TLS


def _find(creds, port, level: str, keys: dict[str, str], out: Path, root: str = "-S") -> list:
    out.mkdir(parents=True, exist_ok=True)
    args = [root, "-X", "-od", str(out), "-k", f"QueryRetrieveLevel={level}"]
    for k, v in keys.items():
        args += ["-k", f"{k}={v}"]
    r = dcmtk("findscu", creds, port, *args)
    assert r.returncode == 0, r.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_store_find_get_move_round_trip(archive, dimse, issue, tunnel, tmp_path) -> None:
    ct1 = issue("CT1")
    objects = ct_series(ALICE, n=3) + [us_multiframe(BOB, frames=5)]
    files = write_files(tmp_path / "in", objects)
    r = dcmtk("storescu", ct1, dimse.port, files=files)
    assert r.returncode == 0, r.stderr
    assert len(IndexQuery(archive.ctx).instances()) == 4

    # C-FIND at every level, both information models
    pats = _find(ct1, dimse.port, "PATIENT", {"PatientName": "ZEBRA*", "PatientID": "", "PatientBirthDate": ""}, tmp_path / "f1", root="-P")
    assert [(str(p.PatientName), p.PatientID, p.PatientBirthDate) for p in pats] == [(ALICE.name, ALICE.patient_id, ALICE.birth_date)]
    studies = _find(ct1, dimse.port, "STUDY", {"StudyDate": "20240101-20241231", "StudyInstanceUID": "", "PatientID": "", "ModalitiesInStudy": "", "NumberOfStudyRelatedInstances": ""}, tmp_path / "f2")
    assert sorted(s.PatientID for s in studies) == sorted([ALICE.patient_id, BOB.patient_id])
    ct_study = next(s for s in studies if s.PatientID == ALICE.patient_id)
    assert int(ct_study.NumberOfStudyRelatedInstances) == 3 and ct_study.ModalitiesInStudy == "CT"
    series = _find(ct1, dimse.port, "SERIES", {"StudyInstanceUID": ct_study.StudyInstanceUID, "SeriesInstanceUID": "", "Modality": "", "NumberOfSeriesRelatedInstances": ""}, tmp_path / "f3")
    assert len(series) == 1 and series[0].Modality == "CT" and int(series[0].NumberOfSeriesRelatedInstances) == 3
    images = _find(ct1, dimse.port, "IMAGE", {"StudyInstanceUID": ct_study.StudyInstanceUID, "SeriesInstanceUID": series[0].SeriesInstanceUID, "SOPInstanceUID": "", "InstanceNumber": ""}, tmp_path / "f4")
    assert sorted(int(i.InstanceNumber) for i in images) == [1, 2, 3]
    assert _find(ct1, dimse.port, "STUDY", {"PatientID": "NOBODY*", "StudyInstanceUID": ""}, tmp_path / "f5") == []

    # C-GET the CT study back: element for element identical
    out = tmp_path / "got"
    out.mkdir()
    via = tunnel(ct1, dimse.port)  # getscu and movescu have no TLS of their own: stunnel carries them
    r = plain("getscu", "CT1", via, "-S", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ct_study.StudyInstanceUID}")
    assert r.returncode == 0, r.stderr
    originals = {dcmread(io.BytesIO(d)).SOPInstanceUID: dcmread(io.BytesIO(d)) for d in objects}
    got = [dcmread(p) for p in out.iterdir()]
    assert len(got) == 3
    for ds in got:
        assert ds == originals[ds.SOPInstanceUID]

    # C-MOVE the ultrasound to a registered TLS destination (dcmtk storescp)
    dest_dir = tmp_path / "moved"
    dest_dir.mkdir()
    from dicomguard.dimse.server import free_port

    port = free_port()
    dest = issue("VIEWER1", move=("127.0.0.1", port))
    scp = subprocess.Popen(["storescp", *dest.tls(), "-aet", "VIEWER1", "-od", str(dest_dir), str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        us_study = next(s for s in studies if s.PatientID == BOB.patient_id)
        r = plain("movescu", "CT1", via, "-S", "-aem", "VIEWER1", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={us_study.StudyInstanceUID}")
        assert r.returncode == 0, r.stderr
        moved = list(dest_dir.iterdir())
        assert len(moved) == 1
        assert dcmread(moved[0]) == originals[dcmread(moved[0]).SOPInstanceUID]
        # an unregistered destination is refused (PS3.4 C.4.2.1.4: 0xA801)
        r = plain("movescu", "CT1", via, "-S", "-aem", "ELSEWHERE", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={us_study.StudyInstanceUID}")
        assert "movedestinationunknown" in (r.stdout + r.stderr).lower()
    finally:
        scp.terminate()
        scp.wait(timeout=10)


@pytest.fixture
def alerts(archive):
    seen: list[AccessRefused] = []
    archive.ctx.bus.subscribe(lambda s, e: seen.append(e) if isinstance(e, AccessRefused) else None)
    return seen


def test_refused_peers(archive, dimse, issue, tmp_path, alerts) -> None:
    ct1 = issue("CT1")
    issue("CT2")
    # no client certificate (anonymous TLS)
    r = subprocess.run(["echoscu", "+tla", "+cf", str(ct1.ca), "-aet", "CT1", "-aec", "DICOMGUARD", "127.0.0.1", str(dimse.port)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    # another device's certificate under a different AE title
    r = subprocess.run(
        ["echoscu", *ct1.tls(), "-aet", "CT2", "-aec", "DICOMGUARD", "127.0.0.1", str(dimse.port)], capture_output=True, text=True, timeout=30
    )
    assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stderr
    # plaintext
    r = subprocess.run(["echoscu", "-aet", "CT1", "-aec", "DICOMGUARD", "127.0.0.1", str(dimse.port)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    # TLS 1.1 forced
    r = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{dimse.port}", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-cert", str(ct1.cert), "-key", str(ct1.key)],
        input="", capture_output=True, text=True, timeout=30,
    )
    assert "Cipher is (NONE)" in r.stdout or r.returncode != 0
    # revoked
    dimse.archive.operator.devices.revoke("CT1")
    r = dcmtk("echoscu", ct1, dimse.port)
    assert r.returncode != 0
    time.sleep(0.2)
    reasons = [a.reason for a in alerts]
    assert any("handshake" in x for x in reasons), reasons
    assert any("does not match" in x for x in reasons)
    assert any("revoked" in x for x in reasons)
    assert all(a.resource_kind == "association" for a in alerts)
    # the listener still serves legitimate devices afterwards
    ok = issue("CT9")
    assert dcmtk("echoscu", ok, dimse.port).returncode == 0


def test_store_only_device_cannot_query_or_retrieve(archive, dimse, issue, tunnel, tmp_path) -> None:
    modality = issue("CTSTORE", operations=("echo", "store"))
    files = write_files(tmp_path / "in", ct_series(ALICE, n=2))
    assert dcmtk("storescu", modality, dimse.port, files=files).returncode == 0
    assert _find(modality, dimse.port, "STUDY", {"StudyInstanceUID": "", "PatientID": ""}, tmp_path / "f") == []
    study = IndexQuery(archive.ctx).studies()[0].uid
    out = tmp_path / "got"
    out.mkdir()
    r = plain("getscu", "CTSTORE", tunnel(modality, dimse.port), "-S", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}")
    assert list(out.iterdir()) == []
    # answered exactly like an absent study (no existence oracle): success, zero sub-operations
    assert r.returncode == 0 and "0x124" not in (r.stdout + r.stderr).lower()


def test_read_only_device_cannot_store(archive, dimse, issue, tmp_path) -> None:
    viewer = issue("VIEWRO", operations=("echo", "query", "retrieve"))
    files = write_files(tmp_path / "in", ct_series(ALICE, n=1))
    r = dcmtk("storescu", viewer, dimse.port, "-v", files=files)
    assert "0x0124" in (r.stdout + r.stderr).lower() or "0x124" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    assert IndexQuery(archive.ctx).instances() == []



def test_c_get_sends_the_stored_data_set_byte_for_byte(archive, dimse, issue, tunnel, tmp_path) -> None:
    """A peer proposing the stored syntax among others gets it (Explicit VR Little Endian is accepted first): the
    data set it receives is the verified stored one, byte for byte, not a conversion to Implicit VR."""
    ct1 = issue("CT1")
    objects = ct_series(ALICE, n=3)
    files = write_files(tmp_path / "in", objects)
    assert dcmtk("storescu", ct1, dimse.port, files=files).returncode == 0
    stored = {}
    for o in objects:
        kept = retrieve(archive.ctx, dcmread(io.BytesIO(o)).SOPInstanceUID)
        assert kept.transfer_syntax == ExplicitVRLittleEndian
        stored[kept.sop_instance_uid] = kept.data[kept.structure.dataset_offset:]
    out = tmp_path / "got"
    out.mkdir()
    study = dcmread(files[0]).StudyInstanceUID
    r = plain("getscu", "CT1", tunnel(ct1, dimse.port), "+B", "-S", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
              "-k", f"StudyInstanceUID={study}")  # +B: written exactly as received
    assert r.returncode == 0, r.stderr
    got = {dcmread(p).SOPInstanceUID: p.read_bytes()[split_dataset(p)[1]:] for p in out.iterdir()}
    assert got == stored
