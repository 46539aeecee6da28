"""Break-glass: emergency access to one patient, time-boxed, justified, alerted (PS3.15 A.5.3.11 Emergency Override; HL7 ActReason BTG).

A clinician who has no relationship to a patient (another department, not the
referring physician) may still need the images *now*. Rather than sharing a
colleague's login, they claim emergency access with a typed reason:

* the claim itself is a policy decision (``break-glass`` action; by default
  clinical roles only) and is refused without a reason of at least
  ``policy.break_glass_min_reason`` characters;
* the grant names the patient (all issuers of that Patient ID) and expires
  after ``policy.break_glass_minutes`` (default 60);
* policies read the grants as ``context.emergency_patients``; every access
  they permit is marked in its audit message (EventTypeCode BTG);
* the claim is a Security Alert "Emergency Override Started" with the reason,
  for the security officer's review (``dicomguard audit search --event-type 110127``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomguard.core.context import ArchiveContext
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.crypto.aead import derive_key, seal
from dicomguard.errors import DicomGuardError
from dicomguard.index.models import BreakGlassGrant


class BreakGlassRefused(DicomGuardError):
    """A break-glass claim that cannot be granted as asked (no reason, unknown patient)."""


@dataclass(frozen=True)
class Grant:
    id: str
    patient_refs: tuple[str, ...]
    expires_at: datetime

    def to_json(self) -> dict[str, object]:
        # Never how many patients matched: an unknown Patient ID is answered like a known one.
        return {"grant_id": self.id, "expires_at": self.expires_at.isoformat()}


def check_reason(ctx: ArchiveContext, reason: str) -> str:
    reason = " ".join(reason.split())
    minimum = ctx.settings.policy.break_glass_min_reason
    if len(reason) < minimum:
        raise BreakGlassRefused(f"break-glass needs a typed reason of at least {minimum} characters")
    return reason[:1000]


def new_grant(ctx: ArchiveContext, s: Session, user_name: str, patient_refs: tuple[str, ...], reason: str, now: datetime) -> Grant:
    """Insert the grant rows (one per patient reference) in the caller's transaction."""
    grant_id = secrets.token_hex(16)
    expires = now + timedelta(minutes=ctx.settings.policy.break_glass_minutes)
    key = derive_key(ctx.keyring.archive_key(PURPOSE_IDENTITY), b"dicomguard break-glass reason v1")
    for n, ref in enumerate(patient_refs):
        row_id = grant_id if n == 0 else f"{grant_id[:28]}{n:04x}"
        s.add(BreakGlassGrant(id=row_id, user_name=user_name, patient_ref=ref, created_at=now, expires_at=expires,
                              reason=seal(key, reason.encode("utf-8"), f"break-glass|{row_id}".encode())))
    return Grant(grant_id, patient_refs, expires)


def emergency_patients(s: Session, user_name: str, now: datetime | None = None) -> frozenset[str]:
    """Patient references with an unexpired, unended grant for this user."""
    now = now or datetime.now(UTC)
    rows = s.scalars(select(BreakGlassGrant.patient_ref).where(
        BreakGlassGrant.user_name == user_name, BreakGlassGrant.expires_at > now, BreakGlassGrant.ended_at.is_(None),
    ))
    return frozenset(rows)
