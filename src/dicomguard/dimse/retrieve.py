"""C-GET and C-MOVE SCP (PS3.4 C.4.2, C.4.3).

Objects are retrieved through one retrieve plan of the core: the whole request
authorized before the number of sub-operations is announced, recorded before
the first object is sent, each object verified on read; an object that fails
verification is withheld and counted as a failed sub-operation, never sent.
C-MOVE sends only to registered destinations (the ``--move-destination`` of a
registered device), over mutual TLS.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import build_context, evt

from dicomguard.core.access import AccessDenied
from dicomguard.core.retrieve import RetrievedObject
from dicomguard.core.services.retrieve import RetrievePlan, RetrieveService
from dicomguard.dimse import status
from dicomguard.dimse.session import GateRefused, Sessions
from dicomguard.dimse.sockets import on_connection_open
from dicomguard.dimse.whole_messages import StoredDataSet
from dicomguard.errors import DicomGuardError
from dicomguard.pki.devices import DeviceRegistry

log = logging.getLogger(__name__)


def _uids(q: Dataset, keyword: str) -> list[str]:
    if keyword not in q or not q[keyword].value:
        return []
    v = q[keyword].value
    return [str(x) for x in v] if isinstance(v, MultiValue | list) else [str(v)]


def _plan(retrieve: RetrieveService, q: Dataset) -> RetrievePlan:
    """The plan for the identifier's level (PS3.4 C.4.2.1.4); unknown UIDs are skipped.

    A study the device may not read answers exactly like one that does not exist:
    zero sub-operations and success (the refusal is recorded by the core). A refusal
    does not tell the device the study is there.
    """
    level = str(q.get("QueryRetrieveLevel", "")).upper()
    try:
        if level == "IMAGE":
            return retrieve.plan(sop_instance_uids=_uids(q, "SOPInstanceUID"), require_all=False)
        if level == "SERIES":
            return retrieve.plan(series_uids=_uids(q, "SeriesInstanceUID"), require_all=False)
        if level in ("STUDY", "PATIENT"):
            return retrieve.plan(study_uids=_uids(q, "StudyInstanceUID"), require_all=False)
    except AccessDenied:
        pass
    return retrieve.nothing()


def _datasets(plan: RetrievePlan, event: Any) -> Iterator[tuple[int, Dataset | None]]:
    for record, obj in plan.objects():
        if event.is_cancelled:
            yield status.CANCEL, None
            return
        if isinstance(obj, DicomGuardError):
            log.error("C-GET/C-MOVE withheld %s: %s", record.sop_instance_uid, type(obj).__name__)
            continue
        yield status.PENDING, _sub_operation_data_set(obj)


def _sub_operation_data_set(obj: RetrievedObject) -> Dataset:
    """What a C-STORE sub-operation sends: the verified data set as stored (ADR 0020), parsed only where it must be
    (a Deflated object, whose stored data set is compressed, PS3.5 A.5)."""
    if obj.structure.deflated:
        return dcmread(io.BytesIO(obj.data))
    return StoredDataSet(obj.data, obj.structure.dataset_offset, obj.sop_class_uid, obj.sop_instance_uid, obj.transfer_syntax)


def _contexts_for(records) -> list:  # type: ignore[no-untyped-def]
    """Exactly the contexts the moved objects need: their SOP classes in their stored transfer syntaxes (PS3.8 9.3.2.2)."""
    wanted: dict[str, set[str]] = {}
    for r in records:
        wanted.setdefault(r.sop_class_uid, set()).add(r.transfer_syntax)
    return [build_context(sop, sorted(ts)) for sop, ts in list(wanted.items())[:128]]


def handle_get(event, sessions: Sessions):  # type: ignore[no-untyped-def]
    try:
        session = sessions.gate(event.assoc)
    except GateRefused as exc:  # the device itself (revoked, over its rate): not about any study
        log.warning("C-GET refused: %s", exc)
        yield 1  # pynetdicom reads a sub-operation count before any status
        yield status.REFUSED_NOT_AUTHORIZED, None
        return
    plan = _plan(session.services.retrieve, event.identifier)  # the whole request authorized before the count
    yield len(plan)
    yield from _datasets(plan, event)


def handle_move(event, sessions: Sessions, registry: DeviceRegistry, tls_for_destination):  # type: ignore[no-untyped-def]
    try:
        session = sessions.gate(event.assoc)
    except GateRefused as exc:
        log.warning("C-MOVE refused: %s", exc)
        yield None, None
        return
    dest_ae = str(event.move_destination).strip()
    dest = registry.get(dest_ae)
    if dest is None or dest.revoked or not dest.move_destination:
        log.warning("C-MOVE to unregistered destination %s refused", dest_ae)
        yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
        return
    host, _, port = dest.move_destination.rpartition(":")
    plan = _plan(session.services.retrieve, event.identifier)
    contexts = _contexts_for(plan.records)
    yield host, int(port), {"ae_title": dest_ae, "tls_args": (tls_for_destination(), None), "contexts": contexts,
                            "evt_handlers": [(evt.EVT_CONN_OPEN, on_connection_open)]}
    yield len(plan)
    yield from _datasets(plan, event)
