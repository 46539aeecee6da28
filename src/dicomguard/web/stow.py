"""STOW-RS: store instances (PS3.18 10.5) through the one ingest pipeline of the core.

Order of checks, cheapest refusal first: token (401) -> may this principal
store at all (403, recorded as ``AccessRefused``) -> media type (415) ->
declared size (413) -> the body is streamed into encrypted spool files while
its size is counted (413) and its multipart framing checked (400). Only a body
that arrived complete and well framed is handed to ``StoreService.ingest_many``
(the one ingest pipeline: each part is parsed once, and the outcome names the
object); an oversized or broken request stores nothing.

Each part is then accepted or refused on its own (PS3.18 10.5.3): refused
parts appear in the FailedSOPSequence with a FailureReason, stored (or
idempotently re-sent) parts in the ReferencedSOPSequence with their RetrieveURL.
Status: 200 all stored, 202 some stored, 409 none stored (PS3.18 Table 10.5.3-1).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from dicomguard.app.services import Services
from dicomguard.core.ingest import IngestOutcome, Loader, ObjectIdentity
from dicomguard.errors import RejectReason
from dicomguard.transfer.provenance import MAX_PROVENANCE_BYTES, PROVENANCE_MEDIA_TYPE
from dicomguard.web.auth import Caller
from dicomguard.web.dicomjson import JsonObject, attribute
from dicomguard.web.media import DICOM, DICOM_JSON, MULTIPART_RELATED, parse_media_type
from dicomguard.web.multipart import MultipartReader, ReceivedPart, valid_boundary
from dicomguard.web.uids import DICOMWEB_PREFIX, StudyUID, dicomweb_base

log = logging.getLogger(__name__)
router = APIRouter(prefix=DICOMWEB_PREFIX)

_FEED_BYTES = 1024 * 1024
_DRAIN_BYTES = 8 * 1024 * 1024

# FailureReason values (PS3.18 10.5.3, statuses of PS3.4 B.2.3 and PS3.7 C).
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x "Refused: Not Authorized": a peer's object without a valid ledger proof
_FAILURE_REASON = {
    RejectReason.TOO_LARGE: OUT_OF_RESOURCES,
    RejectReason.UNSUPPORTED_TRANSFER_SYNTAX: TRANSFER_SYNTAX_NOT_SUPPORTED,
    RejectReason.CONFLICT: DUPLICATE_SOP_INSTANCE,
    RejectReason.PATIENT_ERASED: PROCESSING_FAILURE,
    RejectReason.STUDY_MISMATCH: DATASET_DOES_NOT_MATCH,  # not of the study of the request URL (PS3.18 10.5.1)
    RejectReason.IDENTITY_CONFLICT: DATASET_DOES_NOT_MATCH,  # its study belongs to another patient
}


@dataclass
class _PartResult:
    identity: ObjectIdentity
    outcome: IngestOutcome | None = None
    failure: int | None = None


def _boundary(content_type: str | None) -> str:
    """The boundary of a ``multipart/related; type="application/dicom"`` body (PS3.18 10.5.1.1); 415/400 otherwise."""
    if not content_type:
        raise HTTPException(415, 'STOW-RS takes multipart/related; type="application/dicom"')
    media = parse_media_type(content_type)
    if media.type != MULTIPART_RELATED:
        raise HTTPException(415, 'STOW-RS takes multipart/related; type="application/dicom"')
    root = media.params.get("type")
    if root is not None and parse_media_type(root).type != DICOM:
        raise HTTPException(415, "only application/dicom parts are supported (no DICOM JSON/XML with bulk data)")
    boundary = media.params.get("boundary", "")
    if not valid_boundary(boundary):
        raise HTTPException(400, "the multipart boundary parameter is missing or invalid")
    return boundary


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read (and drop) a bounded remainder so a client that sends before reading sees the 413, not a reset."""
    dropped = 0
    async for chunk in chunks:
        dropped += len(chunk)
        if dropped > _DRAIN_BYTES:
            return


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the request body exceeds {limit} bytes")


async def _receive(request: Request, boundary: str, limit: int) -> MultipartReader:
    """Stream the body into an encrypted multipart reader; 413 past ``limit`` bytes, 400 if the framing is broken."""
    declared = request.headers.get("content-length")
    chunks = request.stream()
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= limit + _DRAIN_BYTES:
            await _drain(chunks)
        raise _too_large(limit)
    reader = MultipartReader(boundary)
    try:
        total = 0
        pending: list[bytes] = []
        pending_bytes = 0
        async for chunk in chunks:
            total += len(chunk)
            if total > limit:
                await _drain(chunks)
                raise _too_large(limit)
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= _FEED_BYTES:
                await run_in_threadpool(reader.feed, *pending)
                pending, pending_bytes = [], 0
        if pending:
            await run_in_threadpool(reader.feed, *pending)
        reader.finish()
    except BaseException:
        reader.close()
        raise
    return reader


def _ingest(services: Services, parts: list[ReceivedPart], study_uid: str | None) -> list[_PartResult]:
    results = [_PartResult(ObjectIdentity()) for _ in parts]
    items: list[tuple[str, Loader]] = []
    provenance: bytes | None = None
    for part in parts:
        media = parse_media_type(part.content_type or DICOM)
        encoding = part.headers.get("content-transfer-encoding", "binary").lower()
        if media.type == PROVENANCE_MEDIA_TYPE:
            # One manifest per request, read only if within its bound (a peer must not make us hold gigabytes).
            if provenance is None and part.content.size <= MAX_PROVENANCE_BYTES:
                provenance = part.content.read()
            else:
                provenance = b"{}"  # a second or oversized manifest makes the request's proofs unreadable
            continue
        if media.type != DICOM or encoding not in ("binary", "8bit", "7bit"):
            results[part.index].failure = CANNOT_UNDERSTAND
            continue
        items.append((str(part.index), part.content.read))
    peer = services.transfers.peer_requiring_proofs()
    if peer is not None:
        # A peer archive's objects are stored only with its ledger's proofs (ADR 0010): checked on their bytes first,
        # one part in memory at a time (a part is read again for the ingest).
        check = services.transfers.check_received(items, provenance)
        for label, reason in check.refused.items():
            results[int(label)].failure = NOT_AUTHORIZED
            log.warning("STOW-RS from peer %s: part %s refused: %s", peer, label, reason)
        accepted = set(check.accepted)
        items = [(label, load) for label, load in items if label in accepted]
    source = f"stow-rs {services.principal.label()}"
    stored: list[str] = []
    for outcome in services.store.ingest_many(items, source=source, study_uid=study_uid):
        r = results[int(outcome.label)]
        r.outcome, r.identity = outcome, outcome.identity
        if outcome.error is not None:
            r.failure = _FAILURE_REASON.get(outcome.error.reason, CANNOT_UNDERSTAND)
        elif outcome.result is not None:
            stored.append(outcome.result.sop_instance_uid)
    if peer is not None:
        services.transfers.keep_provenance(stored, peer)
    return results


def _response(request: Request, results: list[_PartResult], study_uid: str | None) -> JSONResponse:
    """The Store Instances Response Module (PS3.18 Table 10.5.3-2) in DICOM JSON."""
    base = dicomweb_base(request)
    stored: list[JsonObject] = []
    failed: list[JsonObject] = []
    studies: set[str] = set()
    for r in results:
        ident = r.identity
        if r.failure is not None or r.outcome is None or r.outcome.result is None:
            failed.append(dict([
                attribute("ReferencedSOPClassUID", ident.sop_class_uid),
                attribute("ReferencedSOPInstanceUID", ident.sop_instance_uid),
                attribute("FailureReason", r.failure if r.failure is not None else PROCESSING_FAILURE),
            ]))
            continue
        res = r.outcome.result
        studies.add(res.study_uid)
        url = f"{base}/studies/{res.study_uid}/series/{res.series_uid}/instances/{res.sop_instance_uid}"
        stored.append(dict([
            attribute("ReferencedSOPClassUID", ident.sop_class_uid),
            attribute("ReferencedSOPInstanceUID", res.sop_instance_uid),
            attribute("RetrieveURL", url),
        ]))
    body: JsonObject = {}
    study = study_uid or (next(iter(studies)) if len(studies) == 1 else None)
    if study and stored:
        body.update([attribute("RetrieveURL", f"{base}/studies/{study}")])
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    status = 200 if not failed else 202 if stored else 409
    request.app.state.metrics.stow_instances.labels("stored").inc(len(stored))
    request.app.state.metrics.stow_instances.labels("failed").inc(len(failed))
    return JSONResponse(dict(sorted(body.items())), status_code=status, media_type=DICOM_JSON)


async def _store(request: Request, caller: Services, study_uid: str | None) -> Response:
    await run_in_threadpool(caller.store.permit)  # 403 (recorded) before a byte of the body is read
    boundary = _boundary(request.headers.get("content-type"))
    reader = await _receive(request, boundary, request.app.state.archive.settings.network.max_request_bytes)
    try:
        results = await run_in_threadpool(_ingest, caller, reader.parts, study_uid)
    finally:
        reader.close()
    return _response(request, results, study_uid)


@router.post("/studies", include_in_schema=False)
async def store(request: Request, caller: Caller) -> Response:
    """Store instances (PS3.18 10.5, ``POST /studies``)."""
    return await _store(request, caller, None)


@router.post("/studies/{study}", include_in_schema=False)
async def store_in_study(request: Request, study: StudyUID, caller: Caller) -> Response:
    """Store instances of one study (``POST /studies/{study}``): instances of other studies are refused (0xA900)."""
    return await _store(request, caller, study)

