"""Patient rows: find or create the patient an incoming object belongs to.

A patient is identified by (Issuer of Patient ID, Patient ID) through a blind
index; the row holds the patient's wrapped data key, the sealed identifying
attributes and the blind indexes used by queries.

An object joins a patient row only when its demographics (name, birth date, sex)
agree with the row's too. What anyone sees of a patient's demographics therefore
comes only from objects filed under that row, never from a record another storer
filled: an insider who stores a dummy object under another department's Patient
ID sees the name she sent, not the real patient's, and a false name stored first
never shows on later real studies. A known identity arriving with different
demographics gets a row of its own and a :class:`PatientConflict`, raised as a
Security Alert (PS3.15 A.5.3.11) and reconciled by an administrator, never
silently merged (IHE ITI TF-1 Patient Identifier Cross-referencing keeps
conflicting identities apart in the same way).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from dicomguard.core.attributes import PatientAttributes
from dicomguard.core.events import EventBus, PatientIdentityConflict
from dicomguard.core.keyring import Keyring
from dicomguard.core.phi import RowSealer
from dicomguard.core.wildcard_tokens import wildcard_tokens
from dicomguard.crypto.blind_index import BlindField, BlindIndexer, normalize
from dicomguard.errors import ErasedError
from dicomguard.index.db import is_sqlite, read_session, write_session
from dicomguard.index.models import Patient, PatientConflict, PatientToken


def patient_phi(p: PatientAttributes) -> dict[str, str]:
    return {"id": p.patient_id, "issuer": p.issuer, "name": p.name, "birth_date": p.birth_date, "sex": p.sex}


DEMOGRAPHIC_FIELDS = ("name", "birth_date", "sex")


def demographics_of(phi: dict[str, str]) -> tuple[str, str, str]:
    """Name, birth date and sex as compared (PS3.4 C.2.2.2.1: person names case-insensitively, trailing
    empty components ignored; the others exactly, without padding)."""
    return (normalize(BlindField.PATIENT_NAME, phi.get("name", "")), phi.get("birth_date", "").strip(" \x00"),
            phi.get("sex", "").strip(" \x00").upper())


class PatientDirectory:
    def __init__(self, engine: Engine, keyring: Keyring, indexer: BlindIndexer, bus: EventBus | None = None) -> None:
        self._engine = engine
        self._keyring = keyring
        self._indexer = indexer
        self._bus = bus
        self._refs: dict[bytes, str] = {}

    def identity_token(self, patient_id: str, issuer: str) -> bytes:
        return self._indexer.token(BlindField.PATIENT_IDENTITY, f"{issuer}\x00{patient_id}")

    def demographics_token(self, p: PatientAttributes) -> bytes:
        return self._indexer.token(BlindField.PATIENT_DEMOGRAPHICS, "\x00".join((p.issuer, p.patient_id, *demographics_of(patient_phi(p)))))

    def resolve(self, p: PatientAttributes, source: str = "") -> tuple[str, bytes]:
        """The surrogate reference and data key of the patient row this object joins, creating it if new.

        The row is the one whose identity *and* demographics match; a new row for a
        known identity is recorded as a patient-identity conflict from ``source``.
        """
        token = self.identity_token(p.patient_id, p.issuer)
        demographics = self.demographics_token(p)
        for _ in range(3):
            ref = self._refs.get(demographics) or self._lookup(token, demographics, p)
            if ref is None:
                ref = self._create(p, token, demographics, source)
            try:
                key = self._keyring.patient_key(ref)
            except ErasedError:
                # Erased by another process since we cached it: a new row is needed.
                self._refs.pop(demographics, None)
                continue
            self._refs[demographics] = ref
            return ref, key
        raise ErasedError("patient erased repeatedly during ingest")

    def find(self, patient_id: str, issuer: str | None = None) -> list[tuple[str, str]]:
        """``(ref, issuer)`` of each live patient with this Patient ID (and issuer, if given)."""
        token = self._indexer.token(BlindField.PATIENT_ID, patient_id)
        with read_session(self._engine) as s:
            candidates = s.execute(select(Patient.ref, Patient.phi).where(Patient.id_token == token, Patient.erased_at.is_(None))).all()
            matches = []
            for ref, sealed in candidates:
                phi = RowSealer(self._keyring.patient_key(ref, s)).open("patients", ref, sealed)
                if phi["id"] == patient_id.strip() and (issuer is None or phi["issuer"] == issuer):
                    matches.append((ref, phi["issuer"]))
        return matches

    def _lookup(self, token: bytes, demographics: bytes, p: PatientAttributes) -> str | None:
        with read_session(self._engine) as s:
            rows = s.execute(select(Patient.ref, Patient.demographics_token, Patient.phi)
                             .where(Patient.identity_token == token, Patient.erased_at.is_(None))).all()
            for ref, stored, _ in rows:
                if stored == demographics:
                    return str(ref)
            wanted = demographics_of(patient_phi(p))
            legacy = [ref for ref, stored, sealed in rows
                      if stored is None and demographics_of(RowSealer(self._keyring.patient_key(ref, s)).open("patients", ref, sealed)) == wanted]
        if not legacy:
            return None
        # A row written before demographics were indexed: it matches, so index it now.
        with write_session(self._engine) as s:
            s.execute(update(Patient).where(Patient.ref == legacy[0], Patient.demographics_token.is_(None))
                      .values(demographics_token=demographics))
        return legacy[0]

    def _create(self, p: PatientAttributes, token: bytes, demographics: bytes, source: str) -> str:
        ref = uuid.uuid4().hex
        key, wrapped = self._keyring.new_patient_key(ref)
        ix = self._indexer
        try:
            with write_session(self._engine) as s:
                self._keyring.check_current(s)  # a data key wrapped under a rotated-away KEK would be lost
                if not is_sqlite(self._engine):
                    # Creators of one identity take turns (SQLite has one writer anyway), so the second
                    # of two racing with different demographics sees the first and records the conflict.
                    s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int.from_bytes(token[:8], "big", signed=True)})
                # Earlier rows of this identity, oldest first: a new row beside them is a conflict.
                others = s.execute(select(Patient.ref, Patient.phi).where(Patient.identity_token == token, Patient.erased_at.is_(None))
                                   .order_by(Patient.created_at, Patient.ref)).all()
                s.add(
                    Patient(
                        ref=ref,
                        kek_id=self._keyring.kek_id,
                        wrapped_data_key=wrapped,
                        identity_token=token,
                        demographics_token=demographics,
                        id_token=ix.token(BlindField.PATIENT_ID, p.patient_id),
                        name_token=ix.token(BlindField.PATIENT_NAME, p.name),
                        birth_date_token=ix.token(BlindField.PATIENT_BIRTH_DATE, p.birth_date),
                        phi=RowSealer(key).seal("patients", ref, patient_phi(p)),
                        created_at=datetime.now(UTC),
                    )
                )
                s.flush()
                s.add_all(PatientToken(patient_ref=ref, field=int(f), token=t) for f, t in wildcard_tokens(ix, p.patient_id, p.name))
                if others:
                    self._raise_conflict(s, p, ref, others[0], source)
        except DbIntegrityError:
            # Another writer created this row first; use theirs.
            existing = self._lookup(token, demographics, p)
            if existing is None:
                raise
            return existing
        self._keyring.remember_patient_key(ref, key)
        return ref

    def _raise_conflict(self, s: Session, p: PatientAttributes, ref: str, other: tuple[str, bytes], source: str) -> None:
        """Record the conflict with the identity's earliest row, and its Security Alert, in the row's transaction."""
        other_ref, sealed = other
        theirs = demographics_of(RowSealer(self._keyring.patient_key(other_ref, s)).open("patients", other_ref, sealed))
        fields = tuple(f for f, mine, old in zip(DEMOGRAPHIC_FIELDS, demographics_of(patient_phi(p)), theirs, strict=True) if mine != old)
        now = datetime.now(UTC)
        conflict = PatientConflict(patient_ref=ref, other_ref=other_ref, fields=",".join(fields), source=source[:256], created_at=now)
        s.add(conflict)
        s.flush()
        if self._bus is not None:
            self._bus.publish(s, PatientIdentityConflict(conflict.id, ref, other_ref, fields, source, now))

    def forget(self, ref: str) -> None:
        self._refs = {t: r for t, r in self._refs.items() if r != ref}
        self._keyring.forget_patient_key(ref)
