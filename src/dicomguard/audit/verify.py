"""Verification of the audit trail against what the integrity ledger binds (called by ``dicomguard verify``).

Every record's id and canonical SHA-256
(:func:`dicomguard.audit.trail.canonical_hash`) are in a ledger leaf: the leaf
of the event it recorded, or a leaf of its own for imported messages. For each record this
recomputes the hash from the stored row (clear columns, patient blind indexes
and the message, which must also authenticate under the audit key) and
compares; then it checks that the records and their leaves are in the same
order and that no leaf lacks its row. Found, each with the record it concerns:

* an edited row (any column, the sealed message, a patient index): altered;
* a deleted row: missing (its leaf remains);
* a row added behind the ledger's back: unledgered;
* rows renumbered (``seq`` edited, which would reorder forwarding): misordered.

The ledger leaves themselves are covered by the log checks of ``verify``.
"""

from __future__ import annotations

from collections import defaultdict
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomguard.audit.trail import AuditKeys, RecordFields, canonical_hash, utc
from dicomguard.core.context import ArchiveContext
from dicomguard.core.integrity import VerifyReport
from dicomguard.crypto.aead import DecryptionError
from dicomguard.index.models import AuditPatient, AuditRecord


class AuditProblemKind(StrEnum):
    ALTERED = "audit-record-altered"
    MISSING = "audit-record-missing"
    UNLEDGERED = "audit-record-unledgered"
    MISORDERED = "audit-record-misordered"


def check_audit_trail(ctx: ArchiveContext, s: Session, leaves: dict[str, tuple[int, str]], report: VerifyReport) -> int:
    """Add every audit-trail problem to ``report``; returns the number of records checked.

    ``leaves``: what the ledger binds, ``{record id: (leaf index, canonical SHA-256 hex)}``
    (``ledger.verify.LogView.audit``; the audit trail does not read the ledger itself).
    """
    keys = AuditKeys.for_archive(ctx)
    tokens: dict[int, list[bytes]] = defaultdict(list)
    for seq, token in s.execute(select(AuditPatient.record_seq, AuditPatient.token)):
        tokens[seq].append(token)
    seen: set[str] = set()
    last_leaf = -1
    checked = 0
    for row in s.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars():
        checked += 1
        subject = f"audit record {row.seq}"
        seen.add(row.id)
        entry = leaves.get(row.id)
        if entry is None:
            report.add(AuditProblemKind.UNLEDGERED, subject, "audit record has no ledger entry")
            continue
        idx, want = entry
        if idx < last_leaf:
            report.add(AuditProblemKind.MISORDERED, subject, "records are not in the order the ledger recorded them")
        last_leaf = max(last_leaf, idx)
        try:
            xml = keys.open(row.id, row.body)
        except DecryptionError:
            report.add(AuditProblemKind.ALTERED, subject, "sealed message fails authentication (altered or moved)")
            continue
        fields = RecordFields(
            row.id, utc(row.recorded_at), utc(row.event_time), row.event_id, row.event_type, row.action, int(row.outcome),
            row.origin, row.user_token, row.dedup_token, tuple(tokens.get(row.seq, ())), xml,
        )
        if canonical_hash(fields).hex() != want:
            report.add(AuditProblemKind.ALTERED, subject, "differs from its ledger entry (a column or patient index was edited)")
    for record_id in leaves.keys() - seen:
        report.add(AuditProblemKind.MISSING, f"audit record {record_id}", f"ledger entry {leaves[record_id][0]} has no audit record (deleted)")
    return checked
