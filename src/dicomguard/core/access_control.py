"""The policy enforcement point of one principal: request context, decisions, refusals, the step-up window.

Every core service asks its :class:`AccessControl` before it touches data or
configuration (zero trust, NIST SP 800-207 tenet 3: access is granted per
request, at the point of use). The decision is the policy engine's
(:class:`dicomguard.core.access.Authorizer`, Cedar in production); this class
only assembles what the engine decides on and keeps what a decision depends on
for a few seconds:

* the request context (``policy/schema.cedarschema``): the session's MFA age,
  the principal's unexpired break-glass grants and the number of distinct
  studies it retrieved or exported in the step-up window;
* query decisions, reused for ``CONTEXT_TTL`` (a QIDO request asks at several
  levels); retrieve/export decisions never are, because the step-up window
  grows with every delivery.

A refusal is recorded (``AccessRefused``, a PS3.15 Security Alert) in its own
transaction before :class:`AccessDenied` or :class:`StepUpRequired` is raised,
so a probe leaves a trace even though the caller learns nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
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
    mfa_age_of,
)
from dicomguard.core.break_glass import emergency_patients
from dicomguard.core.context import ArchiveContext
from dicomguard.core.events import AccessRefused
from dicomguard.core.query import IndexQuery
from dicomguard.core.study_scope import StudyScope
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import ArchiveMeta, Containment, StudyAccessWindow

STUDY_ACTIONS = frozenset({Action.QUERY, Action.RETRIEVE, Action.EXPORT, Action.SHARE})
"""Actions on studies: the only ones a break-glass grant can open."""
BULK_ACTIONS = frozenset({Action.RETRIEVE, Action.EXPORT, Action.DEIDENTIFY, Action.SHARE})
CHANGE_ACTIONS = frozenset({Action.STORE, Action.ERASE, Action.STUDY_CHANGE, Action.PATIENT_RECONCILE})
"""Actions a read-only containment refuses (``context.read_only``)."""
READ_ONLY_KEY = "read_only"
"""``archive_meta`` key set (to the incident's id) while an incident holds the archive read-only."""
"""Actions counted in the step-up window (``context.studies_in_window``)."""
NO_ATTRIBUTES = Decision(False, "the study has no access attributes")


class AccessControl:
    """One principal's policy enforcement point; short-lived (one request, one association, one CLI command)."""

    CONTEXT_TTL = timedelta(seconds=5)
    """How long a built request context (break-glass grants, access window) and query decisions are reused."""

    def __init__(self, ctx: ArchiveContext, principal: Principal) -> None:
        self.ctx = ctx
        self.principal = principal
        self.index = IndexQuery(ctx)
        self._context_cache: dict[str, tuple[datetime, frozenset[str]]] = {}
        self._accessed: frozenset[str] = frozenset()
        """Studies delivered through this object (counted in the step-up window even before a reload)."""
        self._query_memo: dict[str, tuple[Resource, Decision]] = {}
        self._query_memo_at: datetime | None = None

    # -- the request context ---------------------------------------------------------------

    def request_context(self, action: Action | None = None, studies: Iterable[str] = ()) -> RequestContext:
        """The Cedar request context: session MFA age, break-glass grants and the step-up window.

        Only users have grants and a window; devices and the operator get the
        bare context without a database round trip. Each is read at most once per
        ``CONTEXT_TTL``, the ones due together in one snapshot; grants only for
        actions on studies, the window only for retrieve/export.
        """
        now = datetime.now(UTC)
        bulk = action in BULK_ACTIONS
        user = self.principal.kind is PrincipalKind.USER
        name = self.principal.name
        since = now - timedelta(seconds=self.ctx.settings.policy.step_up_window_s)
        loaders: dict[str, Callable[[Session], frozenset[str]]] = {}
        if user and (action is None or action in STUDY_ACTIONS):
            loaders["emergency"] = lambda s: emergency_patients(s, name, now)
        if user and bulk:
            loaders["window"] = lambda s: frozenset(s.scalars(select(StudyAccessWindow.study_uid).where(
                StudyAccessWindow.principal == self.principal.label(), StudyAccessWindow.last_at > since)))
        if user:
            loaders["contained"] = lambda s: frozenset(
                s.scalars(select(Containment.user_name).where(Containment.user_name == name, Containment.level != "record")))
        if action in CHANGE_ACTIONS:
            loaders["read_only"] = lambda s: frozenset(s.scalars(select(ArchiveMeta.value).where(ArchiveMeta.key == READ_ONLY_KEY)))
        loaded = self._cached(now, loaders)
        emergency = loaded.get("emergency", frozenset())
        counted = 0
        if bulk:
            counted = len(loaded.get("window", frozenset()) | self._accessed | set(studies))
        contained = bool(loaded.get("contained"))
        read_only = bool(loaded.get("read_only"))
        return RequestContext(now, mfa_age_of(self.principal, now), emergency, counted, contained=contained, read_only=read_only)

    def _cached(self, now: datetime, loaders: dict[str, Callable[[Session], frozenset[str]]]) -> dict[str, frozenset[str]]:
        """Each value of ``loaders`` as cached for up to ``CONTEXT_TTL``; the ones to read again in one snapshot."""
        stale = [key for key in loaders if (hit := self._context_cache.get(key)) is None or now - hit[0] > self.CONTEXT_TTL]
        if stale:
            with read_session(self.ctx.engine) as s:
                for key in stale:
                    self._context_cache[key] = (now, loaders[key](s))
        return {key: self._context_cache[key][1] for key in loaders}

    def forget_context(self) -> None:
        """Drop cached grants and decisions (after this principal claimed a break-glass grant)."""
        self._context_cache.clear()
        self._query_memo_at = None

    # -- decisions -------------------------------------------------------------------------

    def decide(self, action: Action, resource: Resource, **context: object) -> Decision:
        """The decision on one request; ``context`` sets request-specific fields (e.g. a share's ``recipient``)."""
        built = self.request_context(action, [resource.study_uid] if resource.study_uid else ())
        if context:
            built = replace(built, **context)  # type: ignore[arg-type]
        return self.ctx.authorizer.decide(self.principal, action, resource, built)

    def authorize(self, action: Action, resource: Resource, **context: object) -> Decision:
        """Raise :class:`AccessDenied` or :class:`StepUpRequired` (and record ``AccessRefused``) unless permitted."""
        decision = self.decide(action, resource, **context)
        self.enforce(action, resource, decision)
        return decision

    def enforce(self, action: Action, resource: Resource, decision: Decision) -> None:
        """Do nothing if ``decision`` permits; otherwise record the refusal and raise."""
        if decision.allowed:
            return
        self.record_refusal(action, resource, decision.reason)
        if decision.step_up:
            raise StepUpRequired(self.principal, action, resource, "a fresh MFA confirmation is required: " + decision.reason)
        raise AccessDenied(self.principal, action, resource, decision.reason)

    def record_refusal(self, action: Action, resource: Resource, reason: str) -> None:
        """A refused request as a Security Alert, in a transaction of its own (nothing else happened)."""
        with write_session(self.ctx.engine) as s:
            self.ctx.bus.publish(s, AccessRefused(self.principal, action, resource.kind, resource.uid, reason, datetime.now(UTC)))

    # -- studies ---------------------------------------------------------------------------

    def study_resources(self, study_uids: Iterable[str], kind: str = "study") -> dict[str, Resource]:
        """Study resources with their access attributes, for the known studies among ``study_uids``."""
        return {uid: Resource.study(uid, ref, access, kind) for uid, (ref, access) in self.index.study_access(study_uids).items()}

    def decide_studies(self, action: Action, resources: dict[str, Resource]) -> dict[str, Decision]:
        """One decision per study, in one batch call of the engine; query decisions memoized for ``CONTEXT_TTL``."""
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

    def query_scope(self) -> StudyScope:
        """The studies this principal might be permitted to query, before any is looked at (Cedar partial evaluation,
        ADR 0019): searches read only candidates inside it, so the studies the policies rule out are never decrypted,
        decided or counted against the candidate budget. Every candidate inside is still decided (:meth:`visible_studies`)."""
        return self.ctx.authorizer.study_scope(self.principal, Action.QUERY, self.request_context(Action.QUERY))

    def visible_studies(self, study_uids: Iterable[str]) -> tuple[set[str], bool]:
        """The studies among ``study_uids`` the principal may query; and whether any only under break-glass."""
        decisions = self.decide_studies(Action.QUERY, self.study_resources(study_uids))
        visible = {uid for uid, d in decisions.items() if d.allowed}
        return visible, any(d.break_glass for d in decisions.values() if d.allowed)

    def count_delivered(self, s: Session, action: Action, study_uids: Iterable[str], now: datetime) -> None:
        """Count studies delivered to a user in the step-up window, inside the transaction that records the access."""
        studies = sorted(set(study_uids))
        if self.principal.kind is PrincipalKind.USER and action in BULK_ACTIONS and studies:
            label = self.principal.label()
            since = now - timedelta(seconds=self.ctx.settings.policy.step_up_window_s)
            # this principal's rows: the studies accessed now are renewed, those out of the window dropped
            s.execute(delete(StudyAccessWindow).where(StudyAccessWindow.principal == label, or_(
                StudyAccessWindow.study_uid.in_(studies), StudyAccessWindow.last_at <= since)))
            s.execute(insert(StudyAccessWindow), [{"principal": label, "study_uid": u, "last_at": now} for u in studies])
        self._accessed = self._accessed | set(studies)
