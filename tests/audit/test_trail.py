"""Persistence: in the action's transaction, sealed at rest, bound to the ledger; tampering is found by ``verify``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, text, update
from typer.testing import CliRunner

from dicomguard.app.verify import verify_archive
from dicomguard.audit.trail import canonical_hash
from dicomguard.audit.verify import AuditProblemKind
from dicomguard.cli.main import app
from dicomguard.core.access import AccessDenied, Principal, PrincipalKind
from dicomguard.core.events import InstanceStored, UserAuthentication
from dicomguard.core.query import IndexQuery
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import AuditPatient, AuditRecord, LedgerLeaf
from dicomguard.ledger.leaves import audit_hashes, decode
from tests.audit.conftest import entries
from tests.dicom_factory import ALICE, ct_series

DR = Principal(PrincipalKind.USER, "dr.quinn", frozenset({"radiologist"}), "10.9.8.7")


class Boom(Exception):
    pass


def test_an_action_and_its_audit_record_commit_together(archive) -> None:
    def fail_on_store(session, event) -> None:  # type: ignore[no-untyped-def]
        if isinstance(event, InstanceStored):
            raise Boom

    archive.ctx.bus.subscribe(fail_on_store)  # after the trail: the trail has already queued its record
    with pytest.raises(Boom):
        archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    assert IndexQuery(archive.ctx).instances() == [] and entries(archive) == []


def test_no_action_without_its_record(archive, monkeypatch) -> None:
    """If the record cannot be written, the action does not happen."""
    def broken(*a, **k):  # type: ignore[no-untyped-def]
        raise Boom

    monkeypatch.setattr("dicomguard.audit.trail.canonical_hash", broken)
    with pytest.raises(Boom):
        archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    assert IndexQuery(archive.ctx).instances() == []


def test_records_are_sealed_and_indexed_blind(archive, home, db_url) -> None:
    for d in ct_series(ALICE, n=2):
        archive.services(Principal(PrincipalKind.USER, "dr.quinn", frozenset({"technologist"}))).store.ingest(d)
    archive.services(DR).query.find_studies()
    secrets = [s.encode() for s in ALICE.secrets()] + [b"dr.quinn", b"AuditMessage"]
    with read_session(archive.ctx.engine) as s:
        rows = s.execute(text("select * from audit_records")).all() + s.execute(text("select * from audit_patients")).all()
    for row in rows:
        for value in row:
            raw = value if isinstance(value, bytes) else str(value).encode()
            for secret in secrets:
                assert secret not in raw
    if not db_url:  # the SQLite files themselves, WAL included (staff names are in the ledger's event leaves by design)
        archive.close()
        for f in home.glob("index.db*"):
            blob = f.read_bytes()
            for secret in ALICE.secrets():
                assert secret.encode() not in blob, f.name


def test_every_record_is_bound_to_a_ledger_leaf_and_the_ledger_grows_one_leaf_per_action(archive) -> None:
    list(archive.operator.store.ingest_many([(str(i), (lambda d=d: d)) for i, d in enumerate(ct_series(ALICE, n=3))]))
    archive.services(DR).query.find_studies()
    with read_session(archive.ctx.engine) as s:
        leaves = [decode(leaf.data) for leaf in s.scalars(select(LedgerLeaf).order_by(LedgerLeaf.idx))]
    assert len(leaves) == 1 + 4  # the archive's creation, 3 objects and 1 query: no extra leaf for their audit records
    bound = dict(h for leaf in leaves for h in audit_hashes(leaf))
    records = entries(archive, include_creation=True)
    assert len(records) == 1 + 4 and set(bound) == {e.id for e in records}


# -- tampering: one table of named attacks, one runner ------------------------------------------


@dataclass(frozen=True)
class Attack:
    run: Callable[..., None]
    kind: AuditProblemKind


def _seqs(archive, event_id: str) -> list[int]:  # type: ignore[no-untyped-def]
    """Records of one event id after the archive's creation record (seq 1)."""
    with read_session(archive.ctx.engine) as s:
        return list(s.scalars(select(AuditRecord.seq).where(AuditRecord.event_id == event_id, AuditRecord.seq > 1).order_by(AuditRecord.seq)))


def _sql(archive, *stmts) -> None:  # type: ignore[no-untyped-def]
    with write_session(archive.ctx.engine) as s:
        for stmt in stmts:
            s.execute(stmt)


def _flip_bit(archive, seq: int) -> None:  # type: ignore[no-untyped-def]
    with read_session(archive.ctx.engine) as s:
        body = bytearray(s.scalar(select(AuditRecord.body).where(AuditRecord.seq == seq)))
    body[-20] ^= 1
    _sql(archive, update(AuditRecord).where(AuditRecord.seq == seq).values(body=bytes(body)))


def _swap_bodies(archive, a: int, b: int) -> None:  # type: ignore[no-untyped-def]
    with read_session(archive.ctx.engine) as s:
        ba, bb = (s.scalar(select(AuditRecord.body).where(AuditRecord.seq == x)) for x in (a, b))
    _sql(archive, update(AuditRecord).where(AuditRecord.seq == a).values(body=bb), update(AuditRecord).where(AuditRecord.seq == b).values(body=ba))


def _forge_row(archive, seq: int) -> None:  # type: ignore[no-untyped-def]
    with read_session(archive.ctx.engine) as s:
        row = s.get(AuditRecord, seq)
        values = {c.name: getattr(row, c.name) for c in AuditRecord.__table__.columns}
        top = s.scalar(select(AuditRecord.seq).order_by(AuditRecord.seq.desc()).limit(1))
    values.update(seq=top + 1, id="f" * 32)
    _sql(archive, insert(AuditRecord).values(**values))


def _renumber(archive, a: int, b: int) -> None:  # type: ignore[no-untyped-def]
    _sql(archive, update(AuditRecord).where(AuditRecord.seq == a).values(seq=-1),
         update(AuditRecord).where(AuditRecord.seq == b).values(seq=a), update(AuditRecord).where(AuditRecord.seq == -1).values(seq=b))


@dataclass(frozen=True)
class Targets:
    alert: int  # a Security Alert record
    logins: list[int]  # two User Authentication records (no patient)
    store: int  # a DICOM Instances Transferred record (names a patient)


def _set_column(target: str, **values: object) -> Callable[..., None]:
    return lambda a, t: _sql(a, update(AuditRecord).where(AuditRecord.seq == getattr(t, target)).values(**values))


ATTACKS: dict[str, Attack] = {
    "soften an outcome": Attack(_set_column("alert", outcome=0), AuditProblemKind.ALTERED),
    "backdate an event": Attack(_set_column("store", event_time=datetime(2020, 1, 1, tzinfo=UTC)), AuditProblemKind.ALTERED),
    "relabel as imported": Attack(_set_column("store", origin="import:x"), AuditProblemKind.ALTERED),
    "reassign to another user": Attack(_set_column("store", user_token=b"\0" * 16), AuditProblemKind.ALTERED),
    "flip a bit of the sealed message": Attack(lambda a, t: _flip_bit(a, t.store), AuditProblemKind.ALTERED),
    "swap two sealed messages": Attack(lambda a, t: _swap_bodies(a, t.alert, t.store), AuditProblemKind.ALTERED),
    "unlink the patient": Attack(lambda a, t: _sql(a, delete(AuditPatient).where(AuditPatient.record_seq == t.store)),
                                 AuditProblemKind.ALTERED),
    "delete a record": Attack(lambda a, t: _sql(a, delete(AuditRecord).where(AuditRecord.seq == t.alert)), AuditProblemKind.MISSING),
    "insert a forged record": Attack(lambda a, t: _forge_row(a, t.store), AuditProblemKind.UNLEDGERED),
    "reorder records": Attack(lambda a, t: _renumber(a, t.logins[0], t.logins[1]), AuditProblemKind.MISORDERED),
}


@pytest.fixture
def scene(archive):  # type: ignore[no-untyped-def]
    archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    with pytest.raises(AccessDenied):
        archive.services(Principal(PrincipalKind.USER, "mallory")).erase.patient(ALICE.patient_id, "curiosity")
    with write_session(archive.ctx.engine) as s:
        for kind in ("login", "logout"):
            archive.ctx.bus.publish(s, UserAuthentication("dr.quinn", kind, datetime.now(UTC)))
    assert verify_archive(archive.ctx, archive.ledger.verifier).ok
    return archive


@pytest.mark.parametrize("name", list(ATTACKS))
def test_tampering_with_the_trail_is_found_by_verify(scene, name: str) -> None:
    archive = scene
    (store,) = _seqs(archive, "110104")
    ATTACKS[name].run(archive, Targets(_seqs(archive, "110113")[0], _seqs(archive, "110114"), store))
    report = archive.operator.verify.run()
    kinds = {p.kind for p in report.problems}
    assert ATTACKS[name].kind in kinds, report.problems
    # the finding is itself a Security Alert in the trail
    fresh = [e for e in entries(archive) if e.event_id == "110113" and "integrity-violation" in (e.event_type or "")]
    assert any(ATTACKS[name].kind.value in (e.message.outcome_description or "") for e in fresh)


def test_cli_verify_fails_on_a_deleted_audit_row(scene, home) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["verify"], catch_exceptions=False).exit_code == 0
    _sql(scene, delete(AuditRecord).where(AuditRecord.seq == _seqs(scene, "110114")[0]))
    r = runner.invoke(app, ["verify", "--json"], catch_exceptions=False)
    assert r.exit_code == 1 and "audit-record-missing" in r.stdout


def test_canonical_hash_covers_every_column(archive) -> None:
    """Changing any stored field changes the hash (guards against a field forgotten in canonical_hash)."""
    from dataclasses import fields, replace

    from dicomguard.audit.trail import RecordFields

    base = RecordFields("a" * 32, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC), "110104", "110132", "C", 0,
                        "local", b"u" * 16, None, (b"p" * 16,), b"<x/>")
    changed = {
        "id": "b" * 32, "recorded_at": base.recorded_at + timedelta(microseconds=1), "event_time": base.event_time + timedelta(seconds=1),
        "event_id": "110105", "event_type": None, "action": "R", "outcome": 4, "origin": "import:x", "user_token": b"v" * 16,
        "dedup_token": b"d" * 16, "patient_tokens": (), "xml": b"<y/>",
    }
    assert {f.name for f in fields(RecordFields)} == set(changed)
    for name, value in changed.items():
        assert canonical_hash(replace(base, **{name: value})) != canonical_hash(base), name


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.one_of(st.none(), st.text(max_size=3)), st.lists(st.binary(min_size=16, max_size=16), max_size=3),
       st.one_of(st.none(), st.binary(min_size=16, max_size=16)))
def test_canonical_hash_is_the_hash_of_canonical_json(origin, event_id, action, patients, user) -> None:
    import hashlib
    import json

    from dicomguard.audit.trail import RecordFields, canonical_document

    f = RecordFields("c" * 32, datetime(2026, 1, 1, 1, 2, 3, 4, tzinfo=UTC), datetime(2025, 12, 31, tzinfo=UTC), event_id, None, action, 8,
                     origin, user, None, tuple(patients), b"<AuditMessage/>")
    expected = json.dumps(canonical_document(f), sort_keys=True, separators=(",", ":")).encode("ascii")
    assert canonical_hash(f) == hashlib.sha256(expected).digest()
