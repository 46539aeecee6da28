"""Audit forgery by a device: sending audit messages is an explicit device permission, a device asserts events only
about itself unless registered as an audit source for others, and an imported record is always shown as asserted by
its source (search, review report, FHIR export), never as the archive's own observation.

Each test talks to the real syslog-TLS listener (RFC 5425, mutual TLS) with a registered device's certificate.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomguard.audit.codes import EventIds, EventTypes, ObjectIdTypes, Roles
from dicomguard.audit.imports import check_message, claims_of
from dicomguard.audit.listener import AuditListener
from dicomguard.audit.message import (
    AuditMessage,
    Participant,
    ParticipantObject,
    to_xml,
)
from dicomguard.audit.syslog import format_message, frame
from dicomguard.cli.main import app
from dicomguard.core.access import Action, Principal, PrincipalKind, Resource
from dicomguard.pki.authority import cert_pem, key_to_pem
from dicomguard.pki.devices import DEFAULT_OPERATIONS
from dicomguard.pki.store import load_tls_material
from dicomguard.pki.tls import client_context
from tests.audit.conftest import entries

runner = CliRunner()
CLINICIAN = "dr.house"
PATIENT = "PID-FORGED-1"


def cli(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def search(*args: str) -> list[dict]:  # type: ignore[type-arg]
    r = cli("audit", "search", *args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def emergency_override(requestor: str, source: str, *others: Participant, alt: str | None = None) -> bytes:
    """A.5.3.11 Security Alert "Emergency Override Started" (110127), as a break-glass of ``requestor``."""
    return to_xml(AuditMessage(
        EventIds.SECURITY_ALERT, datetime.now(UTC) - timedelta(minutes=1), 0,
        (Participant(requestor, True, alt_user_id=alt, nap_id="10.9.9.9", nap_type=2), *others), source, "E",
        (EventTypes.EMERGENCY_OVERRIDE_STARTED,), "emergency: patient unconscious",
        objects=(ParticipantObject(PATIENT, ObjectIdTypes.PATIENT_NUMBER, type_code=1, role=1),),
    ))


def transfer_by_itself(ae: str, archive_ae: str, n: int = 1) -> bytes:
    """A.5.3.7 Instances Transferred as a modality reports its own sending to this archive (named as Destination)."""
    return to_xml(AuditMessage(
        EventIds.INSTANCES_TRANSFERRED, datetime.now(UTC) - timedelta(minutes=2), 0,
        (Participant(ae, True, (Roles.SOURCE,), nap_id="10.1.1.1", nap_type=2), Participant(archive_ae, False, (Roles.DESTINATION,))),
        ae, "C",
        objects=(ParticipantObject(f"1.2.826.0.1.3680043.9.7.{n}", ObjectIdTypes.STUDY_INSTANCE_UID, type_code=2, role=3),),
    ))


@pytest.fixture
def listener(archive) -> Iterator[AuditListener]:  # type: ignore[no-untyped-def]
    lst = AuditListener(archive.ctx, archive.services, "127.0.0.1", 0)
    lst.start()
    try:
        yield lst
    finally:
        lst.stop()


def _tls(ca: bytes, cert: bytes, key: bytes):  # type: ignore[no-untyped-def]
    return client_context(ca, cert, key, check_hostname=False)


def device(issue, ae: str, operations: tuple[str, ...]):  # type: ignore[no-untyped-def]
    creds = issue(ae, operations)
    return _tls(creds.ca.read_bytes(), creds.cert.read_bytes(), creds.key.read_bytes())


def send(listener: AuditListener, tls, *messages: bytes, refused_peer: bool = False) -> None:  # type: ignore[no-untyped-def]
    """All ``messages`` in one write (one TLS record, one packet), then wait until the listener has handled each."""
    st = listener.stats
    before = st.stored + st.duplicates + st.rejected + st.refused_peers
    stream = b"".join(frame(format_message(m, time=datetime.now(UTC), hostname="dev", procid="1", outcome=0, seq=i))
                      for i, m in enumerate(messages, 1))
    with socket.create_connection(("127.0.0.1", listener.port)) as raw, tls.wrap_socket(raw) as sock:
        try:
            sock.sendall(stream)
        except OSError:
            assert refused_peer
        expect = 1 if refused_peer else len(messages)
        deadline = time.monotonic() + 15
        while st.stored + st.duplicates + st.rejected + st.refused_peers < before + expect and time.monotonic() < deadline:
            time.sleep(0.05)
    assert st.stored + st.duplicates + st.rejected + st.refused_peers == before + expect


def _report(tmp_path: Path) -> tuple[list[dict[str, str]], str]:
    out = tmp_path / "review.html"
    assert cli("audit", "report", "--period", "1d", "--out", str(out)).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.with_suffix(".csv").read_text())))
    return rows, out.read_text()


def _refusals(archive, sender: str) -> list:  # type: ignore[no-untyped-def,type-arg]
    return [e for e in entries(archive) if e.event_id == EventIds.SECURITY_ALERT.code and e.user == sender
            and "audit-send refused" in (e.message.outcome_description or "")]


def test_a_store_only_modality_cannot_forge_a_clinicians_emergency_override(archive, issue, listener, tmp_path: Path) -> None:
    ct = device(issue, "CT1", ("echo", "store"))
    forged = emergency_override(CLINICIAN, "CT1", Participant("CT1", False))
    check_message(forged)  # valid PS3.15: refused for who sent it, not for its form
    send(listener, ct, forged, transfer_by_itself("CT1", archive.settings.archive.ae_title))
    # sending audit messages is not a store permission: both refused, even the one about itself
    assert (listener.stats.stored, listener.stats.rejected) == (0, 2)
    assert search("--user", CLINICIAN) == [] and search("--patient", PATIENT) == []
    assert [e for e in entries(archive) if e.origin != "local"] == []
    rows, page = _report(tmp_path)
    assert next(r for r in rows if r["section"] == "break_glass" and r["metric"] == "count")["value"] == "0"
    assert "Break-glass uses (0)" in page and CLINICIAN not in [r["subject"] for r in rows]
    # each refusal is a Security Alert naming the device as the one who acted; the claim is words in its description
    refusals = _refusals(archive, "CT1")
    assert len(refusals) == 2
    assert f"'{CLINICIAN}'" in refusals[0].message.outcome_description and refusals[0].message.patient_ids() == []
    assert all(e.origin == "local" and e.message.requestor().user_id == "CT1" for e in refusals)


def test_a_device_flooding_refused_messages_is_cut_off_after_a_bounded_number_of_alerts(archive, issue, listener) -> None:  # type: ignore[no-untyped-def]
    """A store-only modality sending 100 forged alerts on one connection: at most MAX_REFUSED_SENDS are decided
    (each a recorded Security Alert), then the connection is closed; the trail cannot be flooded through it."""
    from dicomguard.audit.listener import MAX_REFUSED_SENDS

    ct = device(issue, "CT9", ("echo", "store"))
    forged = [emergency_override(f"dr.{n}", "CT9", Participant("CT9", False)) for n in range(100)]
    stream = b"".join(frame(format_message(m, time=datetime.now(UTC), hostname="dev", procid="1", outcome=0, seq=i))
                      for i, m in enumerate(forged, 1))
    with socket.create_connection(("127.0.0.1", listener.port)) as raw, ct.wrap_socket(raw) as sock:
        sock.sendall(stream)
        sock.settimeout(15)
        closed = False
        try:
            closed = sock.recv(1) == b""
        except (ssl.SSLError, ConnectionError):
            closed = True
    assert closed  # the listener hung up
    assert listener.stats.stored == 0 and listener.stats.rejected == MAX_REFUSED_SENDS
    assert len(_refusals(archive, "CT9")) == MAX_REFUSED_SENDS


def test_a_device_registered_for_audit_asserts_events_about_itself_only(archive, issue, listener) -> None:
    us = archive.settings.archive.ae_title
    ct = device(issue, "CT2", ("echo", "store", "audit"))
    own = transfer_by_itself("CT2", us)
    send(listener, ct,
         own,
         emergency_override(CLINICIAN, "CT2", Participant("CT2", False)),                 # a clinician as requestor
         emergency_override(CLINICIAN, "CT2", alt="AETITLES=CT2"),                         # AlternativeUserID proves nothing
         emergency_override("CT2", us),                                                    # claims to be the archive's observation
         emergency_override("CT2", "CT2", Participant(us, True)))                          # names the archive as the one who acted
    assert (listener.stats.stored, listener.stats.rejected) == (1, 4)
    (mine,) = search("--user", "CT2", "--origin", "syslog:CT2@127.0.0.1")
    assert mine["event"] == "instances-transferred" and mine["asserted_by"] == "device CT2 (syslog-TLS from 127.0.0.1)"
    assert search("--user", CLINICIAN) == [] and search("--patient", PATIENT) == []
    stored = [e for e in entries(archive) if e.origin != "local"]
    assert [e.xml for e in stored] == [own]
    assert len(_refusals(archive, "CT2")) == 4


def test_an_audit_relay_is_shown_as_asserting_everywhere(archive, issue, listener, tmp_path: Path) -> None:
    pacs = device(issue, "PACS1", ("audit-relay",))
    relayed = emergency_override(CLINICIAN, "OTHERPACS", Participant("PACS1", False))
    in_our_name = emergency_override(CLINICIAN, archive.settings.archive.ae_title)  # would pass for ours once forwarded
    send(listener, pacs, relayed, in_our_name)
    assert (listener.stats.stored, listener.stats.rejected) == (1, 1)
    assert "pass for this archive's own record" in _refusals(archive, "PACS1")[0].message.outcome_description
    archive.services(Principal(PrincipalKind.USER, CLINICIAN, frozenset({"radiologist"}))).query.find_studies()  # observed here

    # search: the claimed user's record says who asserts it; the archive's own record of the same user says nothing
    found = search("--user", CLINICIAN)
    assert [(e["event"], e["asserted_by"]) for e in found] == [
        ("security-alert", "device PACS1 (syslog-TLS from 127.0.0.1)"), ("query", None)]
    assert found[0]["origin"] == "syslog:PACS1@127.0.0.1"
    r = cli("audit", "search", "--user", CLINICIAN, "--format", "csv")
    assert [row["asserted_by"] for row in csv.DictReader(io.StringIO(r.stdout))] == ["device PACS1 (syslog-TLS from 127.0.0.1)", ""]
    assert "1 of them asserted by other systems" in r.output

    # review report: the break-glass row and the user's activity carry their origin
    rows, page = _report(tmp_path)
    (bg,) = [r for r in rows if r["section"] == "break_glass" and r["subject"] == CLINICIAN]
    assert bg["origin"] == "asserted by device PACS1 (syslog-TLS from 127.0.0.1)"
    origins = {r["origin"] for r in rows if r["section"] == "accesses" and r["subject"] == CLINICIAN}
    assert origins == {"archive", "asserted by device PACS1 (syslog-TLS from 127.0.0.1)"}  # counted apart, never merged
    assert "Break-glass uses (1)" in page and "<th>origin</th>" in page
    assert "asserted by device PACS1 (syslog-TLS from 127.0.0.1)</td>" in page

    # FHIR: the reporting system (source.observer) is the relay, an informant agent; the claimed AuditSourceID kept as such
    fhir = tmp_path / "audit.json"
    assert cli("audit", "export", "--format", "fhir", "--out", str(fhir)).exit_code == 0
    events = [e["resource"] for e in json.loads(fhir.read_text())["entry"]]
    (ev,) = [e for e in events if any(s.get("code") == EventTypes.EMERGENCY_OVERRIDE_STARTED.code for s in e.get("subtype", []))]
    assert ev["source"]["observer"]["type"] == "Device" and ev["source"]["observer"]["identifier"]["value"] == "PACS1"
    assert ev["source"]["extension"] == [{"url": "urn:dicomguard:fhir:claimed-audit-source-id", "valueString": "OTHERPACS"}]
    (informant,) = [a for a in ev["agent"] if _agent_type(a) == "INF"]
    assert informant["who"]["identifier"]["value"] == "PACS1" and informant["requestor"] is False
    assert informant["network"]["address"] == "127.0.0.1"
    own = [e for e in events if e is not ev]
    assert own and all("extension" not in e["source"] and "type" not in e["source"]["observer"] for e in own)
    assert not any(_agent_type(a) == "INF" for e in own for a in e["agent"])


def _agent_type(agent: dict) -> str | None:  # type: ignore[type-arg]
    return agent.get("type", {}).get("coding", [{}])[0].get("code")


def test_a_bad_message_in_a_packet_loses_no_good_one(archive, issue, listener) -> None:
    us = archive.settings.archive.ae_title
    ct = device(issue, "CT3", ("audit",))
    first, second, third = (transfer_by_itself("CT3", us, n) for n in (1, 2, 3))
    send(listener, ct, first, emergency_override(CLINICIAN, "CT3"), b"<AuditMessage/>", second)
    assert (listener.stats.stored, listener.stats.rejected) == (2, 2)
    send(listener, ct, third)  # and the listener goes on
    assert [e.xml for e in entries(archive) if e.origin != "local"] == [first, second, third]
    assert search("--user", CLINICIAN) == []


def test_an_unregistered_certificate_is_refused_and_recorded(archive, listener) -> None:
    """A certificate of the archive CA that is registered to no device sends nothing (it did before: any CA client could)."""
    material = load_tls_material(archive.home, archive.settings, archive.ctx.keyring)
    issued = material.authority.issue_device("ROGUE", "never registered")  # type: ignore[union-attr]
    tls = _tls(material.client_ca_pem, cert_pem(issued.cert), key_to_pem(issued.key))
    send(listener, tls, emergency_override(CLINICIAN, "ROGUE"), refused_peer=True)
    assert (listener.stats.stored, listener.stats.refused_peers) == (0, 1)
    assert search("--user", CLINICIAN) == []
    (alert,) = [e for e in entries(archive) if e.user == "ROGUE"]
    assert "not registered" in alert.message.outcome_description


def test_sending_audit_is_an_explicit_operation_decided_by_policy(archive) -> None:
    assert "audit" not in DEFAULT_OPERATIONS and "audit-relay" not in DEFAULT_OPERATIONS
    decide = archive.ctx.authorizer.decide

    def may(operations: tuple[str, ...], about_others: bool) -> bool:
        p = Principal(PrincipalKind.DEVICE, "X", frozenset(), None, {"operations": operations, "department": ""})
        return decide(p, Action.AUDIT_SEND, Resource.audit_message("t", about_others=about_others)).allowed

    assert [may(ops, False) for ops in (DEFAULT_OPERATIONS, ("echo", "store", "query", "retrieve"), ("audit",), ("audit-relay",))] == [
        False, False, True, True]
    assert [may(ops, True) for ops in (DEFAULT_OPERATIONS, ("audit",), ("audit-relay",))] == [False, False, True]
    relay = Principal(PrincipalKind.DEVICE, "X", frozenset(), None, {"operations": ("audit-relay",), "department": ""})
    assert not decide(relay, Action.AUDIT_SEND, Resource.audit_message("t", about_others=True, as_archive=True)).allowed
    user = Principal(PrincipalKind.USER, "sec", frozenset({"security_officer", "admin"}))
    assert not decide(user, Action.AUDIT_SEND, Resource.audit_message("t", about_others=False)).allowed
    # the CLI registers the operations and explains the decision
    r = cli("device", "add", "--ae", "PACS9", "--name", "a PACS", "--operations", "audit-relay", "--out", str(archive.home / "pacs9"))
    assert r.exit_code == 0, r.output
    r = cli("policy", "test", "--principal", "device:PACS9", "--action", "audit-send", "--resource", "audit-message:about-others")
    assert r.exit_code == 0 and "device-audit-relay" in r.output
    r = cli("policy", "test", "--principal", "device:PACS9", "--action", "audit-send", "--resource", "audit-message:as-archive")
    assert r.exit_code == 1
    assert cli("device", "add", "--ae", "CT9", "--name", "x", "--operations", "store,audit-everything",
               "--out", str(archive.home / "ct9")).exit_code != 0


def test_what_a_message_claims_beyond_its_sender() -> None:
    us = {"DICOMGUARD", "DG-AUDIT"}  # the archive's AE title and AuditSourceID

    def claims(xml: bytes) -> tuple[tuple[str, ...], bool]:
        c = claims_of(check_message(xml), "CT1", us)
        return c.others, c.as_archive

    assert claims(transfer_by_itself("CT1", "DICOMGUARD")) == ((), False)  # the archive as Destination: about itself
    assert claims(emergency_override(CLINICIAN, "CT1", Participant("CT1", False))) == ((CLINICIAN,), False)
    assert claims(emergency_override("CT1", "CT1", alt="AETITLES=CT1")) == ((), False)
    assert claims(emergency_override(CLINICIAN, "CT1", alt="AETITLES=CT1")) == ((CLINICIAN,), False)
    assert claims(emergency_override("CT1", "OTHER")) == (("OTHER",), False)
    assert claims(emergency_override("CT1", "CT1", Participant("DICOMGUARD", True))) == (("DICOMGUARD",), True)
    assert claims(emergency_override("CT1", "DG-AUDIT")) == (("DG-AUDIT",), True)
