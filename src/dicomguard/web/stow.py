"""STOW-RS: store instances (PS3.18 10.5) through the one ingest pipeline of the core.

Order of checks, cheapest refusal first: token (401) -> may this principal
store at all (403, recorded as ``AccessRefused``) -> media type (415) ->
declared size (413) -> the body is streamed into encrypted spool files while
its size is counted (413) and its multipart framing checked (400). Each part
that arrived whole is stored at once by a staged ingest of the core
(``StoreService.staged``: parsed, checked, hashed, encrypted and written while
the rest of the body arrives, ADR 0021), but nothing of it becomes visible
before the whole body arrived well framed: an oversized or broken request, or
a client gone, stores nothing and leaves no blob. A peer archive's body, whose
objects need their ledger proofs first (ADR 0010), is stored after it arrived.

Each part is then accepted or refused on its own (PS3.18 10.5.3): refused
parts appear in the FailedSOPSequence with a FailureReason, stored (or
idempotently re-sent) parts in the ReferencedSOPSequence with their RetrieveURL.
Status: 200 all stored, 202 some stored, 409 none stored (PS3.18 Table 10.5.3-1).
"""

from __future__ import annotations

import functools
import logging
import queue
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import anyio
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from dicomguard.app.services import Services
from dicomguard.core.ingest import IngestOutcome, Loader, ObjectIdentity
from dicomguard.core.small_objects import GROUP_OBJECTS
from dicomguard.errors import RejectReason
from dicomguard.transfer.provenance import MAX_PROVENANCE_BYTES, PROVENANCE_MEDIA_TYPE
from dicomguard.web.auth import Caller
from dicomguard.web.dicomjson import JsonObject, attribute
from dicomguard.web.media import DICOM, DICOM_JSON, MULTIPART_RELATED, parse_media_type
from dicomguard.web.multipart import EncryptedSpool, MultipartReader, ReceivedPart, valid_boundary
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


async def _receive(request: Request, reader: MultipartReader, limit: int,
                   on_parts: Callable[[list[ReceivedPart]], None] | None = None) -> None:
    """Stream the body into an encrypted multipart reader (closed by the caller); 413 past ``limit`` bytes, 400 if the
    framing is broken. ``on_parts``: given each part once it arrived whole, while the rest of the body arrives."""
    declared = request.headers.get("content-length")
    chunks = request.stream()
    if declared is not None and declared.isdigit() and int(declared) > limit:
        if int(declared) <= limit + _DRAIN_BYTES:
            await _drain(chunks)
        raise _too_large(limit)
    handed = 0
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
            if on_parts is not None and reader.complete_parts > handed:
                on_parts(reader.parts[handed:reader.complete_parts])
                handed = reader.complete_parts
    if pending:
        await run_in_threadpool(reader.feed, *pending)
    reader.finish()
    if on_parts is not None and len(reader.parts) > handed:
        on_parts(reader.parts[handed:])


def _part_to_store(part: ReceivedPart) -> bool | None:
    """True: an ``application/dicom`` part to store; None: a provenance manifest (PS3.18 has none: ADR 0010); False:
    a part this service cannot take (another media type, or a content transfer encoding other than binary)."""
    media = parse_media_type(part.content_type or DICOM)
    if media.type == PROVENANCE_MEDIA_TYPE:
        return None
    encoding = part.headers.get("content-transfer-encoding", "binary").lower()
    return media.type == DICOM and encoding in ("binary", "8bit", "7bit")


def _apply(results: list[_PartResult], outcomes: Iterable[IngestOutcome]) -> list[str]:
    """Each ingest outcome onto its part's result; the SOP Instance UIDs stored (or idempotently sent again)."""
    stored: list[str] = []
    for outcome in outcomes:
        r = results[int(outcome.label)]
        r.outcome, r.identity = outcome, outcome.identity
        if outcome.error is not None:
            r.failure = _FAILURE_REASON.get(outcome.error.reason, CANNOT_UNDERSTAND)
        elif outcome.result is not None:
            stored.append(outcome.result.sop_instance_uid)
    return stored


@functools.cache
def _stagers() -> ThreadPoolExecutor:
    """Threads that store the parts of bodies still arriving (one per request in flight, bounded: a request past the
    bound is staged once a thread is free, its parts waiting, encrypted, in its spool)."""
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="dicomguard-stow-stage")


class _Stager:
    """A STOW-RS body's parts stored while the rest of the body arrives (``StoreService.staged``, ADR 0021).

    Each part is parsed, checked, hashed, encrypted and written on a thread of its own as soon as it arrived
    whole, overlapping the transfer of the next; nothing becomes visible before :meth:`finish`, after the
    whole body arrived well framed. :meth:`abort` (an oversized or broken body, a client gone) removes
    every blob written: such a request stores nothing, as when parts were stored only after the body.
    """

    def __init__(self, services: Services, study_uid: str | None) -> None:
        self._staged = services.store.staged(f"stow-rs {services.principal.label()}", study_uid)
        self._queue: queue.SimpleQueue[ReceivedPart | None] = queue.SimpleQueue()
        self._results: list[_PartResult] = []
        self._failure: BaseException | None = None
        self._stopping = False
        self._done = _stagers().submit(self._run)

    def put(self, parts: list[ReceivedPart]) -> None:
        for part in parts:
            self._queue.put(part)

    def _run(self) -> None:
        stopped = False
        while not stopped:
            parts = _waiting(self._queue)
            if parts[-1] is None:
                stopped = True
                parts.pop()
            try:
                if parts and self._failure is None and not self._stopping:
                    self._stage(parts)
            except BaseException as exc:  # noqa: BLE001 - raised by finish(); nothing more is staged
                self._failure = exc
            finally:
                for part in parts:
                    part.content.close()  # its bytes are prepared or not needed: released before the body ends

    def _stage(self, parts: list[ReceivedPart]) -> None:
        items: list[tuple[str, Loader, int | None]] = []
        for part in parts:
            result = _PartResult(ObjectIdentity())
            self._results.append(result)  # parts arrive in order: the result of part i is at index i
            kind = _part_to_store(part)
            if kind is False:
                result.failure = CANNOT_UNDERSTAND
            elif kind is True:
                items.append((str(part.index), functools.partial(_read_and_release, part.content), part.content.size))
            # A provenance manifest from a client that is no peer archive is not stored (answered as a failed part).
        self._staged.add_many(items)

    def finish(self) -> list[_PartResult]:
        """Blocking: once every part is staged, index them all (or raise, storing nothing of a failed stage)."""
        self._queue.put(None)
        self._done.result()
        if self._failure is not None:
            self._staged.discard()
            raise self._failure
        _apply(self._results, self._staged.commit())
        return self._results

    def abort(self) -> None:
        """Blocking: stop staging and remove what was staged."""
        self._stopping = True
        self._queue.put(None)
        self._done.result()
        self._staged.discard()


def _read_and_release(content: EncryptedSpool) -> bytes:
    """A part's bytes, its sealed spool released as soon as they are read (not when the rest of its group is staged)."""
    try:
        return content.read()
    finally:
        content.close()


def _waiting(parts: queue.SimpleQueue[ReceivedPart | None]) -> list[ReceivedPart | None]:
    """The next part (waiting for it), with those queued behind it, up to ``GROUP_OBJECTS`` and the end marker: parts
    that arrived while the interpreter was busy are prepared together (``StagedIngest.add_many``)."""
    taken = [parts.get()]
    while taken[-1] is not None and len(taken) < GROUP_OBJECTS:
        try:
            taken.append(parts.get_nowait())
        except queue.Empty:
            break
    return taken


def _ingest_from_peer(services: Services, parts: list[ReceivedPart], study_uid: str | None, peer: str) -> list[_PartResult]:
    """Store a peer archive's body once it arrived whole: its objects are stored only with its ledger's proofs
    (ADR 0010), checked on their bytes first, one part in memory at a time (a part is read again for the ingest)."""
    results = [_PartResult(ObjectIdentity()) for _ in parts]
    items: list[tuple[str, Loader]] = []
    provenance: bytes | None = None
    for part in parts:
        kind = _part_to_store(part)
        if kind is None:
            # One manifest per request, read only if within its bound (a peer must not make us hold gigabytes).
            if provenance is None and part.content.size <= MAX_PROVENANCE_BYTES:
                provenance = part.content.read()
            else:
                provenance = b"{}"  # a second or oversized manifest makes the request's proofs unreadable
            continue
        if not kind:
            results[part.index].failure = CANNOT_UNDERSTAND
            continue
        items.append((str(part.index), part.content.read))
    check = services.transfers.check_received(items, provenance)
    for label, reason in check.refused.items():
        results[int(label)].failure = NOT_AUTHORIZED
        log.warning("STOW-RS from peer %s: part %s refused: %s", peer, label, reason)
    accepted = set(check.accepted)
    items = [(label, load) for label, load in items if label in accepted]
    source = f"stow-rs {services.principal.label()}"
    stored = _apply(results, services.store.ingest_many(items, source=source, study_uid=study_uid))
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
    limit = request.app.state.archive.settings.network.max_request_bytes
    reader = MultipartReader(boundary)
    try:
        peer = await run_in_threadpool(caller.transfers.peer_requiring_proofs)
        if peer is not None:
            await _receive(request, reader, limit)
            results = await run_in_threadpool(_ingest_from_peer, caller, reader.parts, study_uid, peer)
            return _response(request, results, study_uid)
        stager = await run_in_threadpool(_Stager, caller, study_uid)
        try:
            await _receive(request, reader, limit, stager.put)
        except BaseException:
            with anyio.CancelScope(shield=True):  # a client gone must not leave staged blobs behind
                await run_in_threadpool(stager.abort)
            raise
        results = await run_in_threadpool(stager.finish)
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

