"""Forwarding to a real rsyslog (rsyslog-gnutls, mutual TLS): RFC 5424 over RFC 5425, nothing lost while it is down."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from dicomguard.audit.forwarder import SyslogForwarder
from dicomguard.audit.syslog import BOM, FACILITY_AUTHPRIV, MSGID, parse_message
from dicomguard.config import AuditSpoolSettings, SyslogCollector
from dicomguard.core.access import AccessDenied, Principal, PrincipalKind
from dicomguard.core.query import StudyFilter
from dicomguard.dimse.server import free_port
from tests.dicom_factory import ALICE, ct_series
from tests.serve_process import serve_process, stop_gracefully

pytestmark = pytest.mark.slow  # a real rsyslog over TLS

DR = Principal(PrincipalKind.USER, "dr.sys", frozenset({"radiologist"}), "10.0.0.3")
# RFC 5424 section 6, as a regular expression over the raw line rsyslog stored
RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)) (?P<host>[!-~]{1,255}) "
    rb"(?P<app>[!-~]{1,48}) (?P<procid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) (?P<sd>-|(\[[^\]]+\])+) (?P<msg>.*)$", re.S)
FAST = AuditSpoolSettings(max_backoff_s=1.0, send_timeout_s=10.0)


def _forwarder(archive, port: int, ca: Path | None = None, **kw) -> SyslogForwarder:  # type: ignore[no-untyped-def]
    f = SyslogForwarder(archive.ctx, SyslogCollector(host="127.0.0.1", port=port, ca=str(ca) if ca else "", **kw), spool=FAST)
    f.start()
    return f


def _sequence_ids(lines: list[bytes]) -> list[int]:
    return [int(parse_message(line).sd_param("meta", "sequenceId") or 0) for line in lines]


def test_messages_arrive_as_rfc5424_over_mutual_tls_and_validate(archive, rsyslog, valid) -> None:
    fw = _forwarder(archive, rsyslog.port, rsyslog.ca)
    try:
        archive.services(Principal(PrincipalKind.USER, "tech", frozenset({"technologist"}))).store.ingest(ct_series(ALICE, n=1)[0])
        archive.services(DR).query.find_studies(StudyFilter(description="LONG" * 10_000))  # a 50+ KiB message
        with pytest.raises(AccessDenied):
            archive.services(Principal(PrincipalKind.USER, "mallory")).erase.patient(ALICE.patient_id, "curiosity")
        lines = rsyslog.wait_for(4, timeout=30)
    finally:
        fw.stop()
    assert len(lines) == 4  # the archive's creation (written by init), then store, query, refused erasure
    assert _sequence_ids(lines) == [1, 2, 3, 4]
    assert b"archive created" in lines[0]
    lines = lines[1:]
    assert max(len(line) for line in lines) > 48 * 1024
    severities = []
    for line in lines:
        m = RFC5424.match(line)
        assert m, line[:200]
        assert (m["app"], m["msgid"]) == (b"dicomguard", MSGID.encode())
        pri = int(m["pri"])
        assert pri // 8 == FACILITY_AUTHPRIV
        severities.append(pri % 8)
        assert m["msg"].startswith(BOM)
        valid(m["msg"][len(BOM):])
    assert severities == [5, 5, 4]  # notice for successes, warning for the refusal (outcome 4)


def test_collector_down_then_back_all_1000_arrive_in_order_none_twice(archive, rsyslog) -> None:
    fw = _forwarder(archive, rsyslog.port, rsyslog.ca)
    try:
        client = archive.services(DR).query
        for _ in range(4):  # with the archive's creation record: 5
            client.find_studies()
        assert len(rsyslog.wait_for(5, timeout=30)) == 5
        rsyslog.stop()  # the collector goes away (its connections close)
        for _ in range(1000):
            client.find_studies()  # 1,000 actions, 1,000 audit records, spooled
        time.sleep(1.5)
        assert len(rsyslog.lines()) == 5
        assert fw.cursor == 5 and fw.last_error  # nothing acknowledged while down; the error is known
        rsyslog.start()
        started = time.monotonic()
        lines = rsyslog.wait_for(1005, timeout=120)
        elapsed = time.monotonic() - started
    finally:
        fw.stop()
    ids = _sequence_ids(lines)
    assert ids == list(range(1, 1006)), f"{len(ids)} arrived; missing {sorted(set(range(1, 1006)) - set(ids))[:10]}"
    assert elapsed < 60
    assert fw.cursor == 1005


def test_unreachable_or_untrusted_collectors_lose_nothing(archive, rsyslog, home, monkeypatch) -> None:
    """A collector nobody listens on, and one whose client certificate rsyslog's CA did not issue: records wait."""
    from typer.testing import CliRunner

    from dicomguard.cli.main import app
    from dicomguard.pki.authority import CertificateAuthority, cert_pem, key_to_pem

    other = CertificateAuthority.create("rogue")
    rogue = other.issue_server(["rogue"])
    (home / "rogue.pem").write_bytes(cert_pem(rogue.cert))
    (home / "rogue.key").write_bytes(key_to_pem(rogue.key))
    dead_port = free_port()
    dead = _forwarder(archive, dead_port)
    untrusted = _forwarder(archive, rsyslog.port, rsyslog.ca, cert=str(home / "rogue.pem"), key=str(home / "rogue.key"))
    try:
        for _ in range(7):
            archive.services(DR).query.find_studies()
        time.sleep(2.0)
    finally:
        dead.stop(drain_s=0.5)
        untrusted.stop(drain_s=0.5)
    assert rsyslog.lines() == [] and dead.cursor == 0 and untrusted.cursor == 0  # nothing, not even the creation record
    assert dead.last_error and untrusted.last_error
    # both as seen by `audit status` (collectors configured in the TOML file)
    with open(home / "config.toml", "a") as f:
        f.write(f'\n[[audit.syslog]]\nhost = "127.0.0.1"\nport = {dead_port}\n'
                f'\n[[audit.syslog]]\nhost = "127.0.0.1"\nport = {rsyslog.port}\ncert = "{home}/rogue.pem"\nkey = "{home}/rogue.key"\n')
    monkeypatch.setenv("DICOMGUARD_AUDIT__SPOOL__WARN_RECORDS", "5")
    r = CliRunner().invoke(app, ["audit", "status", "--json"], catch_exceptions=False)
    assert r.exit_code == 1, r.output  # lagging beyond warn_records
    import json

    doc = json.loads(r.stdout)
    assert doc["records"] == 8  # with the archive's creation record
    assert [(c["collector"], c["pending"], c["lagging"], bool(c["last_error"])) for c in doc["collectors"]] == [
        (f"127.0.0.1:{dead_port}", 8, True, True), (f"127.0.0.1:{rsyslog.port}", 8, True, True)]


def test_two_forwarders_for_one_collector_send_each_record_once(archive, rsyslog) -> None:
    """Several `serve` nodes with the same collector: a lease lets one forward at a time."""
    a, b = _forwarder(archive, rsyslog.port, rsyslog.ca), _forwarder(archive, rsyslog.port, rsyslog.ca)
    try:
        for _ in range(49):  # with the archive's creation record: 50
            archive.services(DR).query.find_studies()
        lines = rsyslog.wait_for(50, timeout=30)
    finally:
        a.stop()
        b.stop()
    assert _sequence_ids(lines) == list(range(1, 51))
    assert sorted([a.sent, b.sent]) == [0, 50]


def test_serve_forwards_its_start_and_stop_and_metrics_show_the_spool(archive, rsyslog, home, valid) -> None:

    from dicomguard.audit.forwarder import prometheus_text

    with open(home / "config.toml", "a") as f:
        f.write(f'\n[[audit.syslog]]\nhost = "127.0.0.1"\nport = {rsyslog.port}\nca = "{rsyslog.ca}"\n')
    with serve_process() as proc:
        stop_gracefully(proc)
    creation, *lines = rsyslog.wait_for(3, timeout=20)
    assert b"archive created" in creation
    assert [b"110120" in line for line in lines] == [True, False] and b"110121" in lines[1]
    for line in lines:
        valid(parse_message(line).payload())
    from dicomguard.app.archive import Archive
    from tests.conftest import PASSPHRASE

    with Archive.open(home, PASSPHRASE) as a:
        metrics = prometheus_text(a.ctx)
    assert "dicomguard_audit_records 3" in metrics
    assert f'dicomguard_audit_spool_pending{{collector="127.0.0.1:{rsyslog.port}"}} 0' in metrics
