"""Reading the audit trail a page at a time: newest first, bounded memory, a bounded scan for filters inside sealed records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dicomguard.audit.codes import EventIds, ObjectIdTypes
from dicomguard.audit.message import AuditMessage, Participant, ParticipantObject, to_xml
from dicomguard.audit.service import AuditStream
from dicomguard.audit.store import AuditFilter
from tests.console.conftest import ConsoleClient, Site

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _accesses(archive, n: int, study_of) -> None:  # type: ignore[no-untyped-def]
    """``n`` imported transfer messages of user dr.many a second apart from ``START``, message i naming study ``study_of(i)``."""
    def message(i: int) -> bytes:
        return to_xml(AuditMessage(
            EventIds.INSTANCES_TRANSFERRED, START + timedelta(seconds=i), 0,
            (Participant("dr.many", True, nap_id="192.0.2.10", nap_type=2), Participant("OTHERPACS", False)), "OTHERPACS", "R",
            objects=(ParticipantObject(study_of(i), ObjectIdTypes.STUDY_INSTANCE_UID, type_code=2, role=3),
                     ParticipantObject("EXT-PID-9", ObjectIdTypes.PATIENT_NUMBER, type_code=1, role=1))))

    result = archive.operator.audit.import_messages([(f"line {i}", message(i)) for i in range(n)], "import:stream-test")
    assert result.stored == n, result.rejected


def test_the_stream_pages_newest_first_and_stops_at_its_limit(archive, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(AuditStream, "PAGE", 7)
    _accesses(archive, 40, lambda i: f"1.2.840.99.{i % 4}")
    audit = archive.operator.audit
    every = list(audit.stream(AuditFilter(user="dr.many"), "test"))
    assert len(every) == 40 and [e.seq for e in every] == sorted((e.seq for e in every), reverse=True)
    assert [e.seq for e in audit.stream(AuditFilter(user="dr.many", limit=10), "test")] == [e.seq for e in every[:10]]
    studies = list(audit.stream(AuditFilter(user="dr.many", study="1.2.840.99.3", limit=5), "test"))
    assert len(studies) == 5 and all("1.2.840.99.3" in e.message.study_uids() for e in studies)
    bounded = audit.stream(AuditFilter(user="dr.many", study="1.2.840.99.0"), "test", scan_limit=14)
    found = list(bounded)
    assert bounded.truncated and len(found) == 3  # the 14 newest opened (two pages: messages 39 to 26): 36, 32 and 28 name it
    assert not (whole := audit.stream(AuditFilter(user="dr.many", study="1.2.840.99.0"), "test", scan_limit=100)).truncated
    assert len(list(whole)) == 10


def test_a_study_search_says_when_it_stopped_at_the_scan_limit(site: Site, client: ConsoleClient,  # type: ignore[no-untyped-def]
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomguard.web.console import audit as console_audit

    monkeypatch.setattr(console_audit, "SCAN_LIMIT", 500)
    monkeypatch.setattr(AuditStream, "PAGE", 100)
    _accesses(site.archive, 800, lambda i: "1.2.840.99.7" if i < 10 else "1.2.840.99.8")  # the study's only events are the oldest
    client.sign_in(site.accounts["officer"])
    r = client.post("/console/audit", {"study": "1.2.840.99.7"})
    assert r.status_code == 200 and "stopped there" in r.text and "1.2.840.99.7" not in r.text.split('id="audit-results"')[1]
    narrowed = client.post("/console/audit", {"study": "1.2.840.99.7", "user": "dr.many",
                                              "until": (START + timedelta(seconds=10)).isoformat()})
    assert narrowed.status_code == 200 and "stopped there" not in narrowed.text
    assert narrowed.text.count("<td>dr.many</td>") == 10
    export = client.post("/console/audit", {"user": "dr.many", "format": "csv"})
    assert export.status_code == 200 and len(export.text.splitlines()) == 801  # streamed in pages: header + every record
