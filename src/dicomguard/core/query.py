"""Queries over the encrypted index (patient, study, series, instance levels).

Blind indexes narrow the candidates (exact tokens, or prefix tokens for a
wildcard pattern with a literal prefix); candidates are then decrypted and
matched exactly (:mod:`dicomguard.core.matching`), so results are exact even
though the database never sees a name or an ID. Erased patients' rows are
tombstones and never match.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from dicomguard.core.access import StudyAccess
from dicomguard.core.context import ArchiveContext
from dicomguard.core.matching import (
    has_wildcard,
    literal_prefix,
    literal_suffix,
    match_range,
    match_uid_list,
    match_value,
)
from dicomguard.core.phi import RowSealer
from dicomguard.core.study_dates import study_date_condition
from dicomguard.core.study_scope import EVERYTHING, Everything, StudyScope
from dicomguard.core.study_scope_sql import scope_condition
from dicomguard.core.wildcard_tokens import suffix_tokens_complete
from dicomguard.crypto.aead import DecryptionError
from dicomguard.crypto.blind_index import BlindField, normalize
from dicomguard.errors import ErasedError, SearchTooBroad
from dicomguard.index.db import as_utc, read_session
from dicomguard.index.models import Instance, Patient, PatientToken, Series, Study

log = logging.getLogger(__name__)


def _chunks(keys: list[str], size: int = 500) -> Iterator[list[str]]:
    """``keys`` in slices small enough for one ``IN (...)`` each."""
    for start in range(0, len(keys), size):
        yield keys[start:start + size]


def after_key(stmt: Select[Any], time_col: Any, key_col: Any, after: tuple[datetime, str] | None) -> Select[Any]:
    """``stmt`` limited to the rows after ``after`` in ``(time_col, key_col)`` order (keyset paging; all rows if None)."""
    if after is None:
        return stmt
    return stmt.where(or_(time_col > after[0], and_(time_col == after[0], key_col > after[1])))


def _keyset_pages(s: Session, stmt: Select[Any], time_col: Any, key_col: Any, first: int, largest: int,
                  budget: int | None = None, need: int = 0, after: tuple[datetime, str] | None = None) -> Iterator[Sequence[Any]]:
    """Rows of ``stmt`` (ordered by ``time_col, key_col``) a page at a time, ``first`` rows doubling up to ``largest``:
    keyset paging, each page one index range scan after the last row seen, never one unbounded read (a huge offset
    reads more pages). ``time_col`` and ``key_col`` must be selected as the row's last and first columns.

    ``budget``: at most this many rows in all; asked for more while more exist, it raises :class:`SearchTooBroad`
    (one row is read to tell), so a caller's work is bounded whatever it asks for. ``need``: the rows the caller
    reads at least before it stops (a page deeper than the budget): when that is over the budget and more rows
    than the budget exist, the refusal is certain and is raised before any row is read or decrypted (ADR 0017).
    ``after``: start after this ``(time, key)`` (a continuation): the budget counts from there."""
    stmt = after_key(stmt, time_col, key_col, after)
    # The probe asks only whether more than ``budget`` rows exist, so it drops the order: the database may stop at the
    # row after the budget however it reads, instead of sorting every match first (a policy scope can make a sort of
    # the whole scope look cheaper than an ordered index scan to the planner).
    if budget is not None and need > budget and s.execute(stmt.order_by(None).offset(budget).limit(1)).first() is not None:
        raise SearchTooBroad(budget)
    size = min(largest, max(1, first))
    last: tuple[datetime, str] | None = None
    read = 0
    while True:
        page = after_key(stmt, time_col, key_col, last)
        take = size if budget is None else min(size, budget - read)
        if take <= 0:
            assert budget is not None
            if s.execute(page.order_by(None).limit(1)).first() is not None:
                raise SearchTooBroad(budget)
            return
        rows = s.execute(page.limit(take)).all()
        if not rows:
            return
        read += len(rows)
        yield rows
        if len(rows) < take:
            return
        last = (rows[-1][-1], rows[-1][0])
        size = min(largest, size * 2)


def _with_study_in(stmt: Select[Any], scope: StudyScope) -> Select[Any]:
    """``stmt`` over patients, limited to those with a study inside ``scope`` (ADR 0019)."""
    if isinstance(scope, Everything):
        return stmt
    return stmt.where(exists().where(Study.patient_ref == Patient.ref, scope_condition(scope)))


def _bounded(rows: Sequence[Any], budget: int | None) -> Sequence[Any]:
    """``rows`` (read with ``LIMIT budget + 1``), or :class:`SearchTooBroad` when there were more than ``budget``."""
    if budget is not None and len(rows) > budget:
        raise SearchTooBroad(budget)
    return rows


def _limited(stmt: Select[Any], budget: int | None) -> Select[Any]:
    return stmt if budget is None else stmt.limit(budget + 1)


WHOLE_ARCHIVE_ABOVE = 5000
"""Past this many matched rows, one grouped count over the archive is cheaper than many ``IN`` lists."""


def _count_slices(keys: list[str]) -> Iterator[list[str] | None]:
    """Slices of ``keys`` to count for, or one ``None`` (count everything) when most of the archive matched."""
    if len(keys) > WHOLE_ARCHIVE_ABOVE:
        yield None
    else:
        yield from _chunks(keys)


def _within(stmt: Select[Any], column: Any, chunk: list[str] | None) -> Select[Any]:
    return stmt if chunk is None else stmt.where(column.in_(chunk))


@dataclass(frozen=True)
class PatientFilter:
    patient_id: str | None = None
    name: str | None = None
    birth_date: str | None = None
    refs: frozenset[str] | None = None
    """Only these patients (the patients of a page of studies), when set."""

    def is_universal(self) -> bool:
        return not (self.patient_id or self.name or self.birth_date) and self.refs is None


@dataclass(frozen=True)
class StudyFilter:
    patient: PatientFilter = field(default_factory=PatientFilter)
    study_uid: str | None = None
    accession_number: str | None = None
    study_date: str | None = None
    modality: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class PatientRecord:
    ref: str
    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str
    studies: int
    instances: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StudyRecord:
    uid: str
    patient_ref: str
    patient_id: str
    patient_name: str
    date: str
    time: str
    accession_number: str
    study_id: str
    description: str
    referring_physician: str
    modalities: list[str]
    series: int
    instances: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SeriesRecord:
    uid: str
    study_uid: str
    modality: str
    number: int | None
    description: str
    date: str
    instances: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InstanceRecord:
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    patient_ref: str
    modality: str
    sop_class_uid: str
    transfer_syntax: str
    number: int | None
    frames: int | None
    rows: int | None
    columns: int | None
    size: int
    stored_at: datetime
    pixel_sha256: str
    header_sha256: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["stored_at"] = self.stored_at.isoformat()
        return d


_RECORD_COLUMNS = (Instance.sop_instance_uid, Instance.series_uid, Instance.study_uid, Instance.patient_ref, Instance.sop_class_uid,
                   Instance.transfer_syntax, Instance.instance_number, Instance.number_of_frames, Instance.rows, Instance.columns,
                   Instance.size, Instance.stored_at, Instance.pixel_sha256, Instance.header_sha256)
"""The index columns of an :class:`InstanceRecord`."""


class IndexQuery:
    """Read-side service; every method returns plain records with decrypted values."""

    def __init__(self, ctx: ArchiveContext) -> None:
        self.ctx = ctx

    def _sealer(self, s: Session, patient_ref: str) -> RowSealer:
        return RowSealer(self.ctx.keyring.patient_key(patient_ref, s))

    def _open(self, s: Session, patient_ref: str, table: str, row_id: str, sealed: bytes | None) -> dict[str, Any] | None:
        """A row's sealed values, or None (logged) when the row does not open under its patient's key.

        Stored data never breaks a query: a damaged, moved or mis-keyed row is left out
        of every result, and ``dicomguard verify`` names it (``index-row-unreadable``).
        """
        try:
            return self._sealer(s, patient_ref).open(table, row_id, sealed or b"")
        except (DecryptionError, ErasedError, ValueError):
            log.error("index row %s %s does not open under its patient's key: left out (run dicomguard verify)", table, row_id)
            return None

    def _suffixes_usable(self) -> bool:
        """Whether leading-wildcard patterns may narrow by suffix indexes: only once every patient row carries them
        (``core.wildcard_tokens``), since narrowing must never drop a row the exact match keeps."""
        if not self.ctx.suffix_tokens_complete:
            with read_session(self.ctx.engine) as s:
                self.ctx.suffix_tokens_complete = suffix_tokens_complete(s)
        return self.ctx.suffix_tokens_complete

    def _narrow_patients(self, stmt: Select[Any], f: PatientFilter) -> Select[Any]:
        ix = self.ctx.indexer
        for pattern, exact_col, exact_field, prefix_field, suffix_field in (
            (f.patient_id, Patient.id_token, BlindField.PATIENT_ID, BlindField.PATIENT_ID_PREFIX, BlindField.PATIENT_ID_SUFFIX),
            (f.name, Patient.name_token, BlindField.PATIENT_NAME, BlindField.PATIENT_NAME_PREFIX, BlindField.PATIENT_NAME_SUFFIX),
        ):
            if not pattern or pattern == "*":
                continue
            if not has_wildcard(pattern):
                stmt = stmt.where(exact_col == ix.token(exact_field, pattern))
                continue
            # The longer literal end narrows more (ADR 0017): ``DOE*`` by its prefix, ``*SMITH`` by its suffix.
            head, tail = normalize(prefix_field, literal_prefix(pattern)), normalize(suffix_field, literal_suffix(pattern))
            by, token = prefix_field, ix.query_prefix_token(prefix_field, head)
            if len(tail) > len(head) and self._suffixes_usable():
                by, token = suffix_field, ix.query_suffix_token(suffix_field, tail)
            if token is not None:
                sub = select(PatientToken.patient_ref).where(PatientToken.field == int(by), PatientToken.token == token)
                stmt = stmt.where(Patient.ref.in_(sub))
        if f.refs is not None:
            stmt = stmt.where(Patient.ref.in_(sorted(f.refs)))
        if f.birth_date and "-" not in f.birth_date and not has_wildcard(f.birth_date):
            stmt = stmt.where(Patient.birth_date_token == ix.token(BlindField.PATIENT_BIRTH_DATE, f.birth_date))
        return stmt

    @staticmethod
    def _patient_matches(phi: dict[str, str], f: PatientFilter) -> bool:
        return (
            match_value(f.patient_id, phi["id"])
            and match_value(f.name, phi["name"], person_name=True)
            and match_range(f.birth_date, phi["birth_date"])
        )

    def study_access(self, study_uids: Iterable[str]) -> dict[str, tuple[str, StudyAccess]]:
        """Patient reference and policy attributes of each known study (no PHI is decrypted)."""
        uids = list(dict.fromkeys(study_uids))
        out: dict[str, tuple[str, StudyAccess]] = {}
        with read_session(self.ctx.engine) as s:
            for chunk in _chunks(uids):
                modalities: dict[str, set[str]] = {}
                for study_uid, modality in s.execute(select(Series.study_uid, Series.modality).where(Series.study_uid.in_(chunk))):
                    if modality:
                        modalities.setdefault(study_uid, set()).add(modality)
                rows = s.execute(
                    select(Study.uid, Study.patient_ref, Study.department, Study.site, Study.labels, Study.referring_token, Study.created_at)
                    .where(Study.uid.in_(chunk))
                )
                for uid, ref, department, site, labels, referring, created in rows:
                    out[uid] = (ref, StudyAccess(
                        department or "", site or "", frozenset(filter(None, (labels or "").split(","))),
                        frozenset(modalities.get(uid, ())), bytes(referring).hex() if referring else "", as_utc(created),
                    ))
        return out

    def studies_holding(self, *, series_uids: Sequence[str] = (), sop_instance_uids: Sequence[str] = ()) -> set[str]:
        """Study Instance UIDs of the named live series and instances (clear columns, nothing decrypted): a search
        that names a series or an instance reads that study, not the archive."""
        found: set[str] = set()
        with read_session(self.ctx.engine) as s:
            for chunk in _chunks(list(dict.fromkeys(series_uids))):
                found.update(s.scalars(select(Series.study_uid).where(Series.uid.in_(chunk))))
            for chunk in _chunks(list(dict.fromkeys(sop_instance_uids))):
                found.update(s.scalars(select(Instance.study_uid).where(Instance.sop_instance_uid.in_(chunk), Instance.erased.is_(False))))
        return found

    def patients(self, f: PatientFilter | None = None, *, budget: int | None = None,
                 scope: StudyScope = EVERYTHING) -> list[PatientRecord]:
        """Every matching patient with a study inside ``scope``; ``budget``: read at most that many candidates, else
        :class:`SearchTooBroad`."""
        f = f or PatientFilter()
        with read_session(self.ctx.engine) as s:
            stmt = _with_study_in(self._narrow_patients(select(Patient.ref, Patient.phi).where(Patient.erased_at.is_(None)), f), scope)
            rows = _bounded(s.execute(_limited(stmt.order_by(Patient.created_at, Patient.ref), budget)).all(), budget)
            counts: dict[str, int] = {}
            study_counts: dict[str, int] = {}
            for chunk in _count_slices([ref for ref, _ in rows]):  # counted for the matched patients, not the whole archive
                counts.update(s.execute(_within(select(Instance.patient_ref, func.count()).where(Instance.erased.is_(False)),
                                                Instance.patient_ref, chunk).group_by(Instance.patient_ref)).all())
                study_counts.update(s.execute(_within(select(Study.patient_ref, func.count()), Study.patient_ref, chunk)
                                              .group_by(Study.patient_ref)).all())
            out = []
            for ref, sealed in rows:
                phi = self._open(s, ref, "patients", ref, sealed)
                if phi is not None and self._patient_matches(phi, f):
                    out.append(
                        PatientRecord(ref, phi["id"], phi["issuer"], phi["name"], phi["birth_date"], phi["sex"],
                                      study_counts.get(ref, 0), counts.get(ref, 0))
                    )
            return out

    def patient_batches(self, f: PatientFilter | None = None, *, first: int = 64, largest: int = 2048,
                        budget: int | None = None, need: int = 0, scope: StudyScope = EVERYTHING) -> Iterator[list[PatientRecord]]:
        """The matching patients in the order of :meth:`patients`, a batch of candidates at a time (``first`` rows,
        doubling up to ``largest``; keyset over ``(created_at, ref)``, index ``ix_patients_created_at_ref``), with
        no counts (``studies``, ``instances`` 0: the caller counts what the principal may see). A caller that stops
        once it has a page decrypts no further patient; ``budget``, ``need``: see :func:`_keyset_pages`; ``scope``: only
        patients with a study inside it are candidates."""
        f = f or PatientFilter()
        stmt = self._narrow_patients(select(Patient.ref, Patient.phi, Patient.created_at).where(Patient.erased_at.is_(None)), f)
        stmt = _with_study_in(stmt, scope)
        stmt = stmt.order_by(Patient.created_at, Patient.ref)
        with read_session(self.ctx.engine) as s:
            for rows in _keyset_pages(s, stmt, Patient.created_at, Patient.ref, first, largest, budget, need):
                batch = []
                for ref, sealed, _ in rows:
                    phi = self._open(s, ref, "patients", ref, sealed)
                    if phi is not None and self._patient_matches(phi, f):
                        batch.append(PatientRecord(ref, phi["id"], phi["issuer"], phi["name"], phi["birth_date"], phi["sex"], 0, 0))
                yield batch

    def studies_of_patients(self, refs: Sequence[str]) -> list[tuple[str, str, int]]:
        """(Study Instance UID, patient ref, live instances) of every study of these patients: clear columns only."""
        out: list[tuple[str, str, int]] = []
        with read_session(self.ctx.engine) as s:
            for chunk in _chunks(list(dict.fromkeys(refs))):
                studies = s.execute(select(Study.uid, Study.patient_ref).where(Study.patient_ref.in_(chunk))).all()
                counts = dict(s.execute(select(Instance.study_uid, func.count()).where(
                    Instance.patient_ref.in_(chunk), Instance.erased.is_(False)).group_by(Instance.study_uid)).all())
                out.extend((uid, ref, counts.get(uid, 0)) for uid, ref in studies)
        return out

    def _study_select(self, f: StudyFilter, scope: StudyScope = EVERYTHING) -> Select[Any]:
        """Candidate studies of ``f`` (uid, patient ref, sealed study, sealed patient, storage time) inside ``scope``
        (what the principal's policies leave, ADR 0019), narrowed by blind indexes and clear columns only; every
        candidate is still matched exactly once decrypted, and decided."""
        stmt = (
            select(Study.uid, Study.patient_ref, Study.phi, Patient.phi, Study.created_at)
            .join(Patient, Patient.ref == Study.patient_ref)
            .where(Patient.erased_at.is_(None))
        )
        if not isinstance(scope, Everything):
            stmt = stmt.where(scope_condition(scope))
        stmt = self._narrow_patients(stmt, f.patient)
        if f.study_uid:
            stmt = stmt.where(Study.uid.in_([u.strip() for u in f.study_uid.split("\\")]))
        if f.accession_number and not has_wildcard(f.accession_number):
            stmt = stmt.where(Study.accession_token == self.ctx.indexer.token(BlindField.ACCESSION_NUMBER, f.accession_number))
        if f.modality and not has_wildcard(f.modality) and not any(c in f.modality for c in "\\,"):
            # A study has the modality if one of its series has it (clear column, PS3.4 C.6.2.1.2 ModalitiesInStudy).
            stmt = stmt.where(exists().where(Series.study_uid == Study.uid, Series.modality == f.modality.strip(" \x00")))
        dates = study_date_condition(self.ctx.indexer, f.study_date)
        return stmt if dates is None else stmt.where(dates)

    def _study_records(self, s: Session, rows: Sequence[Any], f: StudyFilter, slices: Iterable[list[str] | None]) -> list[StudyRecord]:
        """The candidates that match ``f`` once decrypted, with modalities and counts of those studies (``slices``)."""
        modalities: dict[str, set[str]] = {}
        series_counts: dict[str, int] = {}
        instance_counts: dict[str, int] = {}
        for chunk in slices:
            for study_uid, modality in s.execute(_within(select(Series.study_uid, Series.modality), Series.study_uid, chunk)).all():
                modalities.setdefault(study_uid, set()).add(modality or "")
                series_counts[study_uid] = series_counts.get(study_uid, 0) + 1
            instance_counts.update(s.execute(_within(select(Instance.study_uid, func.count()).where(Instance.erased.is_(False)),
                                                     Instance.study_uid, chunk).group_by(Instance.study_uid)).all())
        out = []
        for uid, ref, study_sealed, patient_sealed, _ in rows:
            pphi = self._open(s, ref, "patients", ref, patient_sealed)
            sphi = self._open(s, ref, "studies", uid, study_sealed)
            if pphi is None or sphi is None:
                continue
            mods = sorted(m for m in modalities.get(uid, set()) if m)
            if not (
                self._patient_matches(pphi, f.patient)
                and match_uid_list(f.study_uid, uid)
                and match_value(f.accession_number, sphi["accession_number"])
                and match_range(f.study_date, sphi["date"])
                and match_value(f.description, sphi["description"])
                and (not f.modality or any(match_value(f.modality, m) for m in mods))
            ):
                continue
            out.append(
                StudyRecord(uid, ref, pphi["id"], pphi["name"], sphi["date"], sphi["time"], sphi["accession_number"],
                            sphi["study_id"], sphi["description"], sphi["referring_physician"], mods,
                            series_counts.get(uid, 0), instance_counts.get(uid, 0))
            )
        return out

    def studies(self, f: StudyFilter | None = None, *, budget: int | None = None,
                scope: StudyScope = EVERYTHING) -> list[StudyRecord]:
        """Every matching study inside ``scope``, in storage order; ``budget``: read at most that many candidates,
        else :class:`SearchTooBroad`."""
        f = f or StudyFilter()
        with read_session(self.ctx.engine) as s:
            rows = _bounded(s.execute(_limited(self._study_select(f, scope).order_by(Study.created_at, Study.uid), budget)).all(), budget)
            # Counted for the matched studies, not the whole archive (unless most of it matched).
            return self._study_records(s, rows, f, _count_slices([r[0] for r in rows]))

    def study_batches(self, f: StudyFilter | None = None, *, first: int = 64, largest: int = 2048,
                      budget: int | None = None, need: int = 0, scope: StudyScope = EVERYTHING,
                      after: tuple[datetime, str] | None = None) -> Iterator[list[StudyRecord]]:
        """The matching studies in storage order, a batch of candidates at a time (``first`` rows, doubling up to
        ``largest``): a caller that stops once it has a page (closing the generator) decrypts no further candidate,
        so listing the first page of a large archive costs a page, not the archive. Keyset paging over
        ``(created_at, uid)`` (index ``ix_studies_created_at_uid``) keeps each batch one index range scan. ``budget``:
        at most that many candidates in all; ``need``: the candidates the caller needs at least (:func:`_keyset_pages`);
        ``scope``: only studies inside it are candidates; ``after``: only studies after this position
        (:meth:`study_position`), a continuation."""
        f = f or StudyFilter()
        stmt = self._study_select(f, scope).order_by(Study.created_at, Study.uid)
        with read_session(self.ctx.engine) as s:
            for rows in _keyset_pages(s, stmt, Study.created_at, Study.uid, first, largest, budget, need, after):
                yield self._study_records(s, rows, f, _chunks([r[0] for r in rows]))

    def study_position(self, study_uid: str) -> tuple[datetime, str] | None:
        """Where a study lies in storage order (``created_at, uid``: the order of :meth:`study_batches`), or None."""
        with read_session(self.ctx.engine) as s:
            created = s.scalar(select(Study.created_at).where(Study.uid == study_uid))
        return None if created is None else (created, study_uid)

    def series(self, study_uid: str | None = None, modality: str | None = None, series_uid: str | None = None, *,
               study_uids: Sequence[str] | None = None) -> list[SeriesRecord]:
        """Live series matching every key given, by series number; ``study_uids``: of these studies only (at most one
        ``IN`` list's worth, :func:`_chunks`), so a page of studies reads its own series and counts, not the archive's."""
        with read_session(self.ctx.engine) as s:
            stmt = (
                select(Series.uid, Series.study_uid, Series.modality, Series.series_number, Series.phi, Study.patient_ref)
                .join(Study, Study.uid == Series.study_uid)
                .join(Patient, Patient.ref == Study.patient_ref)
                .where(Patient.erased_at.is_(None))
            )
            counted = select(Instance.series_uid, func.count()).where(Instance.erased.is_(False))
            if study_uid:
                stmt = stmt.where(Series.study_uid == study_uid)
                counted = counted.where(Instance.study_uid == study_uid)
            if study_uids is not None:
                stmt = stmt.where(Series.study_uid.in_(list(study_uids)))
                counted = counted.where(Instance.study_uid.in_(list(study_uids)))
            if series_uid:
                stmt = stmt.where(Series.uid == series_uid)
                counted = counted.where(Instance.series_uid == series_uid)
            counts = dict(s.execute(counted.group_by(Instance.series_uid)).all())
            out = []
            for uid, st_uid, mod, number, sealed, ref in s.execute(stmt.order_by(Series.series_number, Series.uid)).all():
                if not match_value(modality, mod or ""):
                    continue
                phi = self._open(s, ref, "series", uid, sealed)
                if phi is None:
                    continue
                out.append(SeriesRecord(uid, st_uid, mod or "", number, phi["description"], phi["date"], counts.get(uid, 0)))
            return out

    def instances(
        self, *, study_uid: str | None = None, series_uid: str | None = None, sop_instance_uid: str | None = None,
        sop_instance_uids: Iterable[str] | None = None, series_uids: Sequence[str] | None = None,
    ) -> list[InstanceRecord]:
        """Live instances matching every key given; ``sop_instance_uids`` looks many up in a few queries;
        ``series_uids``: of these series only (at most one ``IN`` list's worth)."""
        if sop_instance_uids is not None:
            wanted = list(dict.fromkeys(sop_instance_uids))
            return [r for start in range(0, len(wanted), 500)
                    for r in self._instances(study_uid, series_uid, sop_instance_uid, wanted[start:start + 500], series_uids)]
        return self._instances(study_uid, series_uid, sop_instance_uid, None, series_uids)

    def _instances(self, study_uid: str | None, series_uid: str | None, sop_instance_uid: str | None,
                   uids: list[str] | None, series_uids: Sequence[str] | None = None) -> list[InstanceRecord]:
        with read_session(self.ctx.engine) as s:
            # Plain rows of the columns a record holds, not ORM objects: building those cost more than the query.
            stmt = select(*_RECORD_COLUMNS, Series.modality).join(Series, Series.uid == Instance.series_uid).where(Instance.erased.is_(False))
            if study_uid:
                stmt = stmt.where(Instance.study_uid == study_uid)
            if series_uids is not None:
                stmt = stmt.where(Instance.series_uid.in_(list(series_uids)))
            if series_uid:
                stmt = stmt.where(Instance.series_uid == series_uid)
            if sop_instance_uid:
                stmt = stmt.where(Instance.sop_instance_uid == sop_instance_uid)
            if uids is not None:
                stmt = stmt.where(Instance.sop_instance_uid.in_(uids))
            rows = s.connection().execute(stmt.order_by(Instance.series_uid, Instance.instance_number, Instance.sop_instance_uid)).all()
            return [
                InstanceRecord(r.sop_instance_uid, r.series_uid, r.study_uid, r.patient_ref, r.modality or "", r.sop_class_uid,
                               r.transfer_syntax, r.instance_number, r.number_of_frames, r.rows, r.columns, r.size,
                               r.stored_at, r.pixel_sha256.hex(), r.header_sha256.hex())
                for r in rows
            ]
