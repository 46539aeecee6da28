"""The core services as one principal sees them: every call authorized, every access recorded.

Adapters (DIMSE, DICOMweb, CLI) obtain an :class:`ArchiveClient` for the
principal they verified (``archive.client(principal)``) and call only it, so no
adapter can skip authorization or the access events the audit trail records.
Queries are filtered, not only retrievals: a study the principal may not read
never appears in a result (issue 5, point 3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.orm import Session

from dicomguard.core.access import (
    AccessDenied,
    Action,
    Decision,
    Principal,
    PrincipalKind,
    RequestContext,
    Resource,
    StepUpRequired,
    StudyAccess,
    mfa_age_of,
    normalize_department,
    normalize_label,
)
from dicomguard.core.break_glass import (
    BreakGlassRefused,
    Grant,
    check_reason,
    emergency_patients,
    new_grant,
)
from dicomguard.core.context import ArchiveContext
from dicomguard.core.erase import EraseResult, erase_patient
from dicomguard.core.events import (
    AccessRefused,
    BreakGlassStarted,
    InstancesAccessed,
    QueryPerformed,
    SecurityConfigurationChanged,
)
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
from dicomguard.core.retrieve import RetrievedObject, retrieve_each
from dicomguard.errors import DicomGuardError, ErasedError, NotFoundError
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import Instance, Study, StudyAccessWindow

log = logging.getLogger(__name__)


class ArchiveClient:
    """One principal's view of the core; short-lived (one request, one association)."""

    CONTEXT_TTL = timedelta(seconds=5)
    """How long a built request context (break-glass grants, access window) is reused."""

    def __init__(self, ctx: ArchiveContext, principal: Principal) -> None:
        self.ctx = ctx
        self.principal = principal
        self._index = IndexQuery(ctx)
        self._context_cache: dict[str, tuple[datetime, frozenset[str]]] = {}
        self._accessed: frozenset[str] = frozenset()
        """Studies this client delivered (counted in the step-up window even before a reload)."""
        self._query_memo: dict[str, tuple[Resource, Decision]] = {}
        self._query_memo_at: datetime | None = None

    # -- authorization -----------------------------------------------------------------

    def request_context(self, action: Action | None = None, studies: Iterable[str] = ()) -> RequestContext:
        """The Cedar request context: session MFA age, break-glass grants and the step-up window.

        Only users have grants and a window; devices and the operator get the
        bare context without a database round trip. Each is read at most once per
        ``CONTEXT_TTL`` per client; grants only for actions on studies (the
        only resources a grant opens), the window only for retrieve/export.
        """
        now = datetime.now(UTC)
        bulk = action in (Action.RETRIEVE, Action.EXPORT)
        emergency: frozenset[str] = frozenset()
        counted = 0
        if self.principal.kind is PrincipalKind.USER:
            if action is None or action in _STUDY_ACTIONS:
                emergency = self._cached("emergency", now, lambda s: emergency_patients(s, self.principal.name, now))
            if bulk:
                since = now - timedelta(seconds=self.ctx.settings.policy.step_up_window_s)
                window = self._cached("window", now, lambda s: frozenset(s.scalars(select(StudyAccessWindow.study_uid).where(
                    StudyAccessWindow.principal == self.principal.label(), StudyAccessWindow.last_at > since))))
                counted = len(window | self._accessed | set(studies))
        elif bulk:
            counted = len(self._accessed | set(studies))
        return RequestContext(now, mfa_age_of(self.principal, now), emergency, counted)

    def _cached(self, key: str, now: datetime, load: Callable[[Session], frozenset[str]]) -> frozenset[str]:
        hit = self._context_cache.get(key)
        if hit is None or now - hit[0] > self.CONTEXT_TTL:
            with read_session(self.ctx.engine) as s:
                hit = (now, load(s))
            self._context_cache[key] = hit
        return hit[1]

    def decide(self, action: Action, resource: Resource) -> Decision:
        context = self.request_context(action, [resource.study_uid] if resource.study_uid else ())
        return self.ctx.authorizer.decide(self.principal, action, resource, context)

    def allowed(self, action: Action, resource: Resource) -> bool:
        return self.decide(action, resource).allowed

    def authorize(self, action: Action, resource: Resource) -> Decision:
        """Raise :class:`AccessDenied` or :class:`StepUpRequired` (and publish ``AccessRefused``) unless permitted."""
        decision = self.decide(action, resource)
        self._raise_unless_allowed(action, resource, decision)
        return decision

    def _raise_unless_allowed(self, action: Action, resource: Resource, decision: Decision) -> None:
        if decision.allowed:
            return
        self._record_refusal(action, resource, decision.reason)
        if decision.step_up:
            raise StepUpRequired(self.principal, action, resource, "a fresh MFA confirmation is required: " + decision.reason)
        raise AccessDenied(self.principal, action, resource, decision.reason)

    def _record_refusal(self, action: Action, resource: Resource, reason: str) -> None:
        with write_session(self.ctx.engine) as s:
            self.ctx.bus.publish(s, AccessRefused(self.principal, action, resource.kind, resource.uid, reason, datetime.now(UTC)))

    def _study_resources(self, study_uids: Iterable[str], kind: str = "study") -> dict[str, Resource]:
        """Study resources with their access attributes, for the known studies among ``study_uids``."""
        return {uid: Resource.study(uid, ref, access, kind) for uid, (ref, access) in self._index.study_access(study_uids).items()}

    def _decide_studies(self, action: Action, resources: dict[str, Resource]) -> dict[str, Decision]:
        """One decision per study. Query decisions are reused within ``CONTEXT_TTL`` (a QIDO request asks at
        several levels); retrieve/export decisions never are (they depend on the growing step-up window)."""
        now = datetime.now(UTC)
        if self._query_memo_at is None or now - self._query_memo_at > self.CONTEXT_TTL:
            self._query_memo, self._query_memo_at = {}, now
        memo = self._query_memo if action is Action.QUERY else {}
        known = {u: memo[u] for u in resources if u in memo and memo[u][0] == resources[u]}
        uids = [u for u in resources if u not in known]
        context = self.request_context(action, uids)
        decisions = self.ctx.authorizer.decide_many(self.principal, action, [resources[u] for u in uids], context) if uids else []
        out = {u: d for u, (_, d) in known.items()}
        for u, d in zip(uids, decisions, strict=True):
            out[u] = d
            if action is Action.QUERY:
                self._query_memo[u] = (resources[u], d)
        return out

    # -- store -------------------------------------------------------------------------

    def ingest(self, data: bytes, source: str | None = None) -> IngestResult:
        self.authorize(Action.STORE, Resource.archive())
        return IngestPipeline(self.ctx, source or self.principal.label(), self.principal).ingest(data)

    def ingest_many(self, items: Iterable[tuple[str, Loader]], source: str | None = None) -> Iterator[IngestOutcome]:
        self.authorize(Action.STORE, Resource.archive())
        return IngestPipeline(self.ctx, source or self.principal.label(), self.principal).ingest_many(items)

    # -- retrieve ----------------------------------------------------------------------

    def _instance_records(self, uids: list[str]) -> list[InstanceRecord]:
        """Records of live instances in the order asked; raises for the first unknown or erased one."""
        found = {r.sop_instance_uid: r for r in self._index.instances(sop_instance_uids=uids)}
        for uid in uids:
            if uid not in found:
                with read_session(self.ctx.engine) as s:
                    tombstone = s.get(Instance, uid)
                if tombstone is not None and tombstone.erased:
                    raise ErasedError(f"{uid} was erased")
                raise NotFoundError(f"no instance {uid}")
        return [found[uid] for uid in uids]

    def retrieve(self, sop_instance_uid: str, action: Action = Action.RETRIEVE) -> RetrievedObject:
        """One verified object. Unknown and forbidden UIDs look alike to the caller (no IDOR oracle)."""
        (obj,) = self.retrieve_many([sop_instance_uid], action)
        return obj

    def retrieve_many(self, sop_instance_uids: list[str], action: Action = Action.RETRIEVE) -> list[RetrievedObject]:
        records, emergency = self._authorize_records(sop_instance_uids, action)
        objects = []
        for _, obj in retrieve_each(self.ctx, sop_instance_uids):
            if isinstance(obj, DicomGuardError):
                raise obj
            objects.append(obj)
        self._record_access(action, records, emergency)
        return objects

    def iter_retrieve(
        self, sop_instance_uids: list[str], action: Action = Action.RETRIEVE
    ) -> Iterator[tuple[str, RetrievedObject | DicomGuardError]]:
        """Authorize all, then yield each verified object (or its error) one at a time.

        Memory stays bounded by one object. One ``InstancesAccessed`` event
        records exactly the objects delivered, even if the caller stops early.
        """
        records, emergency = self._authorize_records(sop_instance_uids, action)
        delivered: list[InstanceRecord] = []
        try:
            for rec, (uid, obj) in zip(records, retrieve_each(self.ctx, [r.sop_instance_uid for r in records]), strict=True):
                yield uid, obj
                if not isinstance(obj, DicomGuardError):
                    delivered.append(rec)
        finally:
            self._record_access(action, delivered, emergency)

    def authorize_instances(self, sop_instance_uids: list[str], action: Action = Action.RETRIEVE) -> list[InstanceRecord]:
        """Authorize ``action`` on every instance (raises on the first refusal); returns their records."""
        return self._authorize_records(sop_instance_uids, action)[0]

    def _authorize_records(self, sop_instance_uids: list[str], action: Action) -> tuple[list[InstanceRecord], bool]:
        """Records of the instances, all authorized (one decision per study); and whether any was emergency access."""
        records = self._instance_records(sop_instance_uids)
        resources = self._study_resources({r.study_uid for r in records}, "instance")
        decisions = self._decide_studies(action, resources)
        for rec in records:
            decision = decisions.get(rec.study_uid)
            resource = Resource("instance", rec.sop_instance_uid, rec.study_uid, rec.patient_ref, rec.modality)
            if decision is None:
                decision = Decision(False, "the study of this instance has no access attributes")
            self._raise_unless_allowed(action, resource, decision)
        return records, any(d.break_glass for d in decisions.values())

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
        return self._visible_instances(study_uid=study_uid, series_uid=series_uid)[0]

    def _visible_instances(self, *, study_uid: str | None = None, series_uid: str | None = None) -> tuple[list[InstanceRecord], bool]:
        records = self._index.instances(study_uid=study_uid, series_uid=series_uid)
        decisions = self._decide_studies(Action.RETRIEVE, self._study_resources({r.study_uid for r in records}))
        visible = [r for r in records if decisions.get(r.study_uid, _DENY).allowed]
        if records and not visible:
            # The caller sees "nothing there" (no existence oracle), but the refusal is recorded;
            # unless a fresh MFA confirmation would permit it: then the caller is asked for one.
            first = records[0]
            decision = decisions.get(first.study_uid, _DENY)
            resource = Resource("study", first.study_uid, first.study_uid, first.patient_ref)
            if decision.step_up:
                self._raise_unless_allowed(Action.RETRIEVE, resource, decision)
            self._record_refusal(Action.RETRIEVE, resource, decision.reason)
        return visible, any(d.break_glass and d.allowed for d in decisions.values())

    def _record_access(self, action: Action, records: list[InstanceRecord], emergency: bool = False) -> None:
        if not records:
            return
        now = datetime.now(UTC)
        study_uids = tuple(sorted({r.study_uid for r in records}))
        with write_session(self.ctx.engine) as s:
            self.ctx.bus.publish(
                s,
                InstancesAccessed(
                    self.principal, action, tuple(r.sop_instance_uid for r in records),
                    study_uids, tuple(sorted({r.patient_ref for r in records})), now, emergency,
                ),
            )
            if self.principal.kind is PrincipalKind.USER and action in (Action.RETRIEVE, Action.EXPORT):
                label = self.principal.label()
                since = now - timedelta(seconds=self.ctx.settings.policy.step_up_window_s)
                # this principal's rows: the studies accessed now are renewed, those out of the window dropped
                s.execute(delete(StudyAccessWindow).where(StudyAccessWindow.principal == label, or_(
                    StudyAccessWindow.study_uid.in_(study_uids), StudyAccessWindow.last_at <= since)))
                s.execute(insert(StudyAccessWindow), [{"principal": label, "study_uid": u, "last_at": now} for u in study_uids])
        self._accessed = self._accessed | set(study_uids)

    # -- query (filtered) -------------------------------------------------------------

    def _visible_studies(self, study_uids: Iterable[str]) -> tuple[set[str], bool]:
        """The studies among ``study_uids`` the principal may query; and whether any only under break-glass."""
        decisions = self._decide_studies(Action.QUERY, self._study_resources(study_uids))
        visible = {uid for uid, d in decisions.items() if d.allowed}
        return visible, any(d.break_glass for d in decisions.values() if d.allowed)

    def _record_query(self, level: str, keys: dict[str, str | None], results: int, emergency: bool = False) -> None:
        with write_session(self.ctx.engine) as s:
            self.ctx.bus.publish(
                s, QueryPerformed(self.principal, level, tuple((k, v) for k, v in sorted(keys.items()) if v), results, datetime.now(UTC),
                                  emergency)
            )

    def find_studies(self, flt: StudyFilter | None = None) -> list[StudyRecord]:
        flt = flt or StudyFilter()
        candidates = self._index.studies(flt)
        visible, emergency = self._visible_studies(s.uid for s in candidates)
        found = [s for s in candidates if s.uid in visible]
        self._record_query("STUDY", _study_keys(flt), len(found), emergency)
        return found

    def find_patients(self, flt: PatientFilter | None = None) -> list[PatientRecord]:
        flt = flt or PatientFilter()
        studies = self._index.studies(StudyFilter(patient=flt))
        visible, emergency = self._visible_studies(s.uid for s in studies)
        visible_patients = {s.patient_ref for s in studies if s.uid in visible}
        found = [p for p in self._index.patients(flt) if p.ref in visible_patients]
        self._record_query("PATIENT", _patient_keys(flt), len(found), emergency)
        return found

    def find_series(self, study_uid: str | None = None, modality: str | None = None) -> list[SeriesRecord]:
        candidates = self._index.series(study_uid=study_uid, modality=modality)
        visible, emergency = self._visible_studies({se.study_uid for se in candidates})
        found = [se for se in candidates if se.study_uid in visible]
        self._record_query("SERIES", {"StudyInstanceUID": study_uid, "Modality": modality}, len(found), emergency)
        return found

    def find_instances(self, *, study_uid: str | None = None, series_uid: str | None = None) -> list[InstanceRecord]:
        found, emergency = self._visible_instances(study_uid=study_uid, series_uid=series_uid)
        self._record_query("IMAGE", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}, len(found), emergency)
        return found

    # -- study access attributes -------------------------------------------------------

    def set_study_access(
        self, study_uid: str, *, department: str | None = None, add_labels: Iterable[str] = (), remove_labels: Iterable[str] = ()
    ) -> StudyAccess:
        """Change a study's department or labels (``administer``); recorded as a Security Configuration alert."""
        self.authorize(Action.ADMINISTER, Resource.archive())
        add, remove = {normalize_label(x) for x in add_labels}, {normalize_label(x) for x in remove_labels}
        if add & remove:
            raise ValueError("a label cannot be both added and removed")
        with write_session(self.ctx.engine) as s:
            study = s.get(Study, study_uid, with_for_update=True)
            if study is None:
                raise NotFoundError(f"no study {study_uid}")
            changes = []
            if department is not None:
                new = normalize_department(department) or None
                if new != study.department:
                    changes.append(f"department {study.department or '(none)'} -> {new or '(none)'}")
                    study.department = new
            labels = set(filter(None, (study.labels or "").split(",")))
            updated = (labels | add) - remove
            if updated != labels:
                text = ",".join(sorted(updated))
                if len(text) > 512:
                    raise ValueError("too many labels (at most 512 characters in all)")
                changes.append(f"labels {','.join(sorted(labels)) or '(none)'} -> {text or '(none)'}")
                study.labels = text or None
            if changes:
                self.ctx.bus.publish(s, SecurityConfigurationChanged(self.principal, f"study:{study_uid}", "; ".join(changes), datetime.now(UTC)))
        return self._index.study_access([study_uid])[study_uid][1]

    # -- break-glass and erase ---------------------------------------------------------

    def break_glass(self, patient_id: str, reason: str, issuer: str | None = None) -> Grant:
        """Claim emergency access to one patient (see :mod:`dicomguard.core.break_glass`)."""
        self.authorize(Action.BREAK_GLASS, Resource("patient"))
        try:
            reason = check_reason(self.ctx, reason)
        except BreakGlassRefused as exc:
            self._record_refusal(Action.BREAK_GLASS, Resource("patient"), str(exc))
            raise
        matches = self.ctx.patients.find(patient_id, issuer) if patient_id.strip() else []
        if not matches:
            self._record_refusal(Action.BREAK_GLASS, Resource("patient"), "no such patient")
            raise NotFoundError("no such patient")
        refs = tuple(sorted({ref for ref, _ in matches}))
        for ref in refs:
            self.authorize(Action.BREAK_GLASS, Resource.patient(ref))
        now = datetime.now(UTC)
        with write_session(self.ctx.engine) as s:
            grant = new_grant(self.ctx, s, self.principal.name, refs, reason, now)
            self.ctx.bus.publish(s, BreakGlassStarted(self.principal, grant.id, refs, reason, grant.expires_at, now))
        self._context_cache.pop("emergency", None)
        self._query_memo_at = None
        log.warning("break-glass granted to %s (grant %s) until %s", self.principal.label(), grant.id, grant.expires_at.isoformat())
        return grant

    def erase_patient(self, patient_id: str, reason: str, issuer: str | None = None) -> EraseResult:
        self.authorize(Action.ERASE, Resource("patient"))
        return erase_patient(self.ctx, patient_id, reason, issuer, self.principal)


_DENY = Decision(False, "the study has no access attributes")
_STUDY_ACTIONS = frozenset({Action.QUERY, Action.RETRIEVE, Action.EXPORT, Action.SHARE})


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
