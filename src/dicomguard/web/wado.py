"""WADO-RS: retrieve studies, series, instances, metadata, frames, bulk data and rendered images (PS3.18 10.4).

Every byte delivered comes from a retrieve plan of the core
(``RetrieveService.plan``): authorized once for the whole request, recorded
(Instances Transferred) before the first object, each object decrypted and
verified against its recorded digests. An object that fails verification is
never served: the first object is read before the response starts, so its
failure is a 500 that says so; in the middle of a multi-part stream the
connection is cut, so the client sees a truncated multipart body, never a bad
object presented as good.

No IDOR oracle: a study, series or instance the principal may not read is
answered exactly like one that does not exist (404), while the core still
publishes ``AccessRefused`` for a refused instance (PS3.18 8.1.6 leaves
authorization to the origin server).

Responses stream part by part (``multipart/related``, PS3.18 8.7.3.2); the
archive holds one object at a time in memory. What one request costs is
bounded by ``[limits]`` whatever it asks for: frame lists are deduplicated and
capped, frames are streamed as views of the verified object, a Deflated object
is inflated once per read (by verification), and rendering is bounded (see
``web/pixels.py`` and ``web/render.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from dicomguard.app.services import Services
from dicomguard.config import LimitSettings
from dicomguard.core.access import AccessDenied, StepUpRequired
from dicomguard.core.retrieve import RetrievedObject
from dicomguard.core.services.retrieve import RetrievePlan
from dicomguard.crypto.blob_cipher import plaintext_size
from dicomguard.errors import IntegrityError, NotFoundError
from dicomguard.web.auth import Caller
from dicomguard.web.dicomjson import attribute, dataset_to_json
from dicomguard.web.errors import bad_request, not_acceptable
from dicomguard.web.media import (
    DICOM,
    DICOM_JSON,
    MULTIPART_RELATED,
    OCTET_STREAM,
    MediaRange,
    MultipartWriter,
    Offer,
    choose_multipart,
    choose_single,
    frame_media_type,
    is_encapsulated,
    parse_accept,
    part_content_type,
)
from dicomguard.web.pixels import (
    PIXEL_DATA,
    FramesUnavailable,
    extract_frames,
    has_pixel_data,
    parse_frame_list,
    pixel_value,
    read_header,
)
from dicomguard.web.qido_params import QueryError
from dicomguard.web.render import (
    RENDERED_TYPES,
    RenderTooLarge,
    RenderUnavailable,
    parse_render_options,
    render,
)
from dicomguard.web.uids import (
    DICOMWEB_PREFIX,
    InstanceUID,
    SeriesUID,
    StudyUID,
    dicomweb_base,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix=DICOMWEB_PREFIX)

DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_TAG_HEX = frozenset("0123456789abcdefABCDEF")
CHUNK_BYTES = 1024 * 1024
"""Largest piece of a frame handed to the server at a time (the TLS transport buffers one piece, not a frame)."""


def _limits(request: Request) -> LimitSettings:
    return request.app.state.archive.settings.limits  # type: ignore[no-any-return]


# -- access through the core ------------------------------------------------------------


def _plan(caller: Services, study: str, series: str | None = None, instance: str | None = None) -> RetrievePlan:
    """The authorized plan for one URL; unknown, erased, forbidden or misplaced all answer 404 (no IDOR oracle).

    A refusal is recorded by the core; a refusal a fresh MFA confirmation would lift
    is the RFC 9470 challenge (401) instead.
    """
    try:
        if instance is not None:
            plan = caller.retrieve.plan(sop_instance_uids=[instance])
        elif series is not None:
            plan = caller.retrieve.plan(series_uids=[series])
        else:
            plan = caller.retrieve.plan(study_uids=[study])
    except StepUpRequired:
        raise
    except AccessDenied:
        raise NotFoundError("no such study, series or instance") from None
    if any(r.study_uid != study or (series is not None and r.series_uid != series) for r in plan.records):
        raise NotFoundError("no such study, series or instance")
    return plan


def _instance(caller: Services, study: str, series: str, instance: str) -> RetrievedObject:
    """One verified object, only under its own study and series URL."""
    return next(_plan(caller, study, series, instance).verified())


def _objects(plan: RetrievePlan) -> Iterator[RetrievedObject]:
    """Verified objects one at a time. The first is read before the response starts (its failure becomes a status)."""
    objects = plan.verified()
    first = next(objects)

    def stream() -> Iterator[RetrievedObject]:
        yield first
        try:
            yield from objects
        except IntegrityError as exc:
            log.error("integrity failure on %s during a streamed retrieve: response cut", exc.uid)
            raise

    return stream()


# -- negotiation -----------------------------------------------------------------------


def _dicom_representation(accept: list[MediaRange], syntaxes: set[str] | None, single_ok: bool) -> bool:
    """PS3.18 8.7.3.5.2 for application/dicom; returns True for a single-part answer; 406 if nothing fits.

    An absent or ``*`` transfer-syntax selects the stored syntax (the archive does
    not transcode); a named one must be the stored syntax of every object.
    ``syntaxes=None`` checks everything but the transfer syntax (before retrieval).
    """
    for r in accept:
        if r.type in ("*/*", "multipart/*"):
            return False
        wanted_type = r.params.get("type", DICOM).lower() if r.type == MULTIPART_RELATED else r.type
        if r.type != MULTIPART_RELATED and not single_ok:
            continue
        if wanted_type not in (DICOM, "application/*", "*/*"):
            continue
        ts = r.params.get("transfer-syntax")
        if ts in (None, "*") or syntaxes is None or syntaxes == {ts}:
            return r.type != MULTIPART_RELATED
    raise not_acceptable('available as multipart/related; type="application/dicom" in the stored transfer syntax (no transcoding)')


COALESCE_BYTES = 256 * 1024
"""Parts smaller than this are sent together, up to this many bytes per write."""


def _stream_dicom(objects: Iterator[RetrievedObject], announced: list[tuple[str, int]]) -> StreamingResponse:
    """The objects as one multipart/related body (PS3.18 8.7.3.5), each part sent only once verified.

    ``announced``: each object's transfer syntax and length, in order, known before the first is read (an index
    row's stored size, :func:`~dicomguard.crypto.blob_cipher.plaintext_size`). The body's length is therefore
    sent as ``Content-Length`` (RFC 9110 8.6): the client knows a cut stream from a complete one by its length,
    and the server writes each object as it is, where chunked framing would copy every byte once more. An object
    that does not match what was announced cuts the stream like one that fails verification.

    Every chunk of a streamed body costs a hand-off to the server's thread pool, an ASGI message and
    a TLS record: small objects (a 10 KB CT slice) are therefore coalesced into writes of about
    :data:`COALESCE_BYTES`, while a large object is written as it is (never copied). Memory stays
    bounded by one buffer. If a later object fails verification the parts already verified are still
    sent before the stream is cut, as they would be unbuffered.
    """
    writer = MultipartWriter(DICOM)
    headers = [writer.part_header(f"{DICOM}; transfer-syntax={syntax}") for syntax, _ in announced]
    closing = writer.closing()
    length = sum(map(len, headers)) + sum(size for _, size in announced) + len(closing)

    def body() -> Iterator[bytes]:
        pending = bytearray()
        try:
            for part, obj, (syntax, size) in zip(headers, objects, announced, strict=True):
                if obj.transfer_syntax != syntax or len(obj.data) != size:
                    log.error("%s is not the object its index row announced: response cut", obj.sop_instance_uid)
                    raise IntegrityError("size-mismatch", obj.sop_instance_uid, "not the length its index row announced")
                pending += part
                if len(obj.data) >= COALESCE_BYTES:
                    yield bytes(pending)
                    pending.clear()
                    yield obj.data
                    continue
                pending += obj.data
                if len(pending) >= COALESCE_BYTES:
                    yield bytes(pending)
                    pending.clear()
        except Exception:
            if pending:
                yield bytes(pending)  # what was verified before the failure
            raise
        pending += closing
        yield bytes(pending)

    return StreamingResponse(_batched(body()), media_type=writer.content_type, headers={"Content-Length": str(length)})


BATCH_BYTES = 2 * 1024 * 1024
"""Bytes of a streamed body taken from the thread pool per hand-off (the chunks themselves are sent unchanged)."""


async def _batched(chunks: Iterator[bytes] | Iterator[bytes | memoryview]) -> AsyncIterator[bytes | memoryview]:
    """The chunks of a blocking body, fetched from the thread pool about :data:`BATCH_BYTES` at a time.

    Starlette hands a blocking iterator to the thread pool once per chunk; a series of 0.5 MB objects is two chunks
    per object (part header, object), a metadata array one per object, each a round trip between the event loop and
    a thread. Here one round trip
    brings several, which the event loop then sends one by one. A failure raised by the body (an object that fails
    verification) is raised only after the chunks produced before it are sent, as it was chunk by chunk.
    """

    def next_batch() -> tuple[list[bytes | memoryview], BaseException | None]:
        batch: list[bytes | memoryview] = []
        size = 0
        try:
            for chunk in chunks:
                batch.append(chunk)
                size += len(chunk)
                if size >= BATCH_BYTES:
                    break
        except Exception as exc:  # noqa: BLE001 - raised below, after what was produced before it
            return batch, exc
        return batch, None

    while True:
        batch, failure = await run_in_threadpool(next_batch)
        for chunk in batch:
            yield chunk
        if failure is not None:
            raise failure
        if not batch:
            return


def _retrieve(request: Request, plan: RetrievePlan) -> Response:
    accept = parse_accept(request.headers.get("accept"))
    _dicom_representation(accept, {r.transfer_syntax for r in plan.records}, single_ok=False)
    return _stream_dicom(_objects(plan), [(r.transfer_syntax, plaintext_size(r.size)) for r in plan.records])


# -- metadata --------------------------------------------------------------------------


def _metadata_json(obj: RetrievedObject, base: str) -> bytes:
    """DICOM JSON of the stored header (PS3.18 F.2); binary values over 1 KiB by BulkDataURI (F.2.6)."""
    ds = read_header(obj, pixels=True)
    url = f"{base}/studies/{obj.study_uid}/series/{obj.series_uid}/instances/{obj.sop_instance_uid}"
    doc = dataset_to_json(ds, lambda tag: f"{url}/bulkdata/{tag:08X}")
    doc.update([attribute("AvailableTransferSyntaxUID", obj.transfer_syntax)])
    return json.dumps(dict(sorted(doc.items())), separators=(",", ":")).encode("utf-8")


def _metadata(request: Request, fetch: Callable[[], Iterator[RetrievedObject]]) -> StreamingResponse:
    """Negotiate first (a 406 retrieves nothing), then fetch and stream a JSON array."""
    if choose_single(parse_accept(request.headers.get("accept")), [DICOM_JSON, "application/json"]) is None:
        raise not_acceptable("metadata is available as application/dicom+json")
    base = dicomweb_base(request)
    objects = fetch()

    def body() -> Iterator[bytes]:
        yield b"["
        for i, obj in enumerate(objects):
            yield (b"," if i else b"") + _metadata_json(obj, base)
        yield b"]"

    return StreamingResponse(_batched(body()), media_type=DICOM_JSON)


# -- frames and bulk data --------------------------------------------------------------


def _frames_response(request: Request, parts: list[memoryview], media_type: str, syntax: str) -> StreamingResponse:
    """Stream ``parts`` (views of the verified object) in pieces of at most :data:`CHUNK_BYTES`; nothing is joined."""
    offer = Offer(media_type, syntax)
    if choose_multipart(parse_accept(request.headers.get("accept")), [offer]) is None:
        raise not_acceptable(f'available as multipart/related; type="{media_type}"; transfer-syntax={syntax} (no transcoding)')
    writer = MultipartWriter(media_type)
    part_type = part_content_type(offer)

    def body() -> Iterator[bytes | memoryview]:
        for payload in parts:
            yield writer.part_header(part_type)
            for start in range(0, len(payload), CHUNK_BYTES):
                yield payload[start : start + CHUNK_BYTES]
        yield writer.closing()

    return StreamingResponse(_batched(body()), media_type=writer.content_type)


def _frame_representation(transfer_syntax: str) -> tuple[str, str]:
    media_type = frame_media_type(transfer_syntax)
    if media_type is None:
        raise not_acceptable("frames of video objects are not available; retrieve the instance")
    return media_type, EXPLICIT_LE if transfer_syntax == DEFLATED else transfer_syntax


# -- routes: retrieve --------------------------------------------------------------------

_I = "/studies/{study}/series/{series}/instances/{instance}"


@router.get("/studies/{study}", include_in_schema=False)
def retrieve_study(request: Request, study: StudyUID, caller: Caller) -> Response:
    """Retrieve a study (PS3.18 10.4.1, ``/studies/{study}``)."""
    return _retrieve(request, _plan(caller, study))


@router.get("/studies/{study}/series/{series}", include_in_schema=False)
def retrieve_series(
    request: Request, study: StudyUID, series: SeriesUID, caller: Caller
) -> Response:
    """Retrieve a series (``/studies/{study}/series/{series}``)."""
    return _retrieve(request, _plan(caller, study, series))


@router.get(_I, include_in_schema=False)
def retrieve_instance(
    request: Request, study: StudyUID, series: SeriesUID, instance: InstanceUID,
    caller: Caller,
) -> Response:
    """Retrieve an instance (``.../instances/{instance}``): multipart, or bare application/dicom if asked (PS3.18 8.7.3.5)."""
    accept = parse_accept(request.headers.get("accept"))
    _dicom_representation(accept, None, single_ok=True)  # 406 before anything is retrieved
    obj = _instance(caller, study, series, instance)
    if _dicom_representation(accept, {obj.transfer_syntax}, single_ok=True):
        return Response(obj.data, media_type=f"{DICOM}; transfer-syntax={obj.transfer_syntax}")
    return _stream_dicom(iter([obj]), [(obj.transfer_syntax, len(obj.data))])


# -- routes: metadata ----------------------------------------------------------------------


@router.get("/studies/{study}/metadata", include_in_schema=False)
def study_metadata(request: Request, study: StudyUID, caller: Caller) -> Response:
    """Metadata of every instance of a study (PS3.18 10.4.1.1.2)."""
    return _metadata(request, lambda: _objects(_plan(caller, study)))


@router.get("/studies/{study}/series/{series}/metadata", include_in_schema=False)
def series_metadata(
    request: Request, study: StudyUID, series: SeriesUID, caller: Caller
) -> Response:
    return _metadata(request, lambda: _objects(_plan(caller, study, series)))


@router.get(_I + "/metadata", include_in_schema=False)
def instance_metadata(
    request: Request, study: StudyUID, series: SeriesUID, instance: InstanceUID,
    caller: Caller,
) -> Response:
    return _metadata(request, lambda: iter([_instance(caller, study, series, instance)]))


# -- routes: frames, bulk data -----------------------------------------------------------------


@router.get(_I + "/frames/{frames}", include_in_schema=False)
def frames(
    request: Request, study: StudyUID, series: SeriesUID, instance: InstanceUID, frames: str,
    caller: Caller,
) -> Response:
    """Frames (PS3.18 10.4.1.1.3): native frames as application/octet-stream, encapsulated ones in their own
    media type (image/jp2, image/jpeg, ...; PS3.18 Table 8.7.3-5), never transcoded.

    Each distinct frame is answered once, in the order first named; more than
    ``limits.max_frames_per_request`` distinct frames is a 400 before anything is read.
    """
    try:
        numbers = parse_frame_list(frames, _limits(request).max_frames_per_request)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    obj = _instance(caller, study, series, instance)
    media_type, syntax = _frame_representation(obj.transfer_syntax)
    try:
        parts = extract_frames(obj, read_header(obj), numbers)
    except FramesUnavailable as exc:
        raise HTTPException(501, str(exc)) from None
    return _frames_response(request, parts, media_type, syntax)


@router.get(_I + "/bulkdata/{tag}", include_in_schema=False)
def bulkdata(
    request: Request, study: StudyUID, series: SeriesUID, instance: InstanceUID, tag: str,
    caller: Caller,
) -> Response:
    """Bulk data named by a BulkDataURI of the metadata (PS3.18 10.4.1.1.5): a top-level element by its tag."""
    if len(tag) != 8 or not set(tag) <= _TAG_HEX:
        raise bad_request("bulk data is addressed by an 8-hex-digit tag")
    obj = _instance(caller, study, series, instance)
    number = int(tag, 16)
    syntax = EXPLICIT_LE if obj.transfer_syntax == DEFLATED else obj.transfer_syntax
    if number == PIXEL_DATA and has_pixel_data(obj):
        if is_encapsulated(obj.transfer_syntax):
            media_type, syntax = _frame_representation(obj.transfer_syntax)
            return _frames_response(request, extract_frames(obj, read_header(obj), None), media_type, syntax)
        return _frames_response(request, [pixel_value(obj)], OCTET_STREAM, syntax)
    elem = read_header(obj, pixels=True).get(number)
    if elem is None or not isinstance(elem.value, (bytes, bytearray)):
        raise NotFoundError("no such bulk data")
    return _frames_response(request, [memoryview(elem.value)], OCTET_STREAM, syntax)


# -- routes: rendered ----------------------------------------------------------------------------


def _rendered(request: Request, caller: Services, study: str, series: str, instance: str, frame: int) -> Response:
    media_type = choose_single(parse_accept(request.headers.get("accept")), RENDERED_TYPES)
    if media_type is None:
        raise not_acceptable("rendered images are available as image/jpeg or image/png")
    limits = _limits(request)
    try:
        opts = parse_render_options(request.query_params.multi_items(), limits.max_rendered_size)
    except QueryError as exc:
        raise bad_request(str(exc)) from None
    obj = _instance(caller, study, series, instance)
    try:
        image = render(obj, read_header(obj), frame, media_type, opts, limits)
    except RenderTooLarge:
        raise HTTPException(501, "this frame is larger than this server renders (limits.max_inflated_bytes)") from None
    except RenderUnavailable:
        raise HTTPException(501, "this object cannot be rendered by this server") from None
    return Response(image, media_type=media_type)


@router.get(_I + "/rendered", include_in_schema=False)
def instance_rendered(
    request: Request, study: StudyUID, series: SeriesUID, instance: InstanceUID,
    caller: Caller,
) -> Response:
    """Rendered instance (PS3.18 10.4.1.1.4): its first frame as image/jpeg (default) or image/png."""
    return _rendered(request, caller, study, series, instance, 1)


@router.get(_I + "/frames/{frame}/rendered", include_in_schema=False)
def frame_rendered(
    request: Request, study: StudyUID, series: SeriesUID, instance: InstanceUID, frame: str,
    caller: Caller,
) -> Response:
    """One rendered frame (``.../frames/{n}/rendered``; a single frame number)."""
    if not frame.isdigit() or len(frame) > 9 or int(frame) < 1:
        raise bad_request("a rendered frame is addressed by one frame number")
    return _rendered(request, caller, study, series, instance, int(frame))
