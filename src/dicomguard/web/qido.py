"""QIDO-RS: search for studies, series and instances (PS3.18 10.6), answered in DICOM JSON (PS3.18 F).

Every search goes through the principal's :class:`QueryService` (``find_*``),
so results are already filtered to what the principal may see and each search
is recorded as a ``QueryPerformed`` event. Keys the core does not match itself
(e.g. StudyTime, SeriesNumber) are matched here on the records the client
returned, never on anything it withheld.

Data minimisation: Patient's Birth Date, Sex and Issuer are returned only when
a client asks for them (``includefield`` or a matching key), not by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from dicomguard.app.services import Services
from dicomguard.core.matching import match_range, match_uid_list, match_value, uid_list
from dicomguard.core.query import (
    InstanceRecord,
    PatientFilter,
    PatientRecord,
    SeriesRecord,
    StudyFilter,
    StudyRecord,
)
from dicomguard.core.services.query import QueryService
from dicomguard.web.auth import Caller
from dicomguard.web.dicomjson import JsonObject, attribute
from dicomguard.web.errors import not_acceptable
from dicomguard.web.media import DICOM_JSON, choose_single, parse_accept
from dicomguard.web.qido_params import (
    MATCH_KEYS,
    MAX_LIMIT,
    Level,
    QidoQuery,
    parse_query,
)
from dicomguard.web.uids import DICOMWEB_PREFIX, SeriesUID, StudyUID, dicomweb_base

router = APIRouter(prefix=DICOMWEB_PREFIX)

WARN_FUZZY = 'The fuzzymatching parameter is not supported. Only literal matching has been performed.'
WARN_MORE = "There are additional results that can be requested"

# Returned by default (PS3.18 Tables 10.6.3-3, -4, -5, less what the index does not hold).
STUDY_DEFAULT = (
    "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy", "ReferringPhysicianName",
    "RetrieveURL", "PatientName", "PatientID", "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_DEFAULT = (
    "Modality", "SeriesDescription", "RetrieveURL", "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances",
    "StudyInstanceUID",
)
INSTANCE_DEFAULT = (
    "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "RetrieveURL", "InstanceNumber", "Rows", "Columns",
    "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID",
)
_PATIENT_DETAILS = {"PatientBirthDate", "PatientSex", "IssuerOfPatientID"}


@dataclass
class _Row:
    study: StudyRecord | None = None
    patient: PatientRecord | None = None
    series: SeriesRecord | None = None
    instance: InstanceRecord | None = None


# -- filters ---------------------------------------------------------------------------


def _study_filter(q: QidoQuery) -> StudyFilter:
    modality = q.value("ModalitiesInStudy")
    return StudyFilter(
        patient=PatientFilter(q.value("PatientID"), q.value("PatientName"), q.value("PatientBirthDate")),
        study_uid=q.value("StudyInstanceUID"),
        accession_number=q.value("AccessionNumber"),
        study_date=q.value("StudyDate"),
        modality=modality if modality and "," not in modality else None,
        description=q.value("StudyDescription"),
    )


def _any_code(pattern: str | None, values: list[str]) -> bool:
    if not pattern:
        return True
    return any(match_value(p, v) for p in pattern.split(",") for v in values)


def _study_matches(q: QidoQuery, s: StudyRecord) -> bool:
    """Keys the core did not apply (or applied only in part)."""
    return (
        match_range(q.value("StudyTime"), s.time)
        and match_value(q.value("ReferringPhysicianName"), s.referring_physician, person_name=True)
        and match_value(q.value("StudyID"), s.study_id)
        and _any_code(q.value("ModalitiesInStudy"), s.modalities)
    )


def _series_matches(q: QidoQuery, se: SeriesRecord) -> bool:
    number = q.value("SeriesNumber")
    return (
        _any_code(q.value("Modality"), [se.modality])
        and match_uid_list(q.value("SeriesInstanceUID"), se.uid)
        and (number is None or se.number == int(number))
        and match_value(q.value("SeriesDescription"), se.description)
        and match_range(q.value("SeriesDate"), se.date)
    )


def _instance_matches(q: QidoQuery, i: InstanceRecord) -> bool:
    number = q.value("InstanceNumber")
    return (
        match_uid_list(q.value("SOPInstanceUID"), i.sop_instance_uid)
        and match_uid_list(q.value("SOPClassUID"), i.sop_class_uid)
        and (number is None or i.number == int(number))
    )


def _has_keys(q: QidoQuery, level: Level) -> bool:
    return any(MATCH_KEYS[k].level is level for k in q.matches)


# -- attributes ------------------------------------------------------------------------


def _study_attributes(r: _Row, base: str) -> dict[str, Any]:
    s = r.study
    assert s is not None
    attrs = {
        "StudyDate": (s.date,), "StudyTime": (s.time,), "AccessionNumber": (s.accession_number,),
        "InstanceAvailability": ("ONLINE",), "ModalitiesInStudy": tuple(s.modalities),
        "ReferringPhysicianName": (s.referring_physician,), "RetrieveURL": (f"{base}/studies/{s.uid}",),
        "PatientName": (s.patient_name,), "PatientID": (s.patient_id,), "StudyInstanceUID": (s.uid,),
        "StudyID": (s.study_id,), "NumberOfStudyRelatedSeries": (s.series,), "NumberOfStudyRelatedInstances": (s.instances,),
        "StudyDescription": (s.description,),
    }
    if r.patient is not None:
        attrs |= {"PatientBirthDate": (r.patient.birth_date,), "PatientSex": (r.patient.sex,), "IssuerOfPatientID": (r.patient.issuer,)}
    return attrs


def _series_attributes(r: _Row, base: str) -> dict[str, Any]:
    se = r.series
    assert se is not None
    return {
        "Modality": (se.modality,), "SeriesDescription": (se.description,),
        "RetrieveURL": (f"{base}/studies/{se.study_uid}/series/{se.uid}",), "SeriesInstanceUID": (se.uid,),
        "SeriesNumber": (se.number,), "NumberOfSeriesRelatedInstances": (se.instances,), "SeriesDate": (se.date,),
        "StudyInstanceUID": (se.study_uid,),
    }


def _instance_attributes(r: _Row, base: str) -> dict[str, Any]:
    i = r.instance
    assert i is not None
    return {
        "SOPClassUID": (i.sop_class_uid,), "SOPInstanceUID": (i.sop_instance_uid,), "InstanceAvailability": ("ONLINE",),
        "RetrieveURL": (f"{base}/studies/{i.study_uid}/series/{i.series_uid}/instances/{i.sop_instance_uid}",),
        "InstanceNumber": (i.number,), "Rows": (i.rows,), "Columns": (i.columns,), "NumberOfFrames": (i.frames,),
        "StudyInstanceUID": (i.study_uid,), "SeriesInstanceUID": (i.series_uid,), "AvailableTransferSyntaxUID": (i.transfer_syntax,),
    }


def _to_json(r: _Row, q: QidoQuery, defaults: tuple[str, ...], base: str) -> JsonObject:
    available: dict[str, Any] = {}
    # Lower levels last: their RetrieveURL (and UIDs) win.
    if r.study is not None:
        available |= _study_attributes(r, base)
    if r.series is not None:
        available |= _series_attributes(r, base)
    if r.instance is not None:
        available |= _instance_attributes(r, base)
    wanted = set(available) if q.include_all else (set(defaults) | q.returns) & set(available)
    out = dict(attribute(k, *available[k]) for k in wanted)
    return dict(sorted(out.items()))


# -- searches --------------------------------------------------------------------------


def _patients(client: QueryService, q: QidoQuery, refs: set[str] | None = None) -> dict[str, PatientRecord]:
    """Patient details (birth date, sex, issuer) when asked for; of the ``refs`` patients only, when given (a page)."""
    if not (q.include_all or q.returns & _PATIENT_DETAILS):
        return {}
    flt = _study_filter(q).patient
    if refs is not None:
        if not refs:
            return {}
        flt = replace(flt, refs=frozenset(refs))
    return {p.ref: p for p in client.find_patients(flt)}


def _studies(client: QueryService, q: QidoQuery) -> list[StudyRecord]:
    return [s for s in client.find_studies(_study_filter(q)) if _study_matches(q, s)]


def search_studies(client: QueryService, q: QidoQuery, want: int | None = None) -> list[_Row]:
    """Matching studies; with ``want``, only the first ``want`` (the index is read no further than that page)."""
    if want is None:
        found = _studies(client, q)
    else:
        continuation = None if q.continuation is None else (q.continuation, q.search_key())
        found = client.find_studies_page(_study_filter(q), want=want, accept=lambda s: _study_matches(q, s),
                                         continuation=continuation)
    patients = _patients(client, q, {s.patient_ref for s in found} if want is not None else None)
    return [_Row(study=s, patient=patients.get(s.patient_ref)) for s in found]


def _single(pattern: str | None) -> str | None:
    """A pattern the core can match itself (one value, not a comma list of codes)."""
    return pattern if pattern and "," not in pattern else None


def _across_studies_filter(q: QidoQuery) -> StudyFilter:
    """The study filter of a search across all studies: a series' Modality also narrows the studies (a study holds a
    series of a modality only if that modality is in its ModalitiesInStudy), unless ModalitiesInStudy is a key."""
    flt = _study_filter(q)
    if flt.modality is None and q.value("ModalitiesInStudy") is None:
        flt = replace(flt, modality=_single(q.value("Modality")))
    return flt


def search_series(client: QueryService, q: QidoQuery, study_uid: str | None, want: int | None = None) -> list[_Row]:
    """The series of one study, or (``study_uid`` None) the first ``want`` series across all studies, read a page of
    studies at a time (``QueryService.find_series_page``): never the whole archive."""
    if study_uid is not None:
        found = client.find_series(study_uid, _single(q.value("Modality")))
        return [_Row(series=se) for se in found if _series_matches(q, se)]
    pairs = client.find_series_page(
        _across_studies_filter(q), want=MAX_LIMIT + 1 if want is None else want, accept=lambda s: _study_matches(q, s),
        modality=_single(q.value("Modality")), series_uids=uid_list(q.value("SeriesInstanceUID")),
        accept_series=lambda se: _series_matches(q, se))
    patients = _patients(client, q, {st.patient_ref for st, _ in pairs})
    return [_Row(study=st, patient=patients.get(st.patient_ref), series=se) for st, se in pairs]


def search_instances(client: QueryService, q: QidoQuery, study_uid: str | None, series_uid: str | None,
                     want: int | None = None) -> list[_Row]:
    """The instances of one study or series, or (both None) the first ``want`` instances across all studies, read a
    page of studies at a time (``QueryService.find_instances_page``): never the whole archive."""
    if study_uid is None and series_uid is None:
        triples = client.find_instances_page(
            _across_studies_filter(q), want=MAX_LIMIT + 1 if want is None else want, accept=lambda s: _study_matches(q, s),
            modality=_single(q.value("Modality")), series_uids=uid_list(q.value("SeriesInstanceUID")),
            sop_instance_uids=uid_list(q.value("SOPInstanceUID")), accept_series=lambda se: _series_matches(q, se),
            accept_instance=lambda i: _instance_matches(q, i))
        patients = _patients(client, q, {st.patient_ref for st, _, _ in triples})
        return [_Row(study=st, patient=patients.get(st.patient_ref), series=se, instance=i) for st, se, i in triples]
    found = [i for i in client.find_instances(study_uid=study_uid, series_uid=series_uid) if _instance_matches(q, i)]
    series: dict[str, SeriesRecord] = {}
    if series_uid is None or _has_keys(q, Level.SERIES) or q.include_all or q.returns:
        series = {se.uid: se for se in client.find_series(study_uid, _single(q.value("Modality"))) if _series_matches(q, se)}
        found = [i for i in found if i.series_uid in series]
    return [_Row(series=series.get(i.series_uid), instance=i) for i in found]


# -- HTTP ------------------------------------------------------------------------------


def page_limit(q: QidoQuery) -> int:
    """Results per response: the client's ``limit``, at most :data:`MAX_LIMIT` (also when it asked for none)."""
    return MAX_LIMIT if q.limit is None or q.limit == 0 else min(q.limit, MAX_LIMIT)


Search = Callable[[QueryService, QidoQuery, int], list[_Row]]
"""A search given the number of matches the page needs (``offset + limit + 1``: one more tells whether more exist)."""


def answer(client: QueryService, q: QidoQuery, level: str, run: Search) -> tuple[list[_Row], bool]:
    """One QIDO-RS search cut to its page (PS3.18 8.3.4.4 ``limit``/``offset``): (the page, whether more matched).

    One Query record per request, naming the rows answered, committed before the caller builds the answer.
    """
    limit = page_limit(q)
    with client.one_query(level) as one:
        rows = run(client, q, q.offset + limit + 1)
        page = rows[q.offset : q.offset + limit]
        one.results = len(page)
    return page, q.offset + len(page) < len(rows)


def _respond(request: Request, page: list[_Row], more: bool, q: QidoQuery, defaults: tuple[str, ...],
             next_page: str | None = None) -> Response:
    """Convert and answer (PS3.18 10.6.3): 204 when nothing matched; Warning headers as 8.3.4 says; ``next_page``:
    the URL of the next page, as a ``Link: rel="next"`` header (RFC 8288)."""
    warnings = []
    if q.fuzzy:
        warnings.append(WARN_FUZZY)
    if more:
        warnings.append(WARN_MORE)
    headers = {"Warning": ", ".join(f'299 dicomguard: "{w}"' for w in warnings)} if warnings else {}
    if next_page is not None:
        headers["Link"] = f'<{next_page}>; rel="next"'
    if not page:
        return Response(status_code=204, headers=headers)
    base = dicomweb_base(request)
    body = [_to_json(r, q, defaults, base) for r in page]
    return JSONResponse(body, media_type=DICOM_JSON, headers=headers)


def _search(request: Request, caller: Services, levels: set[Level], run: Search, defaults: tuple[str, ...]) -> Response:
    """Negotiate, parse, search: one Query record per request, committed before the answer is built. A study search
    with more matches names its next page (``continuation``, ``QueryService.continuation``)."""
    if choose_single(parse_accept(request.headers.get("accept")), [DICOM_JSON, "application/json"]) is None:
        raise not_acceptable("QIDO-RS answers in application/dicom+json")
    q = parse_query(request.query_params.multi_items(), levels)
    level = "IMAGE" if Level.INSTANCE in levels else "SERIES" if Level.SERIES in levels else "STUDY"
    page, more = answer(caller.query, q, level, run)
    next_page = None
    if more and levels == {Level.STUDY} and page and page[-1].study is not None:
        token = caller.query.continuation(page[-1].study.uid, q.search_key())
        query = request.url.remove_query_params(["offset", "continuation"]).include_query_params(continuation=token).query
        next_page = f"{dicomweb_base(request)}/studies?{query}"  # the validated host only, as every RetrieveURL
    return _respond(request, page, more, q, defaults, next_page)


_S, _SE, _I = Level.STUDY, Level.SERIES, Level.INSTANCE


@router.get("/studies", include_in_schema=False)
def studies(request: Request, caller: Caller) -> Response:
    """Search for studies (PS3.18 10.6.1, resource ``/studies``)."""
    return _search(request, caller, {_S}, search_studies, STUDY_DEFAULT)


@router.get("/studies/{study}/series", include_in_schema=False)
def study_series(request: Request, study: StudyUID, caller: Caller) -> Response:
    """Search for the series of a study (PS3.18 10.6.1, ``/studies/{study}/series``)."""
    return _search(request, caller, {_SE}, lambda query, q, _: search_series(query, q, study), SERIES_DEFAULT)


@router.get("/series", include_in_schema=False)
def all_series(request: Request, caller: Caller) -> Response:
    """Search for series in all studies (PS3.18 10.6.1, ``/series``); study attributes are returned too."""
    return _search(request, caller, {_S, _SE}, lambda query, q, want: search_series(query, q, None, want), SERIES_DEFAULT)


@router.get("/studies/{study}/series/{series}/instances", include_in_schema=False)
def series_instances(
    request: Request, study: StudyUID, series: SeriesUID, caller: Caller
) -> Response:
    """Search for the instances of a series (``/studies/{study}/series/{series}/instances``)."""
    return _search(request, caller, {_I}, lambda query, q, _: search_instances(query, q, study, series), INSTANCE_DEFAULT)


@router.get("/studies/{study}/instances", include_in_schema=False)
def study_instances(request: Request, study: StudyUID, caller: Caller) -> Response:
    """Search for the instances of a study (``/studies/{study}/instances``); series attributes are returned too."""
    return _search(request, caller, {_SE, _I}, lambda query, q, _: search_instances(query, q, study, None), INSTANCE_DEFAULT + SERIES_DEFAULT)


@router.get("/instances", include_in_schema=False)
def all_instances(request: Request, caller: Caller) -> Response:
    """Search for instances in all studies (``/instances``); study and series attributes are returned too."""
    return _search(request, caller, {_S, _SE, _I}, lambda query, q, want: search_instances(query, q, None, None, want),
                   INSTANCE_DEFAULT + SERIES_DEFAULT + STUDY_DEFAULT)
