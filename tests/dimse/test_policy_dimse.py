"""Department-scoped devices over DIMSE with real dcmtk peers (issue 5, point 3: Cedar device policies).

A device registered with a department reads that department's studies only:
C-FIND does not reveal another department's study, C-GET and C-MOVE of it
deliver nothing, and the refusal is an ``AccessRefused`` event and a Security
Alert in the audit trail. A device registered without a department is an
archive-wide peer; a store-only device reads nothing.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomguard.audit.codes import EventIds
from dicomguard.audit.store import AuditStore
from dicomguard.core.access import Action
from dicomguard.core.events import AccessRefused
from dicomguard.core.query import IndexQuery
from dicomguard.dimse.server import free_port
from tests.dicom_factory import (
    ALICE,
    BOB,
    DEPARTMENT,
    ct_series,
    us_multiframe,
    write_files,
)
from tests.dimse.conftest import Creds, dcmtk, plain
from tests.dimse.test_dimse_dcmtk import _find

pytestmark = pytest.mark.slow  # real dcmtk peers over TLS

READ = ("echo", "query", "retrieve")


@pytest.fixture
def refusals(archive):
    seen: list[AccessRefused] = []
    archive.ctx.bus.subscribe(lambda s, e: seen.append(e) if isinstance(e, AccessRefused) else None)
    return seen


@pytest.fixture
def radiology_study(archive) -> str:
    """ALICE's CT study, stored by the operator: department RADIOLOGY from its header."""
    for data in ct_series(ALICE, n=2):
        archive.operator.store.ingest(data, source="test")
    (study,) = IndexQuery(archive.ctx).studies()
    assert IndexQuery(archive.ctx).study_access([study.uid])[study.uid][1].department == DEPARTMENT
    return study.uid


def _security_alerts(archive, ae: str, action: Action) -> list:  # type: ignore[no-untyped-def]
    return [
        e for e in AuditStore(archive.ctx).iter_all()
        if e.event_id == EventIds.SECURITY_ALERT.code and e.user == ae and f"{action.value} refused" in e.message.outcome_description
    ]


def test_find_shows_a_device_only_its_departments_studies(archive, dimse, issue, radiology_study, tmp_path) -> None:
    # A cardiology echo cart stores BOB's ultrasound: the storing device's department wins over the header's.
    echo = issue("ECHO1", ("echo", "store"), department="CARDIOLOGY")
    assert dcmtk("storescu", echo, dimse.port, files=write_files(tmp_path / "us", [us_multiframe(BOB, frames=2)])).returncode == 0
    access = IndexQuery(archive.ctx).study_access(s.uid for s in IndexQuery(archive.ctx).studies())
    by_department = {a.department: uid for uid, (_, a) in access.items()}
    assert set(by_department) == {DEPARTMENT, "CARDIOLOGY"} and by_department[DEPARTMENT] == radiology_study
    cardiology_study = by_department["CARDIOLOGY"]

    cardws = issue("CARDWS", READ, department="CARDIOLOGY")
    radws = issue("RADWS", READ, department=DEPARTMENT)
    pacs = issue("PACS", READ, department=None)  # archive-wide peer
    keys = {"StudyInstanceUID": "", "PatientID": "", "ModalitiesInStudy": ""}

    seen = {ae: sorted(s.StudyInstanceUID for s in _find(creds, dimse.port, "STUDY", keys, tmp_path / f"f-{ae}"))
            for ae, creds in (("CARDWS", cardws), ("RADWS", radws), ("PACS", pacs), ("ECHO1", echo))}
    assert seen["CARDWS"] == [cardiology_study]
    assert seen["RADWS"] == [radiology_study]
    assert seen["PACS"] == sorted([radiology_study, cardiology_study])
    assert seen["ECHO1"] == []  # store-only: write-only, never reads back

    # naming the other department's study or patient reveals nothing (no existence oracle)
    assert _find(cardws, dimse.port, "STUDY", {"StudyInstanceUID": radiology_study, "PatientID": ""}, tmp_path / "g1") == []
    assert _find(cardws, dimse.port, "PATIENT", {"PatientID": ALICE.patient_id, "PatientName": ""}, tmp_path / "g2", root="-P") == []
    assert _find(cardws, dimse.port, "SERIES", {"StudyInstanceUID": radiology_study, "SeriesInstanceUID": ""}, tmp_path / "g3") == []
    pats = _find(radws, dimse.port, "PATIENT", {"PatientID": ALICE.patient_id, "PatientName": ""}, tmp_path / "g4", root="-P")
    assert [p.PatientID for p in pats] == [ALICE.patient_id]


def test_get_and_move_of_another_departments_study_deliver_nothing(
    archive, dimse, issue, tunnel, radiology_study, refusals, tmp_path: Path
) -> None:
    cardws = issue("CARDWS", READ, department="CARDIOLOGY")
    radws = issue("RADWS", READ, department=DEPARTMENT)
    store_only = issue("CTSTORE", ("echo", "store"), department=DEPARTMENT)
    port = free_port()
    issue("VIEWER1", ("echo",), move=("127.0.0.1", port), department=DEPARTMENT)
    viewer = Path(tmp_path / "dev-VIEWER1")
    viewer_creds = Creds("VIEWER1", viewer / "key.pem", viewer / "cert.pem", viewer / "ca.pem")
    query = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={radiology_study}"]

    # C-GET by the cardiology workstation: nothing delivered, the refusal recorded
    got = tmp_path / "got-card"
    got.mkdir()
    r = plain("getscu", "CARDWS", tunnel(cardws, dimse.port), "-od", str(got), *query)
    assert list(got.iterdir()) == [], r.stdout + r.stderr
    # C-GET by a store-only device of the right department: refused too
    got_store = tmp_path / "got-store"
    got_store.mkdir()
    r = plain("getscu", "CTSTORE", tunnel(store_only, dimse.port), "-od", str(got_store), "-v", *query)
    assert list(got_store.iterdir()) == []
    # ... and both answer exactly like a study that does not exist: success, zero sub-operations (no existence oracle)
    absent = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.826.0.1.3680043.8.498.1"]
    r_absent = plain("getscu", "CTSTORE", tunnel(store_only, dimse.port), "-od", str(got_store), "-v", *absent)
    def outcome(text: str) -> list[str]:  # the status lines, without UIDs and message ids
        return [line.split(":", 1)[-1].strip() for line in text.splitlines() if "status" in line.lower() or "0x" in line.lower()]
    assert r.returncode == r_absent.returncode == 0 and "0x124" not in (r.stdout + r.stderr).lower()
    assert outcome(r.stdout + r.stderr) == outcome(r_absent.stdout + r_absent.stderr) != [], (r.stdout + r.stderr, r_absent.stdout)

    dest = tmp_path / "moved"
    dest.mkdir()
    scp = subprocess.Popen(["storescp", *viewer_creds.tls(), "-aet", "VIEWER1", "-od", str(dest), str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        # C-MOVE by the cardiology workstation to a registered destination: nothing sent
        r = plain("movescu", "CARDWS", tunnel(cardws, dimse.port), "-aem", "VIEWER1", *query)
        time.sleep(0.3)
        assert list(dest.iterdir()) == [], r.stdout + r.stderr
        # the radiology workstation may: both objects arrive (the refusals above are the policy's, not the setup's)
        via = tunnel(radws, dimse.port)
        r = plain("movescu", "RADWS", via, "-aem", "VIEWER1", *query)
        assert r.returncode == 0, r.stderr
        for _ in range(50):
            if len(list(dest.iterdir())) == 2:
                break
            time.sleep(0.1)
        assert sorted(dcmread(p).StudyInstanceUID for p in dest.iterdir()) == [radiology_study] * 2
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    got_rad = tmp_path / "got-rad"
    got_rad.mkdir()
    assert plain("getscu", "RADWS", via, "-od", str(got_rad), *query).returncode == 0
    assert len(list(got_rad.iterdir())) == 2

    time.sleep(0.2)
    card = [e for e in refusals if e.principal.name == "CARDWS"]
    assert len(card) >= 2 and all(e.action is Action.RETRIEVE for e in card), card
    assert all(e.principal.attributes["department"] == "CARDIOLOGY" for e in card)
    assert any(e.principal.name == "CTSTORE" and e.action is Action.RETRIEVE for e in refusals)
    assert not [e for e in refusals if e.principal.name == "RADWS"]
    # and each is a Security Alert in the (sealed, ledgered) audit trail
    assert len(_security_alerts(archive, "CARDWS", Action.RETRIEVE)) == len(card)
    assert _security_alerts(archive, "CTSTORE", Action.RETRIEVE)
    assert not _security_alerts(archive, "RADWS", Action.RETRIEVE)
