"""Audit messages from other systems: ``audit import`` files and the syslog-TLS listener; validated, stored, ledgered, marked."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree
from typer.testing import CliRunner

from dicomguard.app.verify import verify_archive
from dicomguard.audit.codes import EventIds, ObjectIdTypes
from dicomguard.audit.listener import AuditListener
from dicomguard.audit.message import (
    AuditMessage,
    Participant,
    ParticipantObject,
    to_xml,
)
from dicomguard.audit.syslog import format_message, frame
from dicomguard.cli.main import app
from dicomguard.index.db import write_session
from dicomguard.pki.devices import DeviceRegistry
from dicomguard.pki.tls import client_context
from tests.audit.conftest import entries

runner = CliRunner()


def foreign(n: int, user: str = "tech@otherpacs", patient: str = "EXT-PID-1") -> bytes:
    """A DICOM Instances Transferred message as another PACS (dcm4chee, say) would send it."""
    return to_xml(AuditMessage(
        EventIds.INSTANCES_TRANSFERRED, datetime(2026, 1, 5, 10, n % 60, tzinfo=UTC), 0,
        (Participant(user, True, nap_id="192.0.2.10", nap_type=2), Participant("OTHERPACS", False)), "OTHERPACS", "R",
        objects=(ParticipantObject(f"1.2.3.{n}", ObjectIdTypes.STUDY_INSTANCE_UID, type_code=2, role=3),
                 ParticipantObject(patient, ObjectIdTypes.PATIENT_NUMBER, type_code=1, role=1)),
    ))


def test_import_files_validates_marks_dedups_and_ledgers(archive, tmp_path: Path, valid) -> None:
    single = tmp_path / "one.xml"
    single.write_bytes(etree.tostring(etree.fromstring(foreign(1)), pretty_print=True, xml_declaration=True, encoding="UTF-8"))
    lines = tmp_path / "collector.log"  # what a collector writes: raw RFC 5424 lines, and bare XML lines
    lines.write_bytes(
        format_message(foreign(2), time=datetime.now(UTC), hostname="otherpacs", procid="1", outcome=0, seq=9) + b"\n"
        + foreign(3, user="dr.remote", patient="EXT-PID-2") + b"\n\n"
        + b'<AuditMessage><EventIdentification EventOutcomeIndicator="0"/></AuditMessage>\n'  # schema-invalid
        + b"not a syslog line at all\n"
        + b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><AuditMessage>&e;</AuditMessage>\n"
    )
    r = runner.invoke(app, ["audit", "import", str(single), str(lines), "--json"], catch_exceptions=False)
    assert r.exit_code == 1  # some were rejected
    result = json.loads(r.stdout)
    assert (result["stored"], result["duplicates"], result["rejected"]) == (3, 0, 3)
    reasons = [x["reason"] for x in result["rejections"]]
    assert "PS3.15 A.5.1" in reasons[0] and "RFC 5424" in reasons[1] and "DTD" in reasons[2]
    assert [x["message"] for x in result["rejections"]] == ["collector.log:4", "collector.log:5", "collector.log:6"]

    es = entries(archive)
    assert [(e.origin, e.user, e.message.patient_ids()) for e in es] == [
        ("import:one.xml", "tech@otherpacs", ["EXT-PID-1"]),
        ("import:collector.log", "tech@otherpacs", ["EXT-PID-1"]),
        ("import:collector.log", "dr.remote", ["EXT-PID-2"]),
    ]
    for e in es:
        valid(e.xml)
    assert es[1].xml == foreign(2)  # the bytes received are kept, not rewritten
    # the same messages again: stored once
    r = runner.invoke(app, ["audit", "import", str(single), "--json"], catch_exceptions=False)
    assert json.loads(r.stdout)["duplicates"] == 1
    # searchable like ours, and ledgered like ours
    r = runner.invoke(app, ["audit", "search", "--patient", "EXT-PID-2"], catch_exceptions=False)
    assert [x["user"] for x in json.loads(r.stdout)] == ["dr.remote"]
    assert verify_archive(archive.ctx, archive.ledger.verifier).ok


def test_our_own_export_imports_back(archive, tmp_path: Path) -> None:
    from dicomguard.core.access import Principal, PrincipalKind

    archive.services(Principal(PrincipalKind.USER, "dr.x", frozenset({"radiologist"}))).query.find_studies()
    out = tmp_path / "export.xml"
    assert runner.invoke(app, ["audit", "export", "--format", "dicom", "--out", str(out)], catch_exceptions=False).exit_code == 0
    r = runner.invoke(app, ["audit", "import", str(out), "--json"], catch_exceptions=False)
    assert json.loads(r.stdout)["stored"] == 3  # the archive's creation, the query, and the export's own Audit Log Used


def _tls_client(archive, issue, ae: str, operations: tuple[str, ...] = ("audit-relay",)):  # type: ignore[no-untyped-def]
    creds = issue(ae, operations)
    return client_context(creds.ca.read_bytes(), creds.cert.read_bytes(), creds.key.read_bytes(), check_hostname=False)


def test_syslog_tls_listener_accepts_messages_from_other_systems(archive, issue, valid) -> None:
    listener = AuditListener(archive.ctx, archive.services, "127.0.0.1", 0)
    listener.start()
    try:
        ctx = _tls_client(archive, issue, "OTHERPACS")
        msgs = [format_message(foreign(i), time=datetime.now(UTC), hostname="otherpacs", procid="7", outcome=0, seq=i) for i in range(1, 4)]
        bad = format_message(b"<AuditMessage/>", time=datetime.now(UTC), hostname="otherpacs", procid="7", outcome=0, seq=4)
        stream = b"".join(frame(m) for m in msgs[:2] + [bad] + msgs[2:])
        with socket.create_connection(("127.0.0.1", listener.port)) as raw, ctx.wrap_socket(raw) as sock:
            sock.sendall(stream[:100])  # frames split across writes
            time.sleep(0.1)
            sock.sendall(stream[100:])
            deadline = time.monotonic() + 10
            while listener.stats.stored + listener.stats.rejected < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
        # a client without a certificate is refused at the handshake
        plain_ctx = client_context((archive.home / "tls" / "ca.pem").read_bytes(), check_hostname=False)
        try:
            with socket.create_connection(("127.0.0.1", listener.port)) as raw, plain_ctx.wrap_socket(raw) as sock:
                sock.sendall(frame(msgs[0]))
                sock.recv(1)
        except OSError:
            pass
        # nor is a revoked device
        with write_session(archive.ctx.engine) as s:  # revoked behind the test's back: no administration record
            DeviceRegistry.revoke(s, "OTHERPACS")
        with socket.create_connection(("127.0.0.1", listener.port)) as raw, ctx.wrap_socket(raw) as sock:
            try:
                sock.sendall(frame(msgs[0].replace(b"1.2.3.1", b"1.2.3.9")))
                sock.recv(1)
            except OSError:
                pass
        time.sleep(0.3)
    finally:
        listener.stop()
    assert (listener.stats.stored, listener.stats.rejected, listener.stats.duplicates) == (3, 1, 0)
    assert listener.stats.refused_peers == 1  # the revoked device, recorded as a refused connection
    es = [e for e in entries(archive) if e.origin != "local"]
    assert len(es) == 3 and {e.origin for e in es} == {"syslog:OTHERPACS@127.0.0.1"}
    for e in es:
        valid(e.xml)
    assert verify_archive(archive.ctx, archive.ledger.verifier).ok
