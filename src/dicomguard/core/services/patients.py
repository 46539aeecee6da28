"""Patient-identity conflicts: ``dicomguard patient conflicts|resolve`` call :class:`PatientIdentityService`.

One (Issuer of Patient ID, Patient ID) that arrived with different demographics is
kept as separate patient rows (``core/patients.py``), each showing only what its
own objects say. An administrator reconciles a conflict by deciding it:

* ``same-person``: the rows belong to one person (a corrected name, a typing error
  fixed at the modality). They stay separately keyed and each study keeps the
  demographics it arrived with; the conflict is closed.
* ``different-persons``: one Patient ID was used for two people (a test object, a
  wrong worklist entry). The conflict is closed; the wrong objects are then erased
  or re-sent under the right identity.

Neither decision copies one row's demographics onto the other's studies: that
would show one storer's data to the readers of another's (the leak this design
closes). The decision, its reason and who took it are a Patient Record audit
event (PS3.15 A.5.3.15) in the transaction of the change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from dicomguard.core.access import Action, Resource
from dicomguard.core.events import PatientIdentityResolved
from dicomguard.core.service import Service
from dicomguard.errors import NotFoundError
from dicomguard.index.db import as_utc, read_session
from dicomguard.index.models import PatientConflict, Study


class Decision(StrEnum):
    SAME_PERSON = "same-person"
    DIFFERENT_PERSONS = "different-persons"


@dataclass(frozen=True)
class ConflictRecord:
    """One conflict as listed: surrogate references, what differs, where its studies are; no PHI."""

    id: int
    patient_ref: str
    other_ref: str
    fields: list[str]
    source: str
    created_at: datetime
    departments: list[str]
    other_departments: list[str]
    resolution: str | None
    resolved_by: str | None
    resolved_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("created_at", "resolved_at"):
            d[key] = d[key].isoformat() if d[key] else None
        return d


class PatientIdentityService(Service):
    def conflicts(self, include_resolved: bool = False) -> list[ConflictRecord]:
        """Patient-identity conflicts, oldest first (``patient-conflicts-read``); open ones unless told otherwise."""
        self.access.authorize(Action.PATIENT_CONFLICTS_READ, Resource.archive())
        with read_session(self.ctx.engine) as s:
            stmt = select(PatientConflict).order_by(PatientConflict.id)
            if not include_resolved:
                stmt = stmt.where(PatientConflict.resolved_at.is_(None))
            rows = list(s.scalars(stmt))
            refs = {r.patient_ref for r in rows} | {r.other_ref for r in rows}
            departments: dict[str, set[str]] = {}
            for ref, department in s.execute(select(Study.patient_ref, Study.department).where(Study.patient_ref.in_(refs))):
                departments.setdefault(ref, set()).add(department or "")
            return [
                ConflictRecord(r.id, r.patient_ref, r.other_ref, [f for f in r.fields.split(",") if f], r.source, as_utc(r.created_at),
                               sorted(departments.get(r.patient_ref, ())), sorted(departments.get(r.other_ref, ())),
                               r.resolution, r.resolved_by, as_utc(r.resolved_at) if r.resolved_at else None)
                for r in rows
            ]

    def resolve(self, conflict_id: int, decision: Decision, reason: str) -> ConflictRecord:
        """Decide an open conflict (``patient-reconcile`` on the newer patient row), with a typed reason.

        Recorded as a Patient Record audit event carrying the reason, in the
        transaction of the decision. An unknown or already decided conflict raises
        :class:`NotFoundError` / :class:`ValueError` and changes nothing.
        """
        if not reason.strip():
            raise ValueError("a reconciliation needs a reason")
        decision = Decision(decision)
        with read_session(self.ctx.engine) as s:
            found = s.get(PatientConflict, conflict_id)
            if found is None:
                raise NotFoundError(f"no patient-identity conflict {conflict_id}")
            patient_ref = found.patient_ref
        self.access.authorize(Action.PATIENT_RECONCILE, Resource.patient(patient_ref))
        now = datetime.now(UTC)
        with self.change() as s:
            conflict = s.get(PatientConflict, conflict_id, with_for_update=True)
            if conflict is None:
                raise NotFoundError(f"no patient-identity conflict {conflict_id}")
            if conflict.resolved_at is not None:
                raise ValueError(f"conflict {conflict_id} was already resolved ({conflict.resolution})")
            conflict.resolved_at, conflict.resolution, conflict.resolved_by = now, decision.value, self.principal.label()
            self.record(s, PatientIdentityResolved(self.principal, conflict_id, conflict.patient_ref, conflict.other_ref,
                                                   decision.value, reason.strip(), now))
        (record,) = [c for c in self.conflicts(include_resolved=True) if c.id == conflict_id]
        return record
