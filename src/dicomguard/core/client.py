"""The core services as one principal sees them: every call authorized, every access recorded.

Adapters (DIMSE, DICOMweb, CLI) obtain an :class:`ArchiveClient` for the
principal they verified (``archive.client(principal)``) and call only it, so no
adapter can skip authorization or the access events the audit trail records.
Queries are filtered, not only retrievals: a study the principal may not read
never appears in a result (issue 5, point 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from dicomguard.core.access import AccessDenied, Action, Principal, Resource
from dicomguard.core.context import ArchiveContext
from dicomguard.core.erase import EraseResult, erase_patient
from dicomguard.core.events import AccessRefused, InstancesAccessed, QueryPerformed
from dicomguard.core.ingest import IngestOutcome, IngestPipeline, IngestResult, Loader
from dicomguard.core.query import (
    IndexQuery,
    InstanceRecord,
    PatientFilter,
    PatientRecord,
    SeriesRecord,
    StudyFilter,
    StudyRecord,
)
from dicomguard.core.retrieve import RetrievedObject, retrieve
from dicomguard.errors import DicomGuardError, ErasedError, NotFoundError
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import Instance


class ArchiveClient:
    def __init__(self, ctx: ArchiveContext, principal: Principal) -> None:
        self.ctx = ctx
        self.principal = principal
        self._index = IndexQuery(ctx)

    # -- authorization -----------------------------------------------------------------

    def allowed(self, action: Action, resource: Resource) -> bool:
        return self.ctx.authorizer.decide(self.principal, action, resource).allowed

    def authorize(self, action: Action, resource: Resource) -> None:
        """Raise :class:`AccessDenied` (and publish ``AccessRefused``) unless permitted."""
        decision = self.ctx.authorizer.decide(self.principal, action, resource)
        if decision.allowed:
            return
        self._record_refusal(action, resource, decision.reason)
        raise AccessDenied(self.principal, action, resource, decision.reason)

    def _record_refusal(self, action: Action, resource: Resource, reason: str) -> None:
        with write_session(self.ctx.engine) as s:
            self.ctx.bus.publish(s, AccessRefused(self.principal, action, resource.kind, resource.uid, reason, datetime.now(UTC)))

    # -- store -------------------------------------------------------------------------

    def ingest(self, data: bytes, source: str | None = None) -> IngestResult:
        self.authorize(Action.STORE, Resource.archive())
        return IngestPipeline(self.ctx, source or self.principal.label(), self.principal).ingest(data)

    def ingest_many(self, items: Iterable[tuple[str, Loader]], source: str | None = None) -> Iterator[IngestOutcome]:
        self.authorize(Action.STORE, Resource.archive())
        return IngestPipeline(self.ctx, source or self.principal.label(), self.principal).ingest_many(items)

    # -- retrieve ----------------------------------------------------------------------

    def _instance_resource(self, uid: str) -> tuple[InstanceRecord, Resource]:
        records = self._index.instances(sop_instance_uid=uid)
        if not records:
            with read_session(self.ctx.engine) as s:
                tombstone = s.get(Instance, uid)
            if tombstone is not None and tombstone.erased:
                raise ErasedError(f"{uid} was erased")
            raise NotFoundError(f"no instance {uid}")
        r = records[0]
        return r, Resource("instance", uid, r.study_uid, r.patient_ref, r.modality)

    def retrieve(self, sop_instance_uid: str, action: Action = Action.RETRIEVE) -> RetrievedObject:
        """One verified object. Unknown and forbidden UIDs look alike to the caller (no IDOR oracle)."""
        (obj,) = self.retrieve_many([sop_instance_uid], action)
        return obj

    def retrieve_many(self, sop_instance_uids: list[str], action: Action = Action.RETRIEVE) -> list[RetrievedObject]:
        resources = []
        for uid in sop_instance_uids:
            rec, res = self._instance_resource(uid)
            if not self.allowed(action, res):
                self.authorize(action, res)  # publishes the refusal and raises
            resources.append((rec, res))
        objects = [retrieve(self.ctx, uid) for uid in sop_instance_uids]
        self._record_access(action, [r for r, _ in resources])
        return objects

    def iter_retrieve(
        self, sop_instance_uids: list[str], action: Action = Action.RETRIEVE
    ) -> Iterator[tuple[str, RetrievedObject | DicomGuardError]]:
        """Authorize all, then yield each verified object (or its error) one at a time.

        Memory stays bounded by one object. One ``InstancesAccessed`` event
        records exactly the objects delivered, even if the caller stops early.
        """
        records = self.authorize_instances(sop_instance_uids, action)
        delivered: list[InstanceRecord] = []
        try:
            for rec in records:
                try:
                    obj: RetrievedObject | DicomGuardError = retrieve(self.ctx, rec.sop_instance_uid)
                except DicomGuardError as exc:
                    obj = exc
                yield rec.sop_instance_uid, obj
                if not isinstance(obj, DicomGuardError):
                    delivered.append(rec)
        finally:
            self._record_access(action, delivered)

    def authorize_instances(self, sop_instance_uids: list[str], action: Action = Action.RETRIEVE) -> list[InstanceRecord]:
        """Authorize ``action`` on every instance (raises on the first refusal); returns their records."""
        records = []
        for uid in sop_instance_uids:
            rec, res = self._instance_resource(uid)
            self.authorize(action, res)
            records.append(rec)
        return records

    def resolve_instances(
        self, *, study_uids: list[str] = (), series_uids: list[str] = (), sop_instance_uids: list[str] = ()  # type: ignore[assignment]
    ) -> list[str]:
        """UIDs of the live instances named at any level (unfiltered: pass them to :meth:`iter_retrieve`)."""
        found: list[str] = []
        for uid in study_uids:
            found += [r.sop_instance_uid for r in self._index.instances(study_uid=uid)]
        for uid in series_uids:
            found += [r.sop_instance_uid for r in self._index.instances(series_uid=uid)]
        for uid in sop_instance_uids:
            found += [r.sop_instance_uid for r in self._index.instances(sop_instance_uid=uid)]
        return list(dict.fromkeys(found))

    def instances_of(self, *, study_uid: str | None = None, series_uid: str | None = None) -> list[InstanceRecord]:
        """Instance records of a study or series, only if the principal may read that study."""
        records = self._index.instances(study_uid=study_uid, series_uid=series_uid)
        visible = [r for r in records if self.allowed(Action.RETRIEVE, Resource("instance", r.sop_instance_uid, r.study_uid, r.patient_ref, r.modality))]
        if records and not visible:
            # The caller sees "nothing there" (no existence oracle), but the refusal is recorded.
            first = records[0]
            self._record_refusal(Action.RETRIEVE, Resource("study", first.study_uid, first.study_uid, first.patient_ref), "no permitted instance")
        return visible

    def _record_access(self, action: Action, records: list[InstanceRecord]) -> None:
        if not records:
            return
        with write_session(self.ctx.engine) as s:
            self.ctx.bus.publish(
                s,
                InstancesAccessed(
                    self.principal, action, tuple(r.sop_instance_uid for r in records),
                    tuple(sorted({r.study_uid for r in records})), tuple(sorted({r.patient_ref for r in records})),
                    datetime.now(UTC),
                ),
            )

    # -- query (filtered) -------------------------------------------------------------

    def _visible_study(self, study_uid: str, patient_ref: str, modality: str = "") -> bool:
        return self.allowed(Action.QUERY, Resource("study", study_uid, study_uid, patient_ref, modality))

    def _record_query(self, level: str, keys: dict[str, str | None], results: int) -> None:
        with write_session(self.ctx.engine) as s:
            self.ctx.bus.publish(
                s, QueryPerformed(self.principal, level, tuple((k, v) for k, v in sorted(keys.items()) if v), results, datetime.now(UTC))
            )

    def find_studies(self, flt: StudyFilter | None = None) -> list[StudyRecord]:
        flt = flt or StudyFilter()
        found = [s for s in self._index.studies(flt) if self._visible_study(s.uid, s.patient_ref, ",".join(s.modalities))]
        self._record_query("STUDY", _study_keys(flt), len(found))
        return found

    def find_patients(self, flt: PatientFilter | None = None) -> list[PatientRecord]:
        flt = flt or PatientFilter()
        visible_patients = {s.patient_ref for s in self._index.studies(StudyFilter(patient=flt))
                            if self._visible_study(s.uid, s.patient_ref, ",".join(s.modalities))}
        found = [p for p in self._index.patients(flt) if p.ref in visible_patients]
        self._record_query("PATIENT", _patient_keys(flt), len(found))
        return found

    def find_series(self, study_uid: str | None = None, modality: str | None = None) -> list[SeriesRecord]:
        studies = {s.uid: s for s in self._index.studies(StudyFilter(study_uid=study_uid))}
        found = [
            se for se in self._index.series(study_uid=study_uid, modality=modality)
            if se.study_uid in studies and self._visible_study(se.study_uid, studies[se.study_uid].patient_ref, se.modality)
        ]
        self._record_query("SERIES", {"StudyInstanceUID": study_uid, "Modality": modality}, len(found))
        return found

    def find_instances(self, *, study_uid: str | None = None, series_uid: str | None = None) -> list[InstanceRecord]:
        found = self.instances_of(study_uid=study_uid, series_uid=series_uid)
        self._record_query("IMAGE", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}, len(found))
        return found

    # -- erase -------------------------------------------------------------------------

    def erase_patient(self, patient_id: str, reason: str, issuer: str | None = None) -> EraseResult:
        self.authorize(Action.ERASE, Resource("patient", attributes={"reason": bool(reason.strip())}))
        return erase_patient(self.ctx, patient_id, reason, issuer)


def _patient_keys(f: PatientFilter) -> dict[str, str | None]:
    return {"PatientID": f.patient_id, "PatientName": f.name, "PatientBirthDate": f.birth_date}


def _study_keys(f: StudyFilter) -> dict[str, str | None]:
    return {
        **_patient_keys(f.patient),
        "StudyInstanceUID": f.study_uid,
        "AccessionNumber": f.accession_number,
        "StudyDate": f.study_date,
        "ModalitiesInStudy": f.modality,
        "StudyDescription": f.description,
    }
