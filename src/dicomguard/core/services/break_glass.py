"""Break-glass: ``POST /auth/break-glass`` calls :class:`BreakGlassService` (see :mod:`dicomguard.core.break_glass`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from dicomguard.core.access import Action, Resource
from dicomguard.core.break_glass import BreakGlassRefused, Grant, check_reason, new_grant
from dicomguard.core.events import BreakGlassStarted
from dicomguard.core.service import Service
from dicomguard.index.db import as_utc, read_session
from dicomguard.index.models import BreakGlassGrant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GrantInForce:
    grant: str
    """The first characters of the grant id (enough to find it in the audit trail)."""
    user: str
    patient_ref: str
    """The archive's internal (pseudonymous) patient reference, not the Patient ID."""
    granted_at: datetime
    expires_at: datetime


class BreakGlassService(Service):
    def in_force(self) -> list[GrantInForce]:
        """Unexpired, unended grants (``audit-read``: the officer reviews them). Patients by internal reference, no reason."""
        self.access.authorize(Action.AUDIT_READ, Resource.audit_log())
        now = datetime.now(UTC)
        with read_session(self.ctx.engine) as s:
            rows = s.scalars(select(BreakGlassGrant).where(BreakGlassGrant.expires_at > now, BreakGlassGrant.ended_at.is_(None))
                             .order_by(BreakGlassGrant.created_at))
            return [GrantInForce(r.id[:8], r.user_name, r.patient_ref, as_utc(r.created_at), as_utc(r.expires_at)) for r in rows]

    def claim(self, patient_id: str, reason: str, issuer: str | None = None) -> Grant:
        """Claim emergency access to one patient: decided, time-boxed, recorded as an "Emergency Override Started" alert.

        A Patient ID the archive does not hold is answered exactly like one it holds
        (a grant id and an expiry; the grant then opens nothing), so break-glass is no
        oracle of who is a patient here; the alert tells the officer it matched nothing.
        """
        self.access.authorize(Action.BREAK_GLASS, Resource("patient"))
        try:
            reason = check_reason(self.ctx, reason)
        except BreakGlassRefused as exc:
            self.access.record_refusal(Action.BREAK_GLASS, Resource("patient"), str(exc))
            raise
        if not patient_id.strip():
            self.access.record_refusal(Action.BREAK_GLASS, Resource("patient"), "no Patient ID")
            raise BreakGlassRefused("break-glass needs a Patient ID")
        matches = self.ctx.patients.find(patient_id, issuer)
        refs = tuple(sorted({ref for ref, _ in matches}))
        for ref in refs:
            self.access.authorize(Action.BREAK_GLASS, Resource.patient(ref))
        now = datetime.now(UTC)
        with self.change() as s:
            grant = new_grant(self.ctx, s, self.principal.name, refs, reason, now)
            self.record(s, BreakGlassStarted(self.principal, grant.id, refs, reason, grant.expires_at, now,
                                             patient_id.strip(), (issuer or "").strip()))
        self.access.forget_context()
        log.warning("break-glass granted to %s (grant %s) until %s", self.principal.label(), grant.id, grant.expires_at.isoformat())
        return grant
