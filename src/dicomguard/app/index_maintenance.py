"""``dicomguard index backfill``: give rows written by earlier versions the blind indexes the current one writes.

Two kinds of rows can lack an index a search would narrow by (ADR 0017):

* patient rows written before migration 0019 have no suffix indexes, so a
  leading-wildcard name or ID search (``*SMITH``) narrows by its other keys
  only until every live patient carries them; the backfill adds them and then
  marks the archive complete (:data:`dicomguard.core.wildcard_tokens.SUFFIX_TOKENS_KEY`);
* study rows written before migration 0016 have no Study Date index, so a date
  search reads their whole year (ADR 0014); the backfill adds it wherever the
  sealed date is a calendar date;
* instance rows written before migration 0018 have no layout (where the data
  set and its Pixel Data lie), so every verified read of them walks the whole
  object again; the backfill reads and verifies each such object once
  (:func:`dicomguard.core.retrieve.retrieve_each`: an object that fails is
  recorded as an integrity violation and left as it was) and records where its
  walk found them.

Searches are exact and reads verified either way (candidates are decrypted and
matched; a layout only says which ranges to hash, ``indexed_structure``); the
backfill only makes them do less. It decrypts each row and object it indexes in
memory and writes blind indexes and offsets only, a batch per transaction, so it can be stopped and
run again (it redoes at most one batch). The run is decided by the policy
(``index-maintain``) and recorded, with its counts, as a Security Configuration
change. Every node must run this version before the backfill, or a patient row
written meanwhile by an older node would lack its suffix indexes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from dicomguard.core.access import Action, Resource
from dicomguard.core.dicom_structure import DEFLATED_LE
from dicomguard.core.events import SecurityConfigurationChanged
from dicomguard.core.ingest import layout_columns
from dicomguard.core.phi import RowSealer
from dicomguard.core.query import after_key
from dicomguard.core.retrieve import retrieve_each
from dicomguard.core.service import Service
from dicomguard.core.study_dates import study_date_token
from dicomguard.core.wildcard_tokens import COMPLETE, SUFFIX_TOKENS_KEY, suffix_tokens, suffix_tokens_complete
from dicomguard.crypto.aead import DecryptionError
from dicomguard.crypto.blind_index import BlindField
from dicomguard.errors import DicomGuardError, ErasedError
from dicomguard.index.db import insert_ignore, read_session
from dicomguard.index.models import ArchiveMeta, Instance, Patient, PatientToken, Study

BATCH = 500
"""Rows per transaction: a stopped run redoes at most this many."""


@dataclass(frozen=True)
class Backfill:
    """What one run indexed."""

    patients: int
    """Patient rows given their suffix indexes (0 when the archive was already complete)."""
    studies: int
    """Study rows given their Study Date index."""
    instances: int
    """Instance rows given the layout of their object."""
    unreadable: int
    """Rows that did not open under their patient's key, and objects that failed verification: left as they were
    (``dicomguard verify`` names them)."""


class IndexMaintenanceService(Service):
    def backfill(self, batch: int = BATCH) -> Backfill:
        """Index the rows written before the current indexes existed (see the module); safe to run again."""
        self.access.authorize(Action.INDEX_MAINTAIN, Resource.archive())
        unreadable = 0
        with read_session(self.ctx.engine) as s:
            complete = suffix_tokens_complete(s)
        patients = 0
        if not complete:
            patients, bad = self._patients(batch)
            unreadable += bad
        studies, bad = self._studies(batch)
        unreadable += bad
        instances, bad = self._layouts(batch)
        unreadable += bad
        with self.change() as s:
            if not complete:
                # A row that does not open is left out of every result anyway (IndexQuery._open), so one without its
                # suffix indexes cannot be dropped by narrowing: the archive is complete.
                insert_ignore(s, ArchiveMeta, key=SUFFIX_TOKENS_KEY, value=COMPLETE)
            change = (f"index backfill: {patients} patient rows given suffix indexes, {studies} study rows given Study Date "
                      f"indexes, {instances} instance rows given their layout, {unreadable} unreadable rows left as they were")
            self.record(s, SecurityConfigurationChanged(self.principal, "archive:index", change, datetime.now(UTC)))
        self.ctx.suffix_tokens_complete = True
        return Backfill(patients, studies, instances, unreadable)

    def _open(self, s: Session, ref: str, table: str, row_id: str, sealed: bytes | None) -> dict[str, str] | None:
        try:
            return RowSealer(self.ctx.keyring.patient_key(ref, s)).open(table, row_id, sealed or b"")
        except (DecryptionError, ErasedError, ValueError):
            return None

    def _patients(self, batch: int) -> tuple[int, int]:
        """Every live patient row's suffix indexes, replaced a batch at a time (keyset over ``created_at, ref``)."""
        done = unreadable = 0
        after: tuple[datetime, str] | None = None
        suffix_fields = (int(BlindField.PATIENT_ID_SUFFIX), int(BlindField.PATIENT_NAME_SUFFIX))
        while True:
            with self.change() as s:
                stmt = after_key(select(Patient.ref, Patient.phi, Patient.created_at).where(Patient.erased_at.is_(None)),
                                 Patient.created_at, Patient.ref, after)
                rows = s.execute(stmt.order_by(Patient.created_at, Patient.ref).limit(batch)).all()
                if not rows:
                    return done, unreadable
                tokens = []
                for ref, sealed, _ in rows:
                    phi = self._open(s, ref, "patients", ref, sealed)
                    if phi is None:
                        unreadable += 1
                        continue
                    tokens += [{"patient_ref": ref, "field": int(f), "token": t} for f, t in suffix_tokens(self.ctx.indexer, phi["id"], phi["name"])]
                    done += 1
                refs = [ref for ref, _, _ in rows]
                s.execute(delete(PatientToken).where(PatientToken.patient_ref.in_(refs), PatientToken.field.in_(suffix_fields)))
                if tokens:
                    s.execute(insert(PatientToken), tokens)
            after = (rows[-1][2], rows[-1][0])

    def _studies(self, batch: int) -> tuple[int, int]:
        """Study Date indexes of the studies that have none and a year (a study without a year has no calendar date)."""
        done = unreadable = 0
        after: tuple[datetime, str] | None = None
        while True:
            with self.change() as s:
                stmt = (select(Study.uid, Study.patient_ref, Study.phi, Study.created_at)
                        .join(Patient, Patient.ref == Study.patient_ref)
                        .where(Study.study_date_token.is_(None), Study.study_year.is_not(None), Patient.erased_at.is_(None)))
                stmt = after_key(stmt, Study.created_at, Study.uid, after)
                rows = s.execute(stmt.order_by(Study.created_at, Study.uid).limit(batch)).all()
                if not rows:
                    return done, unreadable
                for uid, ref, sealed, _ in rows:
                    phi = self._open(s, ref, "studies", uid, sealed)
                    if phi is None:
                        unreadable += 1
                        continue
                    token = study_date_token(self.ctx.indexer, phi.get("date"))
                    if token is not None:
                        s.execute(update(Study).where(Study.uid == uid).values(study_date_token=token))
                        done += 1
            after = (rows[-1][3], rows[-1][0])

    def _layouts(self, batch: int) -> tuple[int, int]:
        """The layout of every live object stored without one (keyset over the SOP Instance UID), each object read
        and verified on the verifying threads; Deflated objects keep none (their reads inflate and walk anyway)."""
        done = failed = 0
        after = ""
        rows = Instance.__table__
        while True:
            with read_session(self.ctx.engine) as s:
                uids = list(s.scalars(select(Instance.sop_instance_uid)
                                      .where(Instance.dataset_offset.is_(None), Instance.erased.is_(False),
                                             Instance.transfer_syntax != DEFLATED_LE, Instance.sop_instance_uid > after)
                                      .order_by(Instance.sop_instance_uid).limit(batch)))
            if not uids:
                return done, failed
            layouts = []
            for uid, outcome in retrieve_each(self.ctx, uids):
                if isinstance(outcome, DicomGuardError):
                    failed += 1  # an integrity failure is recorded by the read itself
                    continue
                layout = layout_columns(outcome.structure)
                if layout["dataset_offset"] is not None:
                    layouts.append({"uid_": uid, **{f"{k}_": v for k, v in layout.items()}})
            if layouts:
                with self.change() as s:
                    s.execute(update(rows).where(rows.c.sop_instance_uid == bindparam("uid_"), rows.c.dataset_offset.is_(None))
                              .values(dataset_offset=bindparam("dataset_offset_"), pixel_start=bindparam("pixel_start_"),
                                      pixel_end=bindparam("pixel_end_")), layouts)
                done += len(layouts)
            after = uids[-1]
