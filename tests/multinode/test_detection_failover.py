"""Two nodes' detection engines on one PostgreSQL archive: one scores, each misuse is alerted once, a failover resumes.

The two nodes are two :class:`Archive` objects opened on the same home (their
own engines and connection pools, as two ``serve`` processes would have), each
running the real :class:`DetectionEngine` thread as ``serve`` starts it. Leases
are shortened to seconds. The misuse is self-access (a user opening their own
patient record), which the detector alerts whatever its calibration, imported as
ATNA messages of another system (the engine scores the shared trail, whoever
wrote it).

Proven:

* only the lease holder learns and scores: the standby holds no detector, and a
  misuse raises exactly one alert, not one per node;
* the holder saves the last sequence number it scored in the lease row;
* when the holder stops, the standby takes over, learns up to that cursor and
  scores after it: the first misuse is not alerted again, and a misuse recorded
  while no node was scoring (between the stop and the takeover) is alerted once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dicomguard.app import leases
from dicomguard.app.archive import Archive
from dicomguard.app.detection.engine import LEASE_NAME, DetectionEngine
from dicomguard.core.access import Principal
from dicomguard.detect.events import AccessEvent
from dicomguard.detect.signatures import name_parts
from dicomguard.index.db import read_session
from dicomguard.index.models import AuditRecord, TaskLease
from tests.conftest import PASSPHRASE
from tests.detect.simulator import audit_xml, simulate, write_context

pytestmark = pytest.mark.slow  # PostgreSQL, a fortnight of trail learned twice

LEASE_S, RENEW_S = 3.0, 0.5


def _wait(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def two_nodes(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Archive, Archive]]:
    monkeypatch.setattr(leases, "LEASE_S", LEASE_S)
    monkeypatch.setattr(leases, "RENEW_S", RENEW_S)
    a = Archive.open(home, PASSPHRASE)
    b = Archive.open(home, PASSPHRASE)
    try:
        yield a, b
    finally:
        b.close()
        a.close()


def _self_access(archive: Archive, user: str, patient: str, n: int) -> None:
    """``user`` opens their own record now: an ATNA message of the hospital's PACS, imported."""
    event = AccessEvent(datetime.now(UTC), user, "retrieve", (patient,), event_id=f"misuse-{n}")
    assert archive.operator.audit.import_messages([(f"misuse {n}", audit_xml(event))], origin="simulated-his").stored == 1


def _alerts(archive: Archive, user: str) -> list[str]:
    return [a.kind for a in archive.operator.detection.alerts(status=None) if a.user == user]


def _cursor(archive: Archive) -> str | None:
    with read_session(archive.ctx.engine) as s:
        return s.scalar(select(TaskLease.cursor).where(TaskLease.name == LEASE_NAME))


def _last_seq(archive: Archive) -> int:
    with read_session(archive.ctx.engine) as s:
        return int(s.scalar(select(func.max(AuditRecord.seq))) or 0)


@pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)
def test_one_engine_scores_and_a_failover_neither_re_raises_nor_skips(two_nodes: tuple[Archive, Archive], tmp_path: Path) -> None:
    node_a, node_b = two_nodes
    sim = simulate(5, n_users=40, n_patients=600, baseline_days=14, scoring_days=1, per_kind=1)
    shift = datetime.now(UTC) - timedelta(hours=12) - sim.baseline_until  # the simulated fortnight ends this morning
    write_context(sim.context, tmp_path / "ctx")
    for kind in ("users", "patients", "orders"):
        node_a.operator.detection.import_context(kind, tmp_path / "ctx" / f"{kind}.csv")
    baseline = [e._replace(time=e.time + shift) for e in sim.baseline]
    assert node_a.operator.audit.import_messages([(f"line {i}", audit_xml(e)) for i, e in enumerate(baseline)],
                                                 origin="simulated-his").stored == len(baseline)
    own_records = [(u, p) for u, info in sim.context.users.items() for p, pat in sim.context.patients.items()
                   if name_parts(info.name) == name_parts(pat.name)]
    (first_user, first_patient), (second_user, second_patient) = own_records[:2]

    engine_a = DetectionEngine(node_a.services(Principal.operator("detector")))
    engine_b = DetectionEngine(node_b.services(Principal.operator("detector")))
    stop_a, stop_b = threading.Event(), threading.Event()
    try:
        assert engine_a.start(stop_a)
        _wait(lambda: engine_a.detector is not None and _cursor(node_a) is not None, "node A to learn")
        assert engine_b.start(stop_b)
        time.sleep(3 * RENEW_S)  # node B tries to acquire, and keeps failing
        assert engine_a.lease is not None and engine_a.lease.held()
        assert engine_b.lease is not None and not engine_b.lease.held() and engine_b.detector is None

        _self_access(node_b, first_user, first_patient, 1)  # recorded through the other node: the trail is shared
        _wait(lambda: _alerts(node_a, first_user), "the first alert")
        _wait(lambda: _cursor(node_a) == str(_last_seq(node_a)), "node A to save its cursor")
        time.sleep(5 * node_a.settings.detection.poll_s)  # room for a second alert, if there were to be one
        assert _alerts(node_b, first_user) == ["self-access"]
        assert (engine_a.alerts_raised, engine_b.alerts_raised) == (1, 0) and engine_b.scored == 0

        stop_a.set()  # node A stops: it releases the lease after its last batch
        engine_a.join(30)
        assert _cursor(node_a) == str(engine_a.last_seq) == str(_last_seq(node_a))
        _self_access(node_a, second_user, second_patient, 2)  # while no node scores: B must not skip it
        _wait(lambda: engine_b.detector is not None, "node B to take over")
        _wait(lambda: _alerts(node_b, second_user), "the second alert")
        time.sleep(5 * node_b.settings.detection.poll_s)
        assert _alerts(node_a, second_user) == ["self-access"]
        assert _alerts(node_a, first_user) == ["self-access"]  # learned by B, not scored again
        assert (engine_a.alerts_raised, engine_b.alerts_raised) == (1, 1)
        assert engine_b.scored == 1  # only what came after A's cursor
        _wait(lambda: _cursor(node_b) == str(_last_seq(node_b)), "node B to save its cursor")
    finally:
        stop_a.set()
        stop_b.set()
        engine_a.join(30)
        engine_b.join(30)
