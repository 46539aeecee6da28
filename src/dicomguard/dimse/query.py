"""C-FIND SCP (PS3.4 C.4.1): Patient Root and Study Root, PATIENT/STUDY/SERIES/IMAGE levels.

Matching (PS3.4 C.2.2.2) is done by the core over the encrypted index and
results are filtered by the authorizer, so a query never reveals a study the
device may not read. Requested return keys are filled from the index; keys the
index does not hold, and sequence keys, are returned empty (PS3.4 C.2.2.1.3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicomguard.core.access import AccessDenied
from dicomguard.core.matching import has_wildcard, match_uid_list, match_value, uid_list
from dicomguard.core.query import PatientFilter, SeriesRecord, StudyFilter, StudyRecord
from dicomguard.core.services.query import QueryService
from dicomguard.dimse import status
from dicomguard.dimse.session import GateRefused, Sessions
from dicomguard.errors import SearchTooBroad

log = logging.getLogger(__name__)
Response = tuple[int | Dataset, Dataset | None]


def _value(identifier: Dataset, keyword: str) -> str | None:
    if keyword not in identifier:
        return None
    v = identifier[keyword].value
    if v is None or v == "":
        return None
    if isinstance(v, MultiValue | list | tuple):
        return "\\".join(str(x) for x in v)
    return str(v)


def _patient_filter(q: Dataset) -> PatientFilter:
    return PatientFilter(patient_id=_value(q, "PatientID"), name=_value(q, "PatientName"), birth_date=_value(q, "PatientBirthDate"))


def _study_filter(q: Dataset) -> StudyFilter:
    return StudyFilter(
        patient=_patient_filter(q),
        study_uid=_value(q, "StudyInstanceUID"),
        accession_number=_value(q, "AccessionNumber"),
        study_date=_value(q, "StudyDate"),
        modality=_value(q, "ModalitiesInStudy"),
        description=_value(q, "StudyDescription"),
    )


_PATIENT_KEYS: dict[str, Callable[[Any], object]] = {
    "PatientID": lambda r: r.patient_id,
    "PatientName": lambda r: r.name,
    "PatientBirthDate": lambda r: r.birth_date,
    "PatientSex": lambda r: r.sex,
    "IssuerOfPatientID": lambda r: r.issuer,
    "NumberOfPatientRelatedStudies": lambda r: r.studies,
    "NumberOfPatientRelatedInstances": lambda r: r.instances,
}
_STUDY_KEYS: dict[str, Callable[[Any], object]] = {
    "StudyInstanceUID": lambda r: r.uid,
    "PatientID": lambda r: r.patient_id,
    "PatientName": lambda r: r.patient_name,
    "StudyDate": lambda r: r.date,
    "StudyTime": lambda r: r.time,
    "AccessionNumber": lambda r: r.accession_number,
    "StudyID": lambda r: r.study_id,
    "StudyDescription": lambda r: r.description,
    "ReferringPhysicianName": lambda r: r.referring_physician,
    "ModalitiesInStudy": lambda r: r.modalities,
    "NumberOfStudyRelatedSeries": lambda r: r.series,
    "NumberOfStudyRelatedInstances": lambda r: r.instances,
}
_SERIES_KEYS: dict[str, Callable[[Any], object]] = {
    "SeriesInstanceUID": lambda r: r.uid,
    "StudyInstanceUID": lambda r: r.study_uid,
    "Modality": lambda r: r.modality,
    "SeriesNumber": lambda r: r.number,
    "SeriesDescription": lambda r: r.description,
    "SeriesDate": lambda r: r.date,
    "NumberOfSeriesRelatedInstances": lambda r: r.instances,
}
_IMAGE_KEYS: dict[str, Callable[[Any], object]] = {
    "SOPInstanceUID": lambda r: r.sop_instance_uid,
    "SOPClassUID": lambda r: r.sop_class_uid,
    "SeriesInstanceUID": lambda r: r.series_uid,
    "StudyInstanceUID": lambda r: r.study_uid,
    "InstanceNumber": lambda r: r.number,
    "NumberOfFrames": lambda r: r.frames,
    "Rows": lambda r: r.rows,
    "Columns": lambda r: r.columns,
}


def _response(q: Dataset, level: str, record: object, keys: dict[str, Callable[[Any], object]], ae_title: str) -> Dataset:
    out = Dataset()
    out.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: any name can be returned (PS3.5 6.1.2.5.3)
    out.QueryRetrieveLevel = level
    for elem in q:
        kw = elem.keyword
        if not kw or kw in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        if elem.VR == "SQ":
            setattr(out, kw, [])  # sequence matching is not supported: returned empty
            continue
        getter = keys.get(kw)
        value = getter(record) if getter else None
        setattr(out, kw, "" if value is None else value)
    out.RetrieveAETitle = ae_title
    return out


def _series_matches(q: Dataset, s: SeriesRecord) -> bool:
    return (
        match_uid_list(_value(q, "SeriesInstanceUID"), s.uid)
        and match_value(_value(q, "SeriesDescription"), s.description)
        and (_value(q, "SeriesNumber") is None or str(s.number) == _value(q, "SeriesNumber"))
    )


def _find(client: QueryService, q: Dataset, level: str, want: int) -> list[tuple[object, dict[str, Callable[[Any], object]]]]:
    """At most ``want`` matches of the query, read a batch of studies at a time (``QueryService.find_*_page``):
    a query with a narrow key reads its studies, a broad one stops at ``want``, never the whole archive."""
    if level == "PATIENT":
        return [(p, _PATIENT_KEYS) for p in client.find_patients_page(_patient_filter(q), want=want)]
    flt = _study_filter(q)
    if level == "STUDY":
        return [(st, _STUDY_KEYS) for st in client.find_studies_page(flt, want=want)]
    modality = _value(q, "Modality")
    if flt.modality is None and modality and not has_wildcard(modality) and "\\" not in modality:
        flt = replace(flt, modality=modality)  # a study holding a series of this modality has it in ModalitiesInStudy
    series_uids, sop_uids = uid_list(_value(q, "SeriesInstanceUID")), uid_list(_value(q, "SOPInstanceUID"))
    if level == "SERIES":
        pairs = client.find_series_page(flt, want=want, modality=modality, series_uids=series_uids,
                                        accept_series=lambda se: _series_matches(q, se))
        return [(se, _with_study(st)) for st, se in pairs]
    sop_class = _value(q, "SOPClassUID")
    triples = client.find_instances_page(
        flt, want=want, modality=modality, series_uids=series_uids, sop_instance_uids=sop_uids,
        accept_series=lambda se: _series_matches(q, se), accept_instance=lambda i: match_uid_list(sop_class, i.sop_class_uid))
    return [(inst, _IMAGE_KEYS) for _, _, inst in triples]


def _with_study(study: StudyRecord) -> dict[str, Callable[[Any], object]]:
    """Series return keys, and the study's for the study-level keys a SERIES query may ask for."""
    return {**_SERIES_KEYS, **{k: (lambda _r, k=k: _STUDY_KEYS[k](study)) for k in _STUDY_KEYS if k not in _SERIES_KEYS}}


def _out_of_resources(comment: str) -> Dataset:
    """A status data set (PS3.7 C.4, pynetdicom's handler API): Out of Resources (A700) and why, in the Error Comment
    (an LO value: at most 64 characters)."""
    refusal = Dataset()
    refusal.Status = status.FIND_OUT_OF_RESOURCES
    refusal.ErrorComment = comment
    return refusal


def handle_find(event, sessions: Sessions, ae_title: str, max_results: int) -> Iterator[Response]:  # type: ignore[no-untyped-def]
    """Answer one C-FIND; more than ``max_results`` matches is refused as Out of Resources (PS3.4 C.4.1.1.4, A700)
    with the reason in the Error Comment: a partial answer would pass for the whole one, and no request makes the
    archive decrypt and hold more than ``max_results`` matches (``limits.max_find_results``)."""
    try:
        session = sessions.gate(event.assoc)
    except GateRefused as exc:
        log.warning("C-FIND refused: %s", exc)
        yield status.REFUSED_NOT_AUTHORIZED, None
        return
    q: Dataset = event.identifier
    level = str(q.get("QueryRetrieveLevel", "")).upper()
    if level not in ("PATIENT", "STUDY", "SERIES", "IMAGE"):
        yield status.FIND_IDENTIFIER_MISMATCH, None
        return
    query = session.services.query
    try:
        # One Query record for the request, committed before the first match is sent.
        with query.one_query(level) as one:
            matches = _find(query, q, level, max_results + 1)
            one.results = len(matches) if len(matches) <= max_results else 0
    except AccessDenied:
        yield status.REFUSED_NOT_AUTHORIZED, None
        return
    except SearchTooBroad as exc:  # recorded by the query service; refused whole like too many matches
        yield _out_of_resources(f"over {exc.limit} candidates to examine: narrow the query"), None
        return
    if len(matches) > max_results:
        yield _out_of_resources(f"more than {max_results} matches: narrow the query"), None
        return
    for record, keys in matches:
        if event.is_cancelled:
            yield status.CANCEL, None
            return
        yield status.PENDING, _response(q, level, record, keys, ae_title)
    yield status.SUCCESS, None
