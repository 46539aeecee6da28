"""Real-time detection: a radiologist bulk-retrieves another department's studies over DICOMweb and is contained.

The baseline is a simulated hospital's ATNA trail imported into the archive (as another PACS
would send it), the context its CSV files; the misuse is real: DICOMweb retrievals through the
archive's own HTTPS server, scored by the engine ``serve`` runs.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from dicomguard.app.archive import Archive
from dicomguard.app.detection.engine import DetectionEngine
from dicomguard.core.access import Principal
from dicomguard.detect.context import Context, ContextError
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import Containment
from tests.audit.conftest import entries
from tests.conftest import PASSPHRASE
from tests.detect.simulator import audit_xml, simulate, write_context
from tests.dicom_factory import FakePatient, ct_series, dataset_of, to_bytes
from tests.serve_process import serve_process, stop_gracefully
from tests.web.conftest import start_server

pytestmark = pytest.mark.slow

ONCALL = '''// Site policy of this test: on-call radiologists may read every department's studies.
@id("oncall-radiologists")
permit (principal is User, action in [Action::"query", Action::"retrieve"], resource is Study)
when { principal.roles.contains("radiologist") };
'''


def _configure(home: Path) -> None:
    text = (home / "config.toml").read_text()
    text = re.sub(r"(?m)^baseline_days = .*$", "baseline_days = 366", text)
    text = re.sub(r'(?m)^(low|medium|high|critical) = "[a-z-]+"$', r'\1 = "step-up"', text)  # contain at every severity
    (home / "config.toml").write_text(text)
    (home / "policies" / "oncall.cedar").write_text(ONCALL)


def _prepare(archive: Archive, home: Path, tmp_path: Path) -> tuple[str, list]:  # type: ignore[type-arg]
    """Context and a fortnight of another PACS's trail imported; 18 CARDIOLOGY studies stored. Returns the snooper."""
    sim = simulate(5, n_users=40, n_patients=600, baseline_days=14, scoring_days=1, per_kind=1)
    shift = datetime.now(UTC) - timedelta(hours=12) - sim.baseline_until  # the simulated fortnight ends this morning
    baseline = [e._replace(time=e.time + shift) for e in sim.baseline]
    orders = [replace(o, ordered_at=o.ordered_at + shift) for o in sim.context.orders]
    write_context(Context(sim.context.users, sim.context.patients, orders), tmp_path / "ctx")
    snooper = next(u for u, info in sim.context.users.items() if info.role == "radiologist")
    for kind in ("users", "patients", "orders"):
        archive.operator.detection.import_context(kind, tmp_path / "ctx" / f"{kind}.csv")
    result = archive.operator.audit.import_messages([(f"line {i}", audit_xml(e)) for i, e in enumerate(baseline)],
                                                    origin="simulated-his")
    assert result.stored == len(baseline)
    cardiology = []
    for i in range(18):  # under the bulk step-up guard (20 studies an hour): the detector, not the guard, must act
        patient = FakePatient(f"CARD{i:04d}", f"HEARTLY^PATIENT{i}", "19700101", f"ACC{i:05d}")
        ds = dataset_of(ct_series(patient, n=1, seed=100 + i)[0])
        ds.InstitutionalDepartmentName = "CARDIOLOGY"
        archive.operator.store.ingest(to_bytes(ds))
        cardiology.append(ds)
    return snooper, cardiology


def test_bulk_retrieval_of_another_department_is_alerted_and_contained(home: Path, tmp_path: Path, valid) -> None:  # type: ignore[no-untyped-def]
    _configure(home)  # before the archive opens: its policies are loaded then
    with Archive.open(home, PASSPHRASE) as archive:
        snooper, cardiology = _prepare(archive, home, tmp_path)
        engine = DetectionEngine(archive.services(Principal.operator("detector")))
        assert engine.build()
        web, stop = start_server(archive)
        try:
            client = web.dicomweb_client(web.token(snooper, "radiologist", department="RADIOLOGY"))
            for ds in cardiology:
                client.retrieve_study(ds.StudyInstanceUID)
            last_access = time.monotonic()
            raised = engine.poll()
            latency = time.monotonic() - last_access
            assert raised >= 1 and latency < 2.0, (raised, latency)
            alerts = [a for a in archive.operator.detection.alerts() if a.user == snooper]
            assert alerts, archive.operator.detection.alerts()
            alert = alerts[0]
            assert alert.containment == "step-up"
            with read_session(archive.ctx.engine) as s:
                assert s.get(Containment, snooper) is not None
            # the next request needs a fresh second factor (RFC 9470)
            with web.http(web.token(snooper)) as http:
                refused = http.get(f"/dicomweb/studies/{cardiology[0].StudyInstanceUID}/metadata",
                                   headers={"Accept": "application/dicom+json"})
            assert refused.status_code == 401 and "insufficient_user_authentication" in refused.headers.get("WWW-Authenticate", "")
        finally:
            stop()
        shown = archive.operator.detection.show(alert.id)
        assert any(p.startswith("CARD") for p in shown.patients) and shown.explanation, (shown.kind, shown.patients, shown.explanation)
        [record] = [e for e in entries(archive) if b"access-anomaly" in e.xml][:1]
        valid(record.xml)


def test_a_bad_context_file_is_refused_by_line_and_nothing_is_stored(archive: Archive, tmp_path: Path) -> None:
    bad = tmp_path / "orders.csv"
    bad.write_text("accession,patient_id,study_uid,modality,ordering_user,department,ordered_at,reading_group\n"
                   "A1,P1,1.2.3,CT,u1,cardiology,2026-11-01T10:00:00Z,rad-body\n"
                   "A2,P2,1.2.4,CT,u1,cardiology,yesterday,rad-body\n")
    with pytest.raises(ContextError, match="orders.csv:3"):
        archive.operator.detection.import_context("orders", bad)
    (tmp_path / "users.csv").write_bytes("user_id,name,role,department\n".encode())
    with pytest.raises(ContextError, match="missing column"):
        archive.operator.detection.import_context("users", tmp_path / "users.csv")
    assert archive.operator.detection.context_files() == {}
    with write_session(archive.ctx.engine) as s:
        assert s.scalar(select(Containment)) is None


def test_detect_offline_command_writes_alerts_jsonl(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from dicomguard.cli.main import app as cli_app
    from tests.detect.simulator import write_audit

    sim = simulate(4, n_users=60, n_patients=1200, baseline_days=21, scoring_days=7, per_kind=1)
    write_context(sim.context, tmp_path / "ctx")
    write_audit(sim.events, tmp_path / "audit.log", syslog_every=5)  # XML lines and RFC 5424 syslog lines
    out = tmp_path / "alerts.jsonl"
    r = CliRunner().invoke(cli_app, ["detect", "--audit", str(tmp_path / "audit.log"), "--context", str(tmp_path / "ctx"),
                                     "--baseline-until", sim.baseline_until.isoformat(), "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    alerts = [json.loads(line) for line in out.read_text().splitlines()]
    assert alerts and all({"user", "start", "end", "kind", "severity", "patients", "explanation"} <= set(a) for a in alerts)
    assert {m.user for m in sim.misuse} & {a["user"] for a in alerts}
    (tmp_path / "bad.log").write_text("<AuditMessage><unclosed>\n")
    r = CliRunner().invoke(cli_app, ["detect", "--audit", str(tmp_path / "bad.log"), "--context", str(tmp_path / "ctx"),
                                     "--baseline-until", sim.baseline_until.isoformat(), "--out", str(tmp_path / "x.jsonl")])
    assert r.exit_code == 2 and "bad.log:1:" in "".join(r.output.split()) and not (tmp_path / "x.jsonl").exists()


def test_through_serve_the_alert_reaches_a_real_syslog_collector(archive: Archive, home: Path, tmp_path: Path, rsyslog,  # type: ignore[no-untyped-def]
                                                                  valid) -> None:
    import httpx

    from dicomguard.core.keyring import PURPOSE_IDENTITY
    from dicomguard.dimse.server import free_port
    from dicomguard.identity.tokens import create_token
    from dicomguard.identity.users import create_user
    from dicomguard.pki.store import CA_FILE, TLS_DIR
    from tests.audit.test_syslog import parse_message

    _configure(home)  # read by serve when it starts
    snooper, cardiology = _prepare(archive, home, tmp_path)
    with write_session(archive.ctx.engine) as s:
        create_user(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), snooper, "radiologist", department="RADIOLOGY")
        token = create_token(s, snooper, timedelta(hours=1))
    with open(home / "config.toml", "a") as f:
        f.write(f'\n[[audit.syslog]]\nhost = "127.0.0.1"\nport = {rsyslog.port}\nca = "{rsyslog.ca}"\n')
    port = free_port()
    with serve_process(https_port=port) as proc:
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=str(home / TLS_DIR / CA_FILE), trust_env=False,
                          headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            time.sleep(1.0)  # the engine learns the baseline at start
            statuses = [http.get(f"/dicomweb/studies/{ds.StudyInstanceUID}").status_code for ds in cardiology]
            # the detector scores while the user retrieves: the containment may already cut the run short (401 step-up)
            assert statuses[0] == 200 and set(statuses) <= {200, 401}, statuses
            deadline = time.monotonic() + 30
            contained = None
            while time.monotonic() < deadline and contained is None:
                with read_session(archive.ctx.engine) as s:
                    contained = s.get(Containment, snooper)
                time.sleep(0.2)
            assert contained is not None, "no containment within 30 s"
            refused = http.get(f"/dicomweb/studies/{cardiology[0].StudyInstanceUID}/metadata", headers={"Accept": "application/dicom+json"})
            assert refused.status_code == 401
        deadline = time.monotonic() + 30
        anomaly: list[bytes] = []
        while time.monotonic() < deadline and not anomaly:
            anomaly = [line for line in rsyslog.lines() if b"access-anomaly" in line]
            time.sleep(0.2)
        stop_gracefully(proc)
    assert anomaly, "the Security Alert did not reach the collector"
    valid(parse_message(anomaly[0]).payload())
