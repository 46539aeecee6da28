"""Key hierarchy bound to the index database (ADR 0001).

Archive-wide keys (index key, identity key; the ledger signing key later) are
stored wrapped in ``wrapped_keys``; one data key per patient is stored wrapped
in its ``patients`` row. All are wrapped by the current KEK, whose id is in
``archive_meta``. :meth:`Keyring.rotate` re-wraps every key under a new KEK in
one transaction, so blobs never need re-encryption.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from threading import Lock

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from dicomguard.crypto.aead import new_key
from dicomguard.crypto.kek import Kek
from dicomguard.errors import DicomGuardError, ErasedError
from dicomguard.index.db import is_sqlite, read_session, write_session
from dicomguard.index.models import ArchiveMeta, Patient, WrappedKey

PURPOSE_INDEX = "index"
PURPOSE_IDENTITY = "identity"
PURPOSE_PATIENT = "patient-data"
PURPOSE_LEDGER = "ledger-signing"
PURPOSE_DEID = "deid"
"""Derives each de-identification project's pseudonym key; created on first use."""
PURPOSE_DETECT = "detect"
"""Seals detection context and alert details; created on first use."""
PURPOSE_SHARE = "share"
"""Seals share-link rows and keys their PIN MACs (ADR 0010); created by the first share."""
PURPOSE_BACKUP = "backup"
"""Derives each snapshot's key (ADR 0007); created by the first backup of a home."""
META_KEK_ID = "kek_id"


class StaleKek(DicomGuardError):
    """Another process rotated the archive's KEK: this process holds the old one and must be restarted."""

    def __init__(self) -> None:
        super().__init__("the archive's keys were rotated by another process: restart this one (with the new sealed key file "
                         "on this host) before it stores anything new")
META_ARCHIVE_ID = "archive_id"
_CACHE = 4096


def current_kek_id(session: Session) -> str | None:
    row = session.get(ArchiveMeta, META_KEK_ID)
    return row.value if row else None


class Keyring:
    """Unwraps keys on demand and caches them in memory (bounded LRU)."""

    def __init__(self, kek: Kek, engine: Engine) -> None:
        self._kek = kek
        self._engine = engine
        self._archive_keys: dict[str, bytes] = {}
        self._patient_keys: OrderedDict[str, bytes] = OrderedDict()
        self._lock = Lock()

    @property
    def kek_id(self) -> str:
        return self._kek.kek_id

    @property
    def kek(self) -> Kek:
        """The unsealed KEK (in memory only): the backup key vault is sealed under it (ADR 0007)."""
        return self._kek

    @staticmethod
    def bootstrap(session: Session, kek: Kek) -> None:
        """Create the archive-wide keys of a new home."""
        session.add(ArchiveMeta(key=META_KEK_ID, value=kek.kek_id))
        session.add(ArchiveMeta(key=META_ARCHIVE_ID, value=secrets.token_hex(8)))
        # Ed25519 private keys are 32 random bytes (RFC 8032 5.1.5), so they wrap like any key.
        for purpose in (PURPOSE_INDEX, PURPOSE_IDENTITY, PURPOSE_LEDGER):
            session.add(WrappedKey(purpose=purpose, kek_id=kek.kek_id, wrapped=kek.wrap(purpose, "archive", new_key())))

    def archive_key(self, purpose: str) -> bytes:
        with self._lock:
            if purpose not in self._archive_keys:
                with read_session(self._engine) as s:
                    row = s.get(WrappedKey, purpose)
                    if row is None:
                        raise KeyError(purpose)
                    self._archive_keys[purpose] = self._kek.unwrap(purpose, "archive", row.wrapped)
            return self._archive_keys[purpose]

    def ensure_archive_key(self, purpose: str) -> bytes:
        """The archive key of ``purpose``, created (and committed) on first use.

        Two processes creating it at the same moment (two nodes, two workers) race on the primary key: the
        loser's insert fails and it uses the winner's key, so every process ends up with the same one.
        """
        try:
            return self.archive_key(purpose)
        except KeyError:
            pass
        try:
            with write_session(self._engine) as s:
                if s.get(WrappedKey, purpose) is None:
                    self.add_archive_key(s, purpose, new_key())
        except DbIntegrityError:
            pass  # another process created it first: read theirs
        return self.archive_key(purpose)

    def check_current(self, session: Session) -> None:
        """Inside a write transaction: refuse (:class:`StaleKek`) if another process rotated the KEK since this one unsealed.

        A key wrapped under a KEK that is no longer the archive's would be lost at the
        next start (its sealed file is gone), so a process with a stale KEK fails closed
        instead: it stores nothing new until restarted. On PostgreSQL the current KEK id
        is read FOR SHARE, so a rotation (which locks it FOR UPDATE first) and a new
        wrapped key cannot interleave; SQLite has one writer at a time anyway.
        """
        stmt = select(ArchiveMeta.value).where(ArchiveMeta.key == META_KEK_ID)
        if not is_sqlite(self._engine):
            stmt = stmt.with_for_update(read=True)
        current = session.scalar(stmt)
        if current is not None and current != self._kek.kek_id:
            raise StaleKek()

    def add_archive_key(self, session: Session, purpose: str, key: bytes) -> None:
        self.check_current(session)
        session.add(WrappedKey(purpose=purpose, kek_id=self._kek.kek_id, wrapped=self._kek.wrap(purpose, "archive", key)))

    def new_patient_key(self, patient_ref: str) -> tuple[bytes, bytes]:
        """A fresh data key for a new patient and its wrapped form."""
        key = new_key()
        return key, self._kek.wrap(PURPOSE_PATIENT, patient_ref, key)

    def remember_patient_key(self, patient_ref: str, key: bytes) -> None:
        with self._lock:
            self._patient_keys[patient_ref] = key
            self._patient_keys.move_to_end(patient_ref)
            while len(self._patient_keys) > _CACHE:
                self._patient_keys.popitem(last=False)

    def patient_key(self, patient_ref: str, session: Session | None = None) -> bytes:
        """The patient's data key; raises :class:`ErasedError` once it was destroyed."""
        with self._lock:
            cached = self._patient_keys.get(patient_ref)
        if cached is not None:
            return cached
        if session is None:
            with read_session(self._engine) as s:
                wrapped = s.scalar(select(Patient.wrapped_data_key).where(Patient.ref == patient_ref))
        else:
            wrapped = session.scalar(select(Patient.wrapped_data_key).where(Patient.ref == patient_ref))
        if wrapped is None:
            raise ErasedError("patient data key destroyed")
        key = self._kek.unwrap(PURPOSE_PATIENT, patient_ref, wrapped)
        self.remember_patient_key(patient_ref, key)
        return key

    def forget_patient_key(self, patient_ref: str) -> None:
        with self._lock:
            self._patient_keys.pop(patient_ref, None)

    def rotate(self, session: Session, new_kek: Kek) -> int:
        """Re-wrap every key under ``new_kek`` inside ``session``; returns the number re-wrapped.

        The caller commits; until then the old KEK stays authoritative, so a
        crash mid-rotation leaves the archive on the old KEK, intact.
        """
        meta = session.get(ArchiveMeta, META_KEK_ID, with_for_update=True)  # first: new keys of other processes wait
        assert meta is not None
        if meta.value != self._kek.kek_id:
            raise StaleKek()
        count = 0
        for row in session.scalars(select(WrappedKey)):
            key = self._kek.unwrap(row.purpose, "archive", row.wrapped)
            row.wrapped = new_kek.wrap(row.purpose, "archive", key)
            row.kek_id = new_kek.kek_id
            count += 1
        rows = session.execute(select(Patient.ref, Patient.wrapped_data_key).where(Patient.wrapped_data_key.is_not(None)))
        for ref, wrapped in rows.all():
            key = self._kek.unwrap(PURPOSE_PATIENT, ref, wrapped)
            session.execute(
                update(Patient)
                .where(Patient.ref == ref)
                .values(wrapped_data_key=new_kek.wrap(PURPOSE_PATIENT, ref, key), kek_id=new_kek.kek_id)
            )
            count += 1
        meta.value = new_kek.kek_id
        return count

    def switch_to(self, new_kek: Kek) -> None:
        """Use ``new_kek`` from now on (after the rotation committed)."""
        self._kek = new_kek
