"""Retrieval: WADO-RS, C-GET, C-MOVE and ``dicomguard export`` all go through one :class:`RetrievePlan`.

A plan is built in one step: every UID named is resolved to live instances,
the studies they belong to are decided in one batch call of the policy
engine, and a refused study refuses the whole request (recorded; raised as
:class:`AccessDenied` or :class:`StepUpRequired`). The number of objects is then
known before the first one is read (C-GET and C-MOVE announce it in their
pending responses, PS3.4 C.4.2.1.2).

Delivery (:meth:`RetrievePlan.objects`) reads, decrypts and verifies the objects
one at a time (index rows looked up in batches) and, before the first verified
object is handed out, commits one ``InstancesAccessed`` event listing every
instance of the plan (PS3.15 A.5.3.7 Instances Transferred, A.5.3.4 Export).
Nothing is delivered before its record is committed; a delivery cut short
(client gone, cancel) is recorded as planned. An object that fails
verification is never delivered: its error is yielded in its place and an
``IntegrityViolation`` alert is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from dicomguard.core.access import AccessDenied, Action, Resource
from dicomguard.core.access_control import NO_ATTRIBUTES
from dicomguard.core.events import InstancesAccessed
from dicomguard.core.query import InstanceRecord
from dicomguard.core.retrieve import RetrievedObject, retrieve_each
from dicomguard.core.service import Service
from dicomguard.errors import DicomGuardError, ErasedError, NotFoundError
from dicomguard.index.db import read_session
from dicomguard.index.models import Instance


@dataclass
class RetrievePlan:
    """Authorized instances to deliver, in order; ``len(plan)`` is known before the first object is read."""

    service: RetrieveService = field(repr=False)
    action: Action
    records: list[InstanceRecord]
    emergency: bool = False
    """Some study is readable only under a break-glass grant: the access record is marked."""
    _recorded: bool = field(default=False, repr=False)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def size(self) -> int:
        """Stored bytes of every object of the plan."""
        return sum(r.size for r in self.records)

    def objects(self) -> Iterator[tuple[InstanceRecord, RetrievedObject | DicomGuardError]]:
        """Each verified object or its error, one object in memory at a time.

        The access is recorded (once, for the whole plan) after the first object
        verified and before it is yielded: nothing is delivered before its record
        commits, and a plan whose every object fails verification records no access.
        """
        uids = [r.sop_instance_uid for r in self.records]
        for record, (_, outcome) in zip(self.records, retrieve_each(self.service.ctx, uids), strict=True):
            if not self._recorded and not isinstance(outcome, DicomGuardError):
                self.service.record_access(self)
                self._recorded = True
            yield record, outcome

    def verified(self) -> Iterator[RetrievedObject]:
        """Each verified object; the first failure is raised (a stream is cut rather than continued past it)."""
        for _, outcome in self.objects():
            if isinstance(outcome, DicomGuardError):
                raise outcome
            yield outcome


class RetrieveService(Service):
    def plan(
        self,
        action: Action = Action.RETRIEVE,
        *,
        study_uids: Sequence[str] = (),
        series_uids: Sequence[str] = (),
        sop_instance_uids: Sequence[str] = (),
        require_all: bool = True,
    ) -> RetrievePlan:
        """The instances named at any level, all authorized for ``action``.

        ``require_all``: every named instance UID must exist and the plan must not
        be empty (WADO-RS, export: :class:`NotFoundError`, or :class:`ErasedError`
        for an erased instance). Without it, unknown UIDs are skipped and a plan
        may be empty (C-GET, C-MOVE answer with zero sub-operations).
        """
        index = self.access.index
        records: dict[str, InstanceRecord] = {}
        if sop_instance_uids:
            found = {r.sop_instance_uid: r for r in index.instances(sop_instance_uids=sop_instance_uids)}
            for uid in sop_instance_uids:
                if uid in found:
                    records.setdefault(uid, found[uid])
                elif require_all:
                    self._raise_missing(uid)
        for uid in series_uids:
            records.update((r.sop_instance_uid, r) for r in index.instances(series_uid=uid))
        for uid in study_uids:
            records.update((r.sop_instance_uid, r) for r in index.instances(study_uid=uid))
        if require_all and not records:
            raise NotFoundError("no such study, series or instance")
        records = self._within_series_scope(action, records, named=bool(series_uids or sop_instance_uids))
        if require_all and not records:
            raise NotFoundError("no such study, series or instance")
        plan = RetrievePlan(self, action, list(records.values()))
        plan.emergency = self._authorize(plan, by_instance=bool(sop_instance_uids) and not (study_uids or series_uids))
        return plan

    def nothing(self, action: Action = Action.RETRIEVE) -> RetrievePlan:
        """The empty plan: what an adapter answers for a refused request where refused must look like absent."""
        return RetrievePlan(self, action, [])

    def instance(self, sop_instance_uid: str, action: Action = Action.RETRIEVE) -> RetrievedObject:
        """One verified object. Unknown and forbidden UIDs look alike to the caller (no IDOR oracle)."""
        (obj,) = self.instances([sop_instance_uid], action)
        return obj

    def instances(self, sop_instance_uids: Sequence[str], action: Action = Action.RETRIEVE) -> list[RetrievedObject]:
        """Several verified objects as one plan (one access record), all in memory; the first failure is raised."""
        return list(self.plan(action, sop_instance_uids=sop_instance_uids).verified())

    def _within_series_scope(self, action: Action, records: dict[str, InstanceRecord], named: bool) -> dict[str, InstanceRecord]:
        """A principal limited to some series (a share link made for them) gets only those (ADR 0010).

        Like a token's scopes this is built in, before any policy: a series named
        outside the scope is refused (recorded) as a study the principal may not
        read; a whole study asked for is narrowed to the series in scope.
        """
        scope = self.principal.series_scope
        if not scope:
            return records
        outside = [r for r in records.values() if r.series_uid not in scope]
        if named and outside:
            first = outside[0]
            resource = Resource("series", first.series_uid, first.study_uid, first.patient_ref)
            self.access.record_refusal(action, resource, "outside the series this share link opens")
            raise AccessDenied(self.principal, action, resource, "outside the series this share link opens")
        return {uid: r for uid, r in records.items() if r.series_uid in scope}

    def _raise_missing(self, uid: str) -> None:
        with read_session(self.ctx.engine) as s:
            tombstone = s.get(Instance, uid)
        if tombstone is not None and tombstone.erased:
            raise ErasedError(f"{uid} was erased")
        raise NotFoundError(f"no instance {uid}")

    def _authorize(self, plan: RetrievePlan, by_instance: bool) -> bool:
        """One decision per study; the first refused study refuses the plan. Returns whether any grant was break-glass."""
        studies = {r.study_uid: r for r in plan.records}
        resources = self.access.study_resources(studies, "instance")
        decisions = self.access.decide_studies(plan.action, resources)
        for study_uid, first in studies.items():
            decision = decisions.get(study_uid, NO_ATTRIBUTES)
            if by_instance:
                resource = Resource("instance", first.sop_instance_uid, study_uid, first.patient_ref, first.modality)
            else:
                resource = Resource("study", study_uid, study_uid, first.patient_ref)
            self.access.enforce(plan.action, resource, decision)
        return any(d.break_glass for d in decisions.values())

    def record_access(self, plan: RetrievePlan) -> None:
        """One ``InstancesAccessed`` event for the whole plan, and the step-up window, in one transaction."""
        now = datetime.now(UTC)
        study_uids = tuple(sorted({r.study_uid for r in plan.records}))
        with self.change() as s:
            self.record(s, InstancesAccessed(
                self.principal, plan.action, tuple(r.sop_instance_uid for r in plan.records), study_uids,
                tuple(sorted({r.patient_ref for r in plan.records})), now, plan.emergency,
            ))
            self.access.count_delivered(s, plan.action, study_uids, now)
