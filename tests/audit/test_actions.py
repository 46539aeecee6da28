"""Every audit event type, produced by a real action (dcmtk over DIMSE-TLS, the CLI, ``dicomguard serve``), valid by the schema."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from sqlalchemy import select
from typer.testing import CliRunner

from dicomguard.audit.codes import EventIds, EventTypes, Roles
from dicomguard.cli.main import app
from dicomguard.errors import IntegrityError
from dicomguard.index.db import read_session
from dicomguard.index.models import Instance
from tests.audit.conftest import entries
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of, to_bytes, write_files
from tests.dimse.conftest import dcmtk, plain
from tests.serve_process import serve_process, stop_gracefully

runner = CliRunner()


def _by_event(es, code: str, action: str | None = None):  # type: ignore[no-untyped-def]
    return [e for e in es if e.event_id == code and (action is None or e.action == action)]


def _types(e) -> set[str]:  # type: ignore[no-untyped-def]
    return set((e.event_type or "").split())


@pytest.mark.slow
def test_dimse_and_core_actions_each_produce_their_audit_message(archive, dimse, issue, tunnel, tmp_path, valid) -> None:
    ct1 = issue("CT1")
    issue("CT2")
    alice = ct_series(ALICE, n=2)
    study = dataset_of(alice[0]).StudyInstanceUID

    # store over DIMSE-TLS: DICOM Instances Transferred (C), source = the modality, destination = the archive
    assert dcmtk("storescu", ct1, dimse.port, files=write_files(tmp_path / "in", alice)).returncode == 0
    # query: C-FIND naming the patient
    out = tmp_path / "find"
    out.mkdir()
    r = dcmtk("findscu", ct1, dimse.port, "-S", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
              "-k", f"PatientID={ALICE.patient_id}", "-k", "StudyInstanceUID=")
    assert r.returncode == 0, r.stderr
    # retrieve: C-GET of the study (getscu has no TLS of its own: stunnel carries it)
    got = tmp_path / "got"
    got.mkdir()
    r = plain("getscu", "CT1", tunnel(ct1, dimse.port), "-S", "-od", str(got), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}")
    assert r.returncode == 0 and len(list(got.iterdir())) == 2, r.stderr
    # refused association: CT1's certificate under another AE title
    r = subprocess.run(["echoscu", *ct1.tls(), "-aet", "CT2", "-aec", "DICOMGUARD", "127.0.0.1", str(dimse.port)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    # conflicting re-send: same SOP Instance UID, different content
    ds = dataset_of(alice[0])
    ds.PatientSex = "M"
    r = dcmtk("storescu", ct1, dimse.port, files=write_files(tmp_path / "conflict", [to_bytes(ds)]))
    # export with the CLI (files leave the archive's control)
    r = runner.invoke(app, ["export", str(tmp_path / "export"), "--study", study], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    # import with the CLI (another patient, from files)
    bob = ct_series(BOB, n=1, seed=9)[0]
    r = runner.invoke(app, ["import", str(write_files(tmp_path / "bob", [bob])[0])], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    # integrity violation: a tampered blob is refused on read
    bob_uid = dataset_of(bob).SOPInstanceUID
    with read_session(archive.ctx.engine) as s:
        blob_id = s.scalar(select(Instance.blob_id).where(Instance.sop_instance_uid == bob_uid))
    path = archive.ctx.store._path(blob_id)
    raw = bytearray(path.read_bytes())
    raw[-40] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        archive.operator.retrieve.instance(bob_uid)
    # key rotation, then erasure of Alice
    archive.operator.keys.rotate(PASSPHRASE)
    archive.operator.erase.patient(ALICE.patient_id, "patient request")

    es = entries(archive)
    for e in es:
        valid(e.xml)

    stores = _by_event(es, EventIds.INSTANCES_TRANSFERRED.code, "C")
    assert len(stores) == 2
    for e in stores:
        src, dst = e.message.participants
        assert (src.user_id, src.alt_user_id, src.nap_id, src.nap_type, src.roles, src.requestor) == (
            "CT1", "AETITLES=CT1", "127.0.0.1", 2, (Roles.SOURCE,), True)
        assert (dst.user_id, dst.roles, dst.requestor) == ("DICOMGUARD", (Roles.DESTINATION,), False)
        assert e.message.patient_ids() == [ALICE.patient_id] and e.message.study_uids() == [study]

    (query,) = [e for e in _by_event(es, EventIds.QUERY.code) if e.user == "CT1"]
    q = next(o for o in query.message.objects if o.query is not None)
    dataset = dcmread(DicomBytesIO(q.query), force=True)
    assert (dataset.QueryRetrieveLevel, dataset.PatientID) == ("STUDY", ALICE.patient_id)
    assert dict(q.details)["TransferSyntax"] == b"1.2.840.10008.1.2.1"
    assert query.message.patient_ids() == [ALICE.patient_id]

    (retrieve,) = _by_event(es, EventIds.INSTANCES_TRANSFERRED.code, "R")
    src, dst = retrieve.message.participants
    assert (src.user_id, src.roles, dst.user_id, dst.roles, dst.requestor) == ("DICOMGUARD", (Roles.SOURCE,), "CT1", (Roles.DESTINATION,), True)
    ((sop_class,),) = [d.sop_classes for o in retrieve.message.objects if o.is_study for d in o.descriptions]
    assert sop_class.count == 2 and len(sop_class.instances) == 2

    alerts = _by_event(es, EventIds.SECURITY_ALERT.code)
    (refused,) = [e for e in alerts if EventTypes.NODE_AUTHENTICATION.code in _types(e)]
    assert refused.outcome == 4 and refused.user == "CT2" and refused.message.requestor().nap_id == "127.0.0.1"
    (conflict,) = [e for e in alerts if EventTypes.CONFLICT_REFUSED.code in _types(e)]
    assert conflict.user == "dimse:CT1" and conflict.message.patient_ids() == [ALICE.patient_id]
    (integrity,) = [e for e in alerts if EventTypes.INTEGRITY_VIOLATION.code in _types(e)]
    assert integrity.outcome == 8 and integrity.message.patient_ids() == [BOB.patient_id]
    (rotation,) = [e for e in alerts if EventTypes.SECURITY_CONFIGURATION.code in _types(e)]
    assert rotation.outcome == 0

    exports = _by_event(es, EventIds.EXPORT.code)
    assert len(exports) == 1  # one export, one Export message listing both objects
    (listed,) = [o for o in exports[0].message.objects if o.id_type.code == "110180"]
    assert [ref.count for d in listed.descriptions for ref in d.sop_classes] == [2]
    for export in exports:
        assert export.user == "local-operator" and export.message.patient_ids() == [ALICE.patient_id]
        assert any(p.roles == (Roles.DESTINATION_MEDIA,) and p.media_type is not None for p in export.message.participants)
    (imported,) = _by_event(es, EventIds.IMPORT.code)
    assert imported.message.patient_ids() == [BOB.patient_id]

    # erasure: the messages still name the patient whose identity was just destroyed
    (deleted,) = _by_event(es, EventIds.STUDY_DELETED.code, "D")
    assert deleted.message.patient_ids() == [ALICE.patient_id] and deleted.message.study_uids() == [study]
    assert {o.lifecycle for o in deleted.message.objects} == {15}
    (record,) = _by_event(es, EventIds.PATIENT_RECORD.code, "D")
    assert record.message.patient_ids() == [ALICE.patient_id]

    # and every record is bound to the ledger: verify finds nothing wrong with the trail
    from dicomguard.app.verify import verify_archive

    report = verify_archive(archive.ctx, archive.ledger.verifier)
    assert [p for p in report.problems if p.kind.value.startswith("audit")] == []


@pytest.mark.slow
def test_serve_start_and_stop_are_application_activity(home: Path, valid) -> None:
    with serve_process() as proc:
        stop_gracefully(proc)
    from dicomguard.app.archive import Archive

    with Archive.open(home, PASSPHRASE) as a:
        es = _by_event(entries(a), EventIds.APPLICATION_ACTIVITY.code)
    assert [[c.code for c in e.message.event_types] for e in es] == [[EventTypes.APPLICATION_START.code], [EventTypes.APPLICATION_STOP.code]]
    for e in es:
        valid(e.xml)
        app_participant, launcher = e.message.participants
        assert app_participant.roles == (Roles.APPLICATION,) and launcher.roles == (Roles.APPLICATION_LAUNCHER,)
        assert launcher.user_id and launcher.requestor
