"""Parsing PS3.15 A.5 audit lines into access events: each event kind, syslog wrapping, malformed and hostile input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dicomguard.detect import AccessEvent, parse_audit_line, read_audit_files
from tests.detect.simulator import audit_xml, write_audit

T = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)


def _event(action: str, **kw: object) -> AccessEvent:
    base: dict[str, object] = {"time": T, "user": "alice", "action": action, "patients": ("P1",), "study_uids": ("1.2.3",),
                               "instances": 12, "address": "10.0.0.7", "workstation": "WS-7"}
    base.update(kw)
    return AccessEvent(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("action", ["view", "retrieve", "export", "query"])
def test_access_kinds_round_trip(action: str) -> None:
    e = parse_audit_line(audit_xml(_event(action)).decode())
    assert e is not None
    assert (e.action, e.user, e.patients, e.study_uids, e.instances, e.address, e.workstation, e.time) == (
        action, "alice", ("P1",), ("1.2.3",), 12, "10.0.0.7", "WS-7", T)
    assert len(e.event_id) == 32


def test_login_and_failed_login() -> None:
    ok = parse_audit_line(audit_xml(_event("login", patients=(), study_uids=(), instances=0)))
    bad = parse_audit_line(audit_xml(_event("login-failed", patients=(), study_uids=(), instances=0, outcome=4)))
    assert ok is not None and ok.action == "login" and ok.patients == ()
    assert bad is not None and bad.action == "login-failed" and bad.outcome == 4


def test_break_glass_carries_reason() -> None:
    e = parse_audit_line(audit_xml(_event("break-glass", study_uids=(), instances=0, reason="trauma bay 3, unconscious")))
    assert e is not None and e.action == "break-glass" and e.patients == ("P1",)
    assert e.reason == "trauma bay 3, unconscious"


def test_requestor_is_the_user_and_issuer_is_dropped() -> None:
    xml = audit_xml(_event("view")).replace(b'ParticipantObjectID="P1"', b'ParticipantObjectID="P1^^^HOSP"')
    e = parse_audit_line(xml)
    assert e is not None and e.user == "alice" and e.patients == ("P1",)


def test_non_access_messages_are_none() -> None:
    start = (b'<?xml version="1.0" encoding="UTF-8"?><AuditMessage><EventIdentification EventActionCode="E" '
             b'EventDateTime="2026-03-02T10:00:00Z" EventOutcomeIndicator="0"><EventID csd-code="110100" '
             b'codeSystemName="DCM" originalText="Application Activity"/></EventIdentification>'
             b'<ActiveParticipant UserID="x" UserIsRequestor="true"/></AuditMessage>')
    assert parse_audit_line(start) is None
    # The archive receiving instances (110104 with action C) is a store, not an access.
    store = audit_xml(_event("retrieve")).replace(b'EventActionCode="R"', b'EventActionCode="C"')
    assert parse_audit_line(store) is None


def test_syslog_wrapped_line() -> None:
    from dicomguard.audit.syslog import format_message

    xml = audit_xml(_event("export"))
    line = format_message(xml, time=T, hostname="pacs", procid="12", outcome=0, seq=7)
    e = parse_audit_line(line.decode("utf-8"))
    assert e is not None and e.action == "export"
    tricky = b'<85>1 2026-03-02T10:30:00Z pacs dicomguard 12 IHE+RFC-3881 [meta x="a \\"]<AuditMessage>\\" b"][y z="1"] ' + xml
    e2 = parse_audit_line(tricky)
    assert e2 is not None and e2.action == "export"


def test_malformed_line_names_its_number(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    write_audit([_event("view"), _event("query")], path)
    with open(path, "ab") as f:
        f.write(b"<AuditMessage><EventIdentification>\n")
    with pytest.raises(ValueError, match=r"audit\.log:3: "):
        list(read_audit_files([path]))
    with pytest.raises(ValueError, match=r"^line 5: "):
        parse_audit_line("<AuditMessage>", 5)


@pytest.mark.parametrize("payload", [
    b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><AuditMessage>&x;</AuditMessage>',
    b'<?xml version="1.0"?><!DOCTYPE a SYSTEM "http://example.invalid/a.dtd"><AuditMessage/>',
    b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><AuditMessage>&x;</AuditMessage>',
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY x "y">]><AuditMessage>&x;</AuditMessage>'.encode("utf-16"),
])
def test_dtd_and_entities_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_audit_line(payload)


def test_overlong_line_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_bytes(b"<AuditMessage>" + b" " * (1024 * 1024 + 10) + b"</AuditMessage>\n")
    with pytest.raises(ValueError, match=r"big\.log:1: .*longer"):
        list(read_audit_files(path))


def _rows(events: list[AccessEvent]) -> list[tuple[object, ...]]:
    return [(e.time, e.user, e.action, e.patients, e.study_uids, e.instances, e.address, e.workstation, e.outcome,
             e.reason, e.event_id) for e in events]


def _trail(tmp_path: Path, n: int) -> tuple[Path, list[AccessEvent]]:
    from datetime import timedelta

    events = [_event(["view", "retrieve", "export", "query"][i % 4], time=T + timedelta(seconds=i), user=f"u{i % 7}",
                     patients=(f"P{i}",)) for i in range(n)]
    path = tmp_path / "trail.log"
    write_audit(events, path, syslog_every=3)
    return path, events


def test_parallel_reading_gives_the_same_events_across_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges cut mid-line, blank and CRLF lines: every event once, in file order, as one process reads them."""
    import dicomguard.detect.events as events_module

    path, _ = _trail(tmp_path, 300)
    with open(path, "ab") as f:
        f.write(b"\n\r\n")
    data = path.read_bytes().replace(b"\n", b"\r\n", 40)
    path.write_bytes(data)
    monkeypatch.setattr(events_module, "_MIN_CHUNK", 997)  # many ranges, none aligned to a line (workers are forked)
    serial = list(read_audit_files(path))
    parallel = list(read_audit_files(path, workers=3))
    assert len(serial) == 300
    assert _rows(parallel) == _rows(serial)


def test_parallel_reading_reports_the_first_bad_line_with_its_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad line deep in a later range is reported as FILE:LINE, the same as by one process; nothing is returned."""
    import dicomguard.detect.events as events_module

    path, _ = _trail(tmp_path, 200)
    lines = path.read_bytes().split(b"\n")
    lines.insert(150, b"<AuditMessage><EventIdentification>")
    lines.insert(170, b"<AuditMessage>")  # a second bad line: only the first is named
    path.write_bytes(b"\n".join(lines))
    monkeypatch.setattr(events_module, "_MIN_CHUNK", 1500)
    with pytest.raises(ValueError) as serial:
        list(read_audit_files(path))
    with pytest.raises(ValueError) as parallel:
        list(read_audit_files(path, workers=2))
    assert str(serial.value).startswith(f"{path}:151: ")
    assert str(parallel.value) == str(serial.value)


def test_parallel_reading_refuses_an_overlong_line_in_a_later_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line over the limit is refused by the range it starts in; the next range skips it without holding it whole."""
    import dicomguard.detect.events as events_module

    path, _ = _trail(tmp_path, 20)
    with open(path, "ab") as f:
        f.write(b"<AuditMessage>" + b" " * (1024 * 1024 + 10) + b"</AuditMessage>\n")
    monkeypatch.setattr(events_module, "_MIN_CHUNK", 4096)
    with pytest.raises(ValueError, match=rf"{path.name}:21: .*longer"):
        list(read_audit_files(path, workers=2))
