"""The detector inside ``serve`` over time: it waits for a first context, learns again on schedule, and carries
open alerts and its position in the trail across the re-learning."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dicomguard.app.archive import Archive
from dicomguard.app.detection.engine import DetectionEngine
from dicomguard.core.access import Principal
from dicomguard.detect import AccessEvent
from tests.detect.simulator import audit_xml

USERS = "user_id,name,role,department,home_address\nasmith,Smith^Ann,radiologist,RADIOLOGY,1 Elm Street\n"
PATIENTS = "patient_id,name,address,vip\nP1,Smith^Ann,1 Elm Street,false\nP2,Roe^Jane,4 Birch Close,false\n"


def _access(archive: Archive, patient: str, when: datetime, label: str) -> None:
    event = AccessEvent(when, "asmith", "view", (patient,), ("1.2.3",), 1, "10.0.0.7", "WS-7")
    result = archive.operator.audit.import_messages([(label, audit_xml(event))], origin="other-pacs")
    assert result.stored == 1


def _context(archive: Archive, tmp_path: Path) -> None:
    for kind, text in (("users", USERS), ("patients", PATIENTS)):
        (tmp_path / f"{kind}.csv").write_text(text)
        archive.operator.detection.import_context(kind, tmp_path / f"{kind}.csv")


def _self_access_alerts(archive: Archive) -> list[object]:
    return [a for a in archive.operator.detection.alerts() if a.user == "asmith" and a.kind == "self-access"]


def test_the_engine_waits_for_a_first_context_then_scores(archive: Archive, tmp_path: Path) -> None:
    """A site fed only by HL7 v2 starts ``serve`` before any context exists: the engine starts scoring once it arrives."""
    engine = DetectionEngine(archive.services(Principal.operator("detector")))
    engine.CONTEXT_CHECK_S = 0.05  # type: ignore[misc]
    stop = threading.Event()
    assert engine.start(stop)  # detection is on: no context is no reason to give up
    try:
        time.sleep(0.3)
        assert engine.detector is None and engine.scored == 0
        _context(archive, tmp_path)
        deadline = time.monotonic() + 60
        while engine.detector is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.detector is not None  # learned: what is recorded from now on is scored
        # The two imports are two commits: the engine may have learned after the first one, and then reloads the
        # context only every CONTEXT_CHECK_S; the access is scored against the whole context once it is loaded.
        current = engine.services.detection.context_version()
        while engine._context_version != current and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine._context_version == current
        _access(archive, "P1", datetime.now(UTC), "self")
        while not _self_access_alerts(archive) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_self_access_alerts(archive)) == 1
    finally:
        stop.set()
        engine.join(10)


def test_relearning_keeps_the_position_and_the_open_alert(archive: Archive, tmp_path: Path) -> None:
    """Learning again neither scores a record twice nor skips one, and a session in progress stays one alert."""
    _context(archive, tmp_path)
    now = datetime.now(UTC)
    for i in range(3):
        _access(archive, "P2", now - timedelta(days=2, hours=i), f"old {i}")
    engine = DetectionEngine(archive.services(Principal.operator("detector")))
    assert engine.build()
    learned_until = engine.last_seq
    _access(archive, "P1", now - timedelta(minutes=5), "self 1")
    assert engine.poll() == 1 and len(_self_access_alerts(archive)) == 1
    scored, seq, previous = engine.scored, engine.last_seq, engine.detector
    assert seq > learned_until

    engine._relearn()
    assert engine.detector is not previous  # learned again, from the trail up to what was scored
    assert engine.last_seq == seq
    assert ("asmith", "self-access") in engine.detector._open  # the open window carried over
    assert engine.poll() == 0 and engine.scored == scored  # nothing scored again

    _access(archive, "P1", now - timedelta(minutes=1), "self 2")  # the same session goes on
    assert engine.poll() == 0  # joins the open alert instead of raising a second one
    assert engine.scored == scored + 1 and len(_self_access_alerts(archive)) == 1
