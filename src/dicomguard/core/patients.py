"""Patient rows: find or create the patient an incoming object belongs to.

A patient is identified by (Issuer of Patient ID, Patient ID) through a blind
index; the row holds the patient's wrapped data key, the sealed identifying
attributes and the blind indexes used by queries.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from dicomguard.core.attributes import PatientAttributes
from dicomguard.core.keyring import Keyring
from dicomguard.core.phi import RowSealer
from dicomguard.crypto.blind_index import BlindField, BlindIndexer
from dicomguard.errors import ErasedError
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import Patient, PatientToken


def patient_phi(p: PatientAttributes) -> dict[str, str]:
    return {"id": p.patient_id, "issuer": p.issuer, "name": p.name, "birth_date": p.birth_date, "sex": p.sex}


class PatientDirectory:
    def __init__(self, engine: Engine, keyring: Keyring, indexer: BlindIndexer) -> None:
        self._engine = engine
        self._keyring = keyring
        self._indexer = indexer
        self._refs: dict[bytes, str] = {}

    def identity_token(self, patient_id: str, issuer: str) -> bytes:
        return self._indexer.token(BlindField.PATIENT_IDENTITY, f"{issuer}\x00{patient_id}")

    def resolve(self, p: PatientAttributes) -> tuple[str, bytes]:
        """The patient's surrogate reference and data key, creating the patient if new."""
        token = self.identity_token(p.patient_id, p.issuer)
        for _ in range(3):
            ref = self._refs.get(token) or self._lookup(token)
            if ref is None:
                ref = self._create(p, token)
            try:
                key = self._keyring.patient_key(ref)
            except ErasedError:
                # Erased by another process since we cached it: a new row is needed.
                self._refs.pop(token, None)
                continue
            self._refs[token] = ref
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

    def _lookup(self, token: bytes) -> str | None:
        with read_session(self._engine) as s:
            return s.scalar(select(Patient.ref).where(Patient.identity_token == token))

    def _create(self, p: PatientAttributes, token: bytes) -> str:
        ref = uuid.uuid4().hex
        key, wrapped = self._keyring.new_patient_key(ref)
        ix = self._indexer
        try:
            with write_session(self._engine) as s:
                s.add(
                    Patient(
                        ref=ref,
                        kek_id=self._keyring.kek_id,
                        wrapped_data_key=wrapped,
                        identity_token=token,
                        id_token=ix.token(BlindField.PATIENT_ID, p.patient_id),
                        name_token=ix.token(BlindField.PATIENT_NAME, p.name),
                        birth_date_token=ix.token(BlindField.PATIENT_BIRTH_DATE, p.birth_date),
                        phi=RowSealer(key).seal("patients", ref, patient_phi(p)),
                        created_at=datetime.now(UTC),
                    )
                )
                s.flush()
                tokens = [(BlindField.PATIENT_ID_PREFIX, t) for t in ix.prefix_tokens(BlindField.PATIENT_ID_PREFIX, p.patient_id)]
                tokens += [(BlindField.PATIENT_NAME_PREFIX, t) for t in ix.prefix_tokens(BlindField.PATIENT_NAME_PREFIX, p.name)]
                s.add_all(PatientToken(patient_ref=ref, field=int(f), token=t) for f, t in tokens)
        except DbIntegrityError:
            # Another writer created this patient first; use theirs.
            existing = self._lookup(token)
            if existing is None:
                raise
            return existing
        self._keyring.remember_patient_key(ref, key)
        return ref

    def forget(self, ref: str) -> None:
        self._refs = {t: r for t, r in self._refs.items() if r != ref}
        self._keyring.forget_patient_key(ref)
