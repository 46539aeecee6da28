"""Review: ``audit search`` and ``audit report`` show a scripted scenario's accesses exactly; reading is authorized and audited."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import select
from typer.testing import CliRunner

from dicomguard.audit.codes import EventIds, EventTypes, ObjectIdTypes, Roles
from dicomguard.audit.message import (
    AuditMessage,
    Participant,
    ParticipantObject,
    to_xml,
)
from dicomguard.audit.store import AuditFilter
from dicomguard.cli.main import app
from dicomguard.core.access import AccessDenied, Action, Principal, PrincipalKind
from dicomguard.core.events import AccessRefused, UserAuthentication
from dicomguard.errors import IntegrityError
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import Instance
from tests.audit.conftest import entries
from tests.dicom_factory import ALICE, BOB, CAROL, DEPARTMENT, ct_series, dataset_of

runner = CliRunner()
DR_A = Principal(PrincipalKind.USER, "dr.a", frozenset({"radiologist"}), "10.0.0.1", {"department": DEPARTMENT})
DR_B = Principal(PrincipalKind.USER, "dr.b", frozenset({"cardiologist"}), "10.0.0.2", {"department": DEPARTMENT})
MALLORY = Principal(PrincipalKind.USER, "mallory", frozenset(), "10.6.6.6")
OFFICER = Principal(PrincipalKind.USER, "sec.officer", frozenset({"security_officer"}), "10.0.0.9")


def cli(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def _uids(objects: list[bytes]) -> list[str]:
    return [dataset_of(d).SOPInstanceUID for d in objects]


def break_glass_from_another_pacs(patient_id: str) -> bytes:
    """What another system would send: an emergency-override access (A.5.3.6 with EventTypeCode 110127)."""
    return to_xml(AuditMessage(
        EventIds.INSTANCES_ACCESSED, datetime.now(UTC) - timedelta(minutes=5), 0,
        (Participant("dr.c", True, (), user_name="Dr C", nap_id="10.7.7.7", nap_type=2),
         Participant("OTHERPACS", False, (Roles.SOURCE,))),
        "OTHERPACS", "R", (EventTypes.EMERGENCY_OVERRIDE_STARTED,),
        objects=(ParticipantObject(patient_id, ObjectIdTypes.PATIENT_NUMBER, type_code=1, role=1),),
    ))


@pytest.fixture
def scenario(archive, tmp_path: Path):  # type: ignore[no-untyped-def]
    a_objs, b_objs, c_objs = ct_series(ALICE, n=3), ct_series(BOB, n=1, seed=2), ct_series(CAROL, n=2, seed=3)
    list(archive.operator.store.ingest_many([(str(i), (lambda d=d: d)) for i, d in enumerate(a_objs + b_objs + c_objs)]))
    start = datetime.now(UTC)
    dr_a, dr_b = archive.services(DR_A), archive.services(DR_B)
    dr_a.query.find_studies()
    dr_a.query.find_studies()
    dr_a.retrieve.instances(_uids(a_objs))
    dr_a.retrieve.instance(_uids(b_objs)[0])
    dr_a.retrieve.instance(_uids(a_objs)[0], Action.EXPORT)
    dr_b.retrieve.instances(_uids(c_objs))
    dr_b.query.find_patients()
    for _ in range(2):
        with pytest.raises(AccessDenied):
            archive.services(MALLORY).retrieve.instance(_uids(a_objs)[1])
    now = datetime.now(UTC)
    with write_session(archive.ctx.engine) as s:
        archive.ctx.bus.publish(s, AccessRefused(Principal(PrincipalKind.DEVICE, "CT9", frozenset(), "10.0.0.99"), Action.CONNECT,
                                                 "association", "", "certificate is not registered", now))
        for kind in ("failure", "failure", "failure", "lockout"):
            archive.ctx.bus.publish(s, UserAuthentication("mallory", kind, now, "10.6.6.6", "wrong password"))
        archive.ctx.bus.publish(s, UserAuthentication("dr.a", "login", now, "10.0.0.1"))
    # integrity: one of Carol's blobs is damaged and refused on read
    with read_session(archive.ctx.engine) as s:
        blob_id = s.scalar(select(Instance.blob_id).where(Instance.sop_instance_uid == _uids(c_objs)[1]))
    path = archive.ctx.store._path(blob_id)
    raw = bytearray(path.read_bytes())
    raw[-30] ^= 4
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        archive.operator.retrieve.instance(_uids(c_objs)[1])
    # a break-glass access reported by another PACS, imported
    other = tmp_path / "otherpacs.xml"
    other.write_bytes(break_glass_from_another_pacs(ALICE.patient_id))
    assert cli("audit", "import", str(other)).exit_code == 0
    return start


def _search(*args: str) -> list[dict]:  # type: ignore[type-arg]
    r = cli("audit", "search", *args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_search_filters_and_formats(scenario, valid) -> None:
    mine = _search("--user", "dr.a")
    assert [(e["event"], e["action"]) for e in mine] == [
        ("query", "E"), ("query", "E"), ("instances-transferred", "R"), ("instances-transferred", "R"), ("export", "R"),
        ("user-authentication", "E"),
    ]
    assert {e["address"] for e in mine} == {"10.0.0.1"}
    alice = _search("--patient", ALICE.patient_id)
    assert [e["event"] for e in alice] == ["instances-transferred"] * 3 + ["instances-transferred", "export"] + ["security-alert"] * 2 + [
        "instances-accessed"]
    assert [e["user"] for e in alice] == ["local-operator"] * 3 + ["dr.a", "dr.a", "mallory", "mallory", "dr.c"]
    assert alice[-1]["origin"] == "import:otherpacs.xml"
    assert len(_search("--event", "query")) == 3
    assert len(_search("--event", "110112", "--user", "dr.b")) == 1
    assert len(_search("--event", "security-alert", "--user", "mallory")) == 2
    assert len(_search("--event", "user-authentication", "--failures")) == 4
    assert _search("--until", (scenario - timedelta(seconds=1)).isoformat(), "--user", "dr.a") == []
    assert len(_search("--since", scenario.isoformat(), "--user", "dr.a")) == 6
    assert len(_search("--since", "1h", "--event", "export")) == 1

    r = cli("audit", "search", "--user", "dr.b", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(row["event"], row["patients"]) for row in rows] == [("instances-transferred", CAROL.patient_id), ("query", "")]
    r = cli("audit", "search", "--patient", BOB.patient_id, "--format", "xml")
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        valid(line.encode())
    assert r.exit_code == 0 and cli("audit", "search", "--format", "yaml").exit_code == 2
    assert cli("audit", "search", "--event", "coffee").exit_code == 2


def test_report_counts_the_scenario_exactly(scenario, tmp_path: Path) -> None:
    out = tmp_path / "review.html"
    r = cli("audit", "report", "--period", "7d", "--out", str(out))
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(out.with_suffix(".csv").read_text().splitlines()))
    table = {(section, subject, metric): value for section, subject, metric, value, _origin in rows[1:]}

    def user(name: str) -> dict[str, int]:
        return {m: int(table[("accesses", name, m)]) for m in ("queries", "accesses", "instances", "exports", "refused", "patients")}

    assert user("dr.a") == {"queries": 2, "accesses": 3, "instances": 5, "exports": 1, "refused": 0, "patients": 2}
    assert user("dr.b") == {"queries": 1, "accesses": 1, "instances": 2, "exports": 0, "refused": 0, "patients": 1}
    assert user("mallory")["refused"] == 2 and user("CT9")["refused"] == 1
    assert user("dr.c") == {"queries": 0, "accesses": 1, "instances": 0, "exports": 0, "refused": 0, "patients": 1}
    counts = {section: int(table[(section, "", "count")])
              for section in ("failed_logins", "lockouts", "refused", "break_glass", "exports", "integrity", "damaged")}
    assert counts == {"failed_logins": 3, "lockouts": 1, "refused": 3, "break_glass": 1, "exports": 1, "integrity": 1, "damaged": 0}
    top = [(subject, int(table[("top_patients", subject, "accesses")]), int(table[("top_patients", subject, "users")]))
           for (section, subject, metric) in table if section == "top_patients" and metric == "accesses"]
    assert sorted(top, key=lambda t: -t[1]) == [(ALICE.patient_id, 3, 2), (BOB.patient_id, 1, 1), (CAROL.patient_id, 1, 1)]
    page = out.read_text()
    assert "Break-glass uses (1)" in page and "Failed logins (3)" in page and "<script" not in page
    etree.fromstring(page.replace("<!DOCTYPE html>", ""), etree.HTMLParser())


def test_reading_the_log_is_audited_and_reserved_to_the_security_officer(archive, scenario) -> None:
    before = len([e for e in entries(archive) if e.event_id == EventIds.AUDIT_LOG_USED.code])
    got = archive.services(OFFICER).audit.search(AuditFilter(user="dr.b"))
    assert len(got) == 2
    with pytest.raises(AccessDenied):
        archive.services(DR_A).audit.search(AuditFilter(patient=ALICE.patient_id))
    es = entries(archive)
    used = [e for e in es if e.event_id == EventIds.AUDIT_LOG_USED.code]
    assert len(used) == before + 1 and used[-1].user == "sec.officer"
    refusal = es[-1]
    assert refusal.event_id == EventIds.SECURITY_ALERT.code and refusal.user == "dr.a" and "audit-read" in refusal.message.outcome_description
    # every CLI read above (search, report) left its Audit Log Used record too
    assert _search("--event", "audit-log-used", "--user", "sec.officer")[0]["description"] == ""


def test_fhir_and_dicom_exports(archive, scenario, tmp_path: Path, valid) -> None:
    fhir = tmp_path / "audit.json"
    assert cli("audit", "export", "--format", "fhir", "--out", str(fhir)).exit_code == 0
    bundle = json.loads(fhir.read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    events = [e["resource"] for e in bundle["entry"]]
    assert len(events) == len(entries(archive, include_creation=True))  # with the export's own Audit Log Used, committed before reading
    for ev in events:
        assert ev["resourceType"] == "AuditEvent" and ev["recorded"] and ev["outcome"] in ("0", "4", "8", "12")
        assert ev["type"]["code"].isdigit() and ev["source"]["observer"]["display"]
        assert ev["agent"] and all(isinstance(a["requestor"], bool) and a["who"]["identifier"]["value"] for a in ev["agent"])
    exports = [ev for ev in events if ev["type"]["code"] == EventIds.EXPORT.code]
    (export,) = exports
    patient = next(e for e in export["entity"] if e.get("role", {}).get("code") == "1")
    assert patient["what"]["identifier"]["value"] == ALICE.patient_id and patient["type"]["code"] == "1"
    query = next(ev for ev in events if ev["type"]["code"] == EventIds.QUERY.code)
    (q,) = [e for e in query["entity"] if e["role"]["code"] == "24"]  # BALP Query entity: role 24, base64 query
    assert q["query"] and q["type"]["code"] == "2"

    dicom = tmp_path / "audit.xml"
    assert cli("audit", "export", "--format", "dicom", "--out", str(dicom), "--since", "1d").exit_code == 0
    lines = dicom.read_bytes().splitlines()
    for line in lines:
        valid(line)
    assert oct(dicom.stat().st_mode & 0o777) == "0o600"
