"""Queries: QIDO-RS, C-FIND, ``dicomguard ls`` and ``show`` all call :class:`QueryService`.

Results are filtered, not refused: a study the principal may not query never
appears, so an unknown and a forbidden study answer alike (no existence
oracle). Every query is one ``QueryPerformed`` event (PS3.15 A.5.3.10),
committed before the results are returned: a query that returned PHI always
left its audit record. When a listing named one study or series and the
policy hid all of it, the refusal is recorded too.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TypeVar

from dicomguard.core.access import Action, Resource
from dicomguard.core.events import QueryPerformed
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.core.matching import uid_list
from dicomguard.core.query import (
    InstanceRecord,
    PatientFilter,
    PatientRecord,
    SeriesRecord,
    StudyFilter,
    StudyRecord,
)
from dicomguard.core.service import Service
from dicomguard.crypto.aead import DecryptionError, derive_key, open_sealed, seal
from dicomguard.errors import InvalidContinuation, NotFoundError, SearchTooBroad

_T = TypeVar("_T")
_CONTINUATION_INFO = b"dicomguard qido-rs continuation v1"
_STUDIES_PER_READ = 64
"""Studies whose series one query reads (one ``IN`` list)."""
_SERIES_PER_READ = 16
"""Series whose instances one query reads: a page of instances reads about a page's worth of rows."""


def _instance_order(i: InstanceRecord) -> tuple[int, int, str]:
    return (i.number is None, i.number or 0, i.sop_instance_uid)


@dataclass(frozen=True)
class Description:
    """One study, series or instance and its children (``dicomguard show``)."""

    level: str
    """``study``, ``series`` or ``instance``."""
    study: StudyRecord | None = None
    series: SeriesRecord | None = None
    instance: InstanceRecord | None = None
    children: Sequence[SeriesRecord | InstanceRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        if self.level == "study":
            assert self.study is not None
            return {"level": "study", **self.study.to_json(), "series_list": [c.to_json() for c in self.children]}
        if self.level == "series":
            assert self.series is not None
            return {"level": "series", **self.series.to_json(), "instance_list": [c.to_json() for c in self.children]}
        assert self.instance is not None
        return {"level": "instance", **self.instance.to_json()}


@dataclass
class _OneQuery:
    """Searches made for one request, recorded as one query (see :meth:`QueryService.one_query`)."""

    level: str
    keys: dict[str, str] = field(default_factory=dict)
    results: int | None = None
    """The number of results the request answered with; by default the count of its last search."""
    last: int = 0
    emergency: bool = False


class QueryService(Service):
    _collecting: _OneQuery | None = None

    @property
    def _budget(self) -> int:
        """Candidate rows one search may decrypt and decide (``limits.max_search_candidates``, ADR 0017)."""
        return self.ctx.settings.limits.max_search_candidates

    def _recording_refusal(self, level: str, keys: dict[str, str | None], search: Callable[[], _T]) -> _T:
        """``search()``; a search refused as too broad is recorded first, with its keys and 0 results (inside
        :meth:`one_query`, as that request's record)."""
        try:
            return search()
        except SearchTooBroad:
            self._record(level, keys, 0)
            raise

    def _record(self, level: str, keys: dict[str, str | None], results: int, emergency: bool = False) -> None:
        if self._collecting is not None:
            c = self._collecting
            for k, v in keys.items():
                if v:
                    c.keys.setdefault(k, v)
            c.last, c.emergency = results, c.emergency or emergency
            return
        self.record_alone(QueryPerformed(self.principal, level, tuple((k, v) for k, v in sorted(keys.items()) if v), results,
                                         datetime.now(UTC), emergency))

    @contextmanager
    def one_query(self, level: str) -> Iterator[_OneQuery]:
        """Several searches that answer one request (QIDO-RS, C-FIND walk several levels) as one Query record.

        Searches made on this service inside the block are recorded together when
        the block ends without an error, under ``level``, with every key they used
        and the count set on the yielded object (``.results``). The caller returns
        results only after the block: the record commits first.
        """
        if self._collecting is not None:
            raise RuntimeError("one_query blocks do not nest")
        self._collecting = collected = _OneQuery(level)
        try:
            yield collected
        except SearchTooBroad:
            # Refused before any match was returned: recorded with the keys it asked for and no results.
            self._collecting = None
            self.record_alone(QueryPerformed(self.principal, level, tuple(sorted(collected.keys.items())), 0, datetime.now(UTC),
                                             collected.emergency))
            raise
        finally:
            self._collecting = None
        results = collected.last if collected.results is None else collected.results
        self.record_alone(QueryPerformed(self.principal, level, tuple(sorted(collected.keys.items())), results, datetime.now(UTC),
                                         collected.emergency))

    def _refuse_hidden(self, study_uid: str, patient_ref: str) -> None:
        """A listing of one named study filtered to nothing: the caller sees nothing, the refusal is recorded."""
        resources = self.access.study_resources([study_uid])
        decision = self.access.decide_studies(Action.QUERY, resources).get(study_uid)
        reason = decision.reason if decision is not None else "the study has no access attributes"
        self.access.record_refusal(Action.QUERY, Resource("study", study_uid, study_uid, patient_ref), reason)

    def find_studies(self, flt: StudyFilter | None = None) -> list[StudyRecord]:
        flt = flt or StudyFilter()
        scope = self.access.query_scope()
        candidates = self._recording_refusal("STUDY", _study_keys(flt), lambda: self.access.index.studies(flt, budget=self._budget, scope=scope))
        visible, emergency = self.access.visible_studies(s.uid for s in candidates)
        found = [s for s in candidates if s.uid in visible]
        self._record("STUDY", _study_keys(flt), len(found), emergency)
        return found

    def _visible_batches(self, flt: StudyFilter, *, first: int, accept: Callable[[StudyRecord], bool] | None,
                         need: int = 0, after: tuple[datetime, str] | None = None) -> Iterator[list[tuple[StudyRecord, bool]]]:
        """The studies of ``flt`` that ``accept`` keeps and the principal may query, in storage order, a batch of
        candidates at a time (``IndexQuery.study_batches``; ``need``: the studies the caller needs at least), each
        with whether break-glass allowed it. The index reads only studies inside the principal's policy scope
        (ADR 0019); those it may still not query are dropped here, before any caller counts them (ADR 0014)."""
        batches = self.access.index.study_batches(flt, first=first, budget=self._budget, need=need, scope=self.access.query_scope(),
                                                  after=after)
        try:
            for batch in batches:
                decisions = self.access.decide_studies(Action.QUERY, self.access.study_resources(s.uid for s in batch))
                visible = []
                for study in batch:
                    decision = decisions.get(study.uid)
                    if decision is not None and decision.allowed and (accept is None or accept(study)):
                        visible.append((study, decision.break_glass))
                yield visible
        finally:
            batches.close()

    def find_studies_page(self, flt: StudyFilter | None = None, *, want: int,
                          accept: Callable[[StudyRecord], bool] | None = None,
                          continuation: tuple[str, str] | None = None) -> list[StudyRecord]:
        """The first ``want`` studies, in storage order, that match ``flt`` and ``accept`` (keys the caller matches
        itself) and that the principal may query: a page of a search (QIDO-RS ``limit``/``offset``).

        The index is read a batch of candidates at a time and reading stops once the page is full, so the first
        page of an archive-wide listing decrypts and decides a page's worth of studies, not the archive
        (``IndexQuery.study_batches``). The same studies, in the same order, as the first ``want`` of
        :meth:`find_studies` filtered by ``accept``. Recorded like :meth:`find_studies`, with the count found.

        ``continuation``: ``(token, search)``, a token :meth:`continuation` made for this principal and the same
        ``search``: the page starts after the study it names, and the candidate budget counts from there, so a
        client walks any number of pages at the cost of one each (:class:`InvalidContinuation` otherwise).
        """
        flt = flt or StudyFilter()
        after = None if continuation is None else self._resume(*continuation)
        rows = self._recording_refusal("STUDY", _study_keys(flt), lambda: self._first(want, (
            pair for batch in self._visible_batches(flt, first=want + want // 2 + 1, accept=accept, need=want, after=after)
            for pair in batch)))
        self._record("STUDY", _study_keys(flt), len(rows), any(bg for _, bg in rows))
        return [study for study, _ in rows]

    def continuation(self, study_uid: str, search: str) -> str:
        """An opaque token for the page after ``study_uid`` of the study search ``search`` (the caller's canonical
        form of its keys, without paging). Sealed with AES-256-GCM under a key derived from the archive's identity
        key (HKDF, RFC 5869), bound to this principal and ``search``: it shows nothing (not which study, nor when it
        was stored), and another principal or another search cannot use it."""
        return base64.urlsafe_b64encode(seal(self._continuation_key(), study_uid.encode(), self._continuation_aad(search))).decode()

    def _resume(self, token: str, search: str) -> tuple[datetime, str]:
        try:
            sealed = base64.urlsafe_b64decode(token.encode("ascii"))
            study_uid = open_sealed(self._continuation_key(), sealed, self._continuation_aad(search)).decode()
        except (ValueError, UnicodeError, DecryptionError):
            raise InvalidContinuation("the continuation does not belong to this search: search again without it") from None
        position = self.access.index.study_position(study_uid)
        if position is None:
            raise InvalidContinuation("the study the continuation follows is gone: search again without it")
        return position

    def _continuation_key(self) -> bytes:
        return derive_key(self.ctx.keyring.archive_key(PURPOSE_IDENTITY), _CONTINUATION_INFO)

    def _continuation_aad(self, search: str) -> bytes:
        return b"\x00".join((_CONTINUATION_INFO, self.principal.label().encode(), search.encode()))

    @staticmethod
    def _first(want: int, rows: Iterator[tuple[_T, bool]]) -> list[tuple[_T, bool]]:
        """The first ``want`` of ``rows`` (each with whether break-glass allowed its study); stops reading at once."""
        out: list[tuple[_T, bool]] = []
        try:
            for row in rows:
                out.append(row)
                if len(out) >= want:
                    break
        finally:
            rows.close()  # type: ignore[attr-defined]  # a generator: closing it closes the index reads under it
        return out

    def _narrow_to_named(self, flt: StudyFilter, series_uids: Sequence[str], sop_instance_uids: Sequence[str]) -> StudyFilter | None:
        """``flt`` limited to the studies holding the named series and instances, or None when no study can match:
        a search that names a series or an instance reads its study, not the archive."""
        if not series_uids and not sop_instance_uids:
            return flt
        holding = self.access.index.studies_holding(series_uids=series_uids, sop_instance_uids=sop_instance_uids)
        if flt.study_uid:
            holding &= set(uid_list(flt.study_uid))
        return replace(flt, study_uid="\\".join(sorted(holding))) if holding else None

    def _series_rows(self, flt: StudyFilter, *, first: int, accept: Callable[[StudyRecord], bool] | None, modality: str | None,
                     accept_series: Callable[[SeriesRecord], bool] | None) -> Iterator[tuple[StudyRecord, SeriesRecord, bool]]:
        for batch in self._visible_batches(flt, first=first, accept=accept):
            for start in range(0, len(batch), _STUDIES_PER_READ):
                part = batch[start:start + _STUDIES_PER_READ]
                by_study: dict[str, list[SeriesRecord]] = {}
                for se in self.access.index.series(modality=modality, study_uids=[study.uid for study, _ in part]):
                    if self._in_series_scope(se.uid) and (accept_series is None or accept_series(se)):
                        by_study.setdefault(se.study_uid, []).append(se)
                for study, bg in part:
                    for se in by_study.get(study.uid, ()):
                        yield study, se, bg

    def find_series_page(self, flt: StudyFilter | None = None, *, want: int, accept: Callable[[StudyRecord], bool] | None = None,
                         modality: str | None = None, series_uids: Sequence[str] = (),
                         accept_series: Callable[[SeriesRecord], bool] | None = None) -> list[tuple[StudyRecord, SeriesRecord]]:
        """The first ``want`` series of all studies (QIDO-RS ``/series``, C-FIND SERIES level), with their study: studies
        in storage order as :meth:`find_studies_page` reads them, each study's series by number. ``series_uids``
        (when given) limits the search to those series' studies first. Reading stops once the page is full, so the
        work follows the page (and the studies it spans), not the archive. Recorded as one SERIES query."""
        flt = flt or StudyFilter()
        narrowed = self._narrow_to_named(flt, series_uids, ())
        rows: list[tuple[tuple[StudyRecord, SeriesRecord], bool]] = []
        keys = {**_study_keys(flt), "Modality": modality, "SeriesInstanceUID": "\\".join(series_uids)}
        if narrowed is not None:
            rows = self._recording_refusal("SERIES", keys, lambda: self._first(want, (((study, se), bg) for study, se, bg in self._series_rows(
                narrowed, first=want // 4 + 2, accept=accept, modality=modality, accept_series=accept_series))))
        self._record("SERIES", keys, len(rows), any(bg for _, bg in rows))
        return [row for row, _ in rows]

    def find_instances_page(self, flt: StudyFilter | None = None, *, want: int, accept: Callable[[StudyRecord], bool] | None = None,
                            modality: str | None = None, series_uids: Sequence[str] = (), sop_instance_uids: Sequence[str] = (),
                            accept_series: Callable[[SeriesRecord], bool] | None = None,
                            accept_instance: Callable[[InstanceRecord], bool] | None = None,
                            ) -> list[tuple[StudyRecord, SeriesRecord, InstanceRecord]]:
        """The first ``want`` instances of all studies (QIDO-RS ``/instances``, C-FIND IMAGE level), with their series and
        study: studies in storage order, then series by number, then instances by number. Named series or instances
        limit the search to their studies first; reading stops once the page is full. Recorded as one IMAGE query."""
        flt = flt or StudyFilter()
        narrowed = self._narrow_to_named(flt, series_uids, sop_instance_uids)
        wanted_series = set(series_uids)
        wanted_sops = set(sop_instance_uids)

        def rows() -> Iterator[tuple[tuple[StudyRecord, SeriesRecord, InstanceRecord], bool]]:
            assert narrowed is not None
            series = self._series_rows(narrowed, first=4, accept=accept, modality=modality,
                                       accept_series=lambda se: (not wanted_series or se.uid in wanted_series)
                                       and (accept_series is None or accept_series(se)))
            size = 2  # series per read, doubling: a first page reads a few series, a deep one few queries
            try:
                while part := list(islice(series, size)):
                    size = min(_SERIES_PER_READ, size * 2)
                    in_part = {se.uid: (study, se, bg) for study, se, bg in part}
                    found: dict[str, list[InstanceRecord]] = {}
                    for inst in self.access.index.instances(series_uids=list(in_part)):
                        if (not wanted_sops or inst.sop_instance_uid in wanted_sops) \
                                and (accept_instance is None or accept_instance(inst)):
                            found.setdefault(inst.series_uid, []).append(inst)
                    for study, se, bg in part:
                        for inst in sorted(found.get(se.uid, ()), key=_instance_order):
                            yield (study, se, inst), bg
            finally:
                series.close()  # type: ignore[attr-defined]

        keys = {**_study_keys(flt), "Modality": modality, "SeriesInstanceUID": "\\".join(series_uids),
                "SOPInstanceUID": "\\".join(sop_instance_uids)}
        result = [] if narrowed is None else self._recording_refusal("IMAGE", keys, lambda: self._first(want, rows()))
        self._record("IMAGE", keys, len(result), any(bg for _, bg in result))
        return [row for row, _ in result]

    def find_patients(self, flt: PatientFilter | None = None) -> list[PatientRecord]:
        """Patients with a study the principal may query; their study and instance counts are of those studies only
        (PS3.4 C.6.1.1.5 Number of Patient Related Studies would otherwise count studies the principal may not see)."""
        flt = flt or PatientFilter()
        scope = self.access.query_scope()
        studies = self._recording_refusal("PATIENT", _patient_keys(flt),
                                          lambda: self.access.index.studies(StudyFilter(patient=flt), budget=self._budget, scope=scope))
        visible, emergency = self.access.visible_studies(s.uid for s in studies)
        seen: dict[str, tuple[int, int]] = {}
        for st in studies:
            if st.uid in visible:
                n_studies, n_instances = seen.get(st.patient_ref, (0, 0))
                seen[st.patient_ref] = (n_studies + 1, n_instances + st.instances)
        patients = self._recording_refusal("PATIENT", _patient_keys(flt),
                                           lambda: self.access.index.patients(flt, budget=self._budget, scope=scope))
        found = [replace(p, studies=seen[p.ref][0], instances=seen[p.ref][1]) for p in patients if p.ref in seen]
        self._record("PATIENT", _patient_keys(flt), len(found), emergency)
        return found

    def find_patients_page(self, flt: PatientFilter | None = None, *, want: int) -> list[PatientRecord]:
        """The first ``want`` of :meth:`find_patients` (C-FIND PATIENT level): patients are read a batch at a time in
        the index's order and reading stops once ``want`` have a study the principal may query, each counted over
        those studies only. Recorded like :meth:`find_patients`, with the count found."""
        flt = flt or PatientFilter()
        found: list[PatientRecord] = []
        emergency = False
        batches = self.access.index.patient_batches(flt, first=want + want // 2 + 1, budget=self._budget, need=want,
                                                    scope=self.access.query_scope())
        try:
            for batch in batches:
                studies = self.access.index.studies_of_patients([p.ref for p in batch])
                visible, allowed_by_break_glass = self.access.visible_studies(uid for uid, _, _ in studies)
                counts: dict[str, tuple[int, int]] = {}
                for uid, ref, instances in studies:
                    if uid in visible:
                        n_studies, n_instances = counts.get(ref, (0, 0))
                        counts[ref] = (n_studies + 1, n_instances + instances)
                for patient in batch:
                    if patient.ref in counts and len(found) < want:
                        found.append(replace(patient, studies=counts[patient.ref][0], instances=counts[patient.ref][1]))
                emergency = emergency or allowed_by_break_glass
                if len(found) >= want:
                    break
        except SearchTooBroad:
            self._record("PATIENT", _patient_keys(flt), 0)
            raise
        finally:
            batches.close()
        self._record("PATIENT", _patient_keys(flt), len(found), emergency)
        return found

    def _in_series_scope(self, series_uid: str) -> bool:
        """A principal limited to some series (a share link made for them) sees only those (ADR 0010)."""
        scope = self.principal.series_scope
        return not scope or series_uid in scope

    def find_series(self, study_uid: str | None = None, modality: str | None = None) -> list[SeriesRecord]:
        candidates = [se for se in self.access.index.series(study_uid=study_uid, modality=modality) if self._in_series_scope(se.uid)]
        visible, emergency = self.access.visible_studies({se.study_uid for se in candidates})
        found = [se for se in candidates if se.study_uid in visible]
        if study_uid and candidates and not found:
            self._refuse_hidden(study_uid, self._patient_of(study_uid))
        self._record("SERIES", {"StudyInstanceUID": study_uid, "Modality": modality}, len(found), emergency)
        return found

    def find_instances(self, *, study_uid: str | None = None, series_uid: str | None = None) -> list[InstanceRecord]:
        candidates = [r for r in self.access.index.instances(study_uid=study_uid, series_uid=series_uid)
                      if self._in_series_scope(r.series_uid)]
        visible, emergency = self.access.visible_studies({r.study_uid for r in candidates})
        found = [r for r in candidates if r.study_uid in visible]
        if (study_uid or series_uid) and candidates and not found:
            self._refuse_hidden(candidates[0].study_uid, candidates[0].patient_ref)
        self._record("IMAGE", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}, len(found), emergency)
        return found

    def describe(self, uid: str) -> Description:
        """A study, series or instance by its UID, with its children: one query, one record.

        An unknown UID and one of a study the principal may not query both raise
        :class:`NotFoundError` (the refusal of the latter is recorded).
        """
        index = self.access.index
        description: Description | None = None
        level, key = "STUDY", "StudyInstanceUID"
        if studies := index.studies(StudyFilter(study_uid=uid)):
            children = [se for se in index.series(study_uid=uid) if self._in_series_scope(se.uid)]
            description = Description("study", study=studies[0], children=children)
            study_uid, ref = uid, studies[0].patient_ref
        elif (series := index.series(series_uid=uid)) and self._in_series_scope(uid):
            level, key = "SERIES", "SeriesInstanceUID"
            description = Description("series", series=series[0], children=index.instances(series_uid=uid))
            study_uid, ref = series[0].study_uid, self._patient_of(series[0].study_uid)
        elif (instances := index.instances(sop_instance_uid=uid)) and self._in_series_scope(instances[0].series_uid):
            level, key = "IMAGE", "SOPInstanceUID"
            description = Description("instance", instance=instances[0])
            study_uid, ref = instances[0].study_uid, instances[0].patient_ref
        if description is not None:
            visible, emergency = self.access.visible_studies([study_uid])
            if study_uid not in visible:
                self._refuse_hidden(study_uid, ref)
                description = None
        self._record(level, {key: uid}, 0 if description is None else 1, description is not None and emergency)
        if description is None:
            raise NotFoundError(f"no study, series or instance {uid}")
        return description

    def _patient_of(self, study_uid: str) -> str:
        found = self.access.index.study_access([study_uid]).get(study_uid)
        return found[0] if found else ""


def _patient_keys(f: PatientFilter) -> dict[str, str | None]:
    return {"PatientID": f.patient_id, "PatientName": f.name, "PatientBirthDate": f.birth_date}


def _study_keys(f: StudyFilter) -> dict[str, str | None]:
    return {
        **_patient_keys(f.patient),
        "StudyInstanceUID": f.study_uid,
        "AccessionNumber": f.accession_number,
        "StudyDate": f.study_date,
        "ModalitiesInStudy": f.modality,
        "StudyDescription": f.description,
    }
