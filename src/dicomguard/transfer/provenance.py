"""The provenance part of a site-to-site transfer: ``dicomguard-provenance/1``.

One JSON document travels as the last part of the STOW-RS request
(``Content-Type: application/vnd.dicomguard.provenance+json``)::

    {"format": "dicomguard-provenance/1",
     "origin": "<the sender ledger's origin line, e.g. dicomguard/ARCHIVE-ID>",
     "bundles": {"<SOP Instance UID>": <dicomguard-proof/1 bundle>, ...}}

Each bundle (:meth:`dicomguard.ledger.service.Ledger.prove_instance`) proves
that the sender's tamper-evident log holds a leaf with the object's pixel and
header digests: a signed checkpoint (C2SP signed-note, Ed25519) and an RFC
9162 2.1.3 inclusion proof of the leaf under the checkpoint's root.

Security property of :func:`verify_provenance`: it returns only if *every*
object received has a bundle that verifies against the peer's pinned public
key (obtained out of band, never from the manifest: the bundles' own
``public_key`` fields are ignored), whose checkpoint has the manifest's
origin, whose leaf is an instance leaf of that SOP Instance UID, and whose
digests are those of the bytes received (so a substituted or altered object
fails). Otherwise it raises :class:`ProvenanceError` naming the first failing
UID. Parsing is bounded (:data:`MAX_PROVENANCE_BYTES`, :data:`MAX_BUNDLES`,
and a bound on JSON values checked before parsing), so a peer holding valid
credentials cannot exhaust the receiver's memory with the manifest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dicomguard.errors import DicomGuardError
from dicomguard.ledger.checkpoint import CheckpointError, CheckpointVerifier
from dicomguard.ledger.proofs import BUNDLE_FORMAT, ProvenLeaf, check_bundle

__all__ = [
    "MAX_BUNDLES", "MAX_PROVENANCE_BYTES", "PROVENANCE_FORMAT", "PROVENANCE_MEDIA_TYPE",
    "Provenance", "ProvenanceError", "ProvenLeaf", "build_provenance", "parse_provenance", "verify_provenance",
]

PROVENANCE_FORMAT = "dicomguard-provenance/1"
PROVENANCE_MEDIA_TYPE = "application/vnd.dicomguard.provenance+json"
MAX_PROVENANCE_BYTES = 64 * 1024 * 1024
MAX_BUNDLES = 10_000
"""As many as the parts one STOW-RS request may carry (``web/multipart.py`` MAX_PARTS)."""
_MAX_JSON_TOKENS_PER_BUNDLE = 256
"""A real bundle has about 40 JSON values (its proof has at most 64 hashes); ``, : [ {`` counted, generously."""
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")


class ProvenanceError(DicomGuardError):
    """The provenance part is malformed, or does not prove one of the objects received."""

    def __init__(self, message: str, sop_instance_uid: str | None = None) -> None:
        super().__init__(f"{sop_instance_uid}: {message}" if sop_instance_uid else message)
        self.sop_instance_uid = sop_instance_uid
        """The first object whose provenance failed; None when the manifest as a whole is refused."""


def _is_uid(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def _checkpoint_origin(bundle: Mapping[str, Any]) -> str:
    note = bundle.get("checkpoint")
    if not isinstance(note, str):
        raise ProvenanceError("a bundle has no checkpoint")
    return note.split("\n", 1)[0]


def _leaf_uid(bundle: Mapping[str, Any]) -> str | None:
    try:
        leaf = json.loads(bundle["leaf"])
        return leaf.get("sop_instance_uid") if isinstance(leaf, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def build_provenance(origin: str, bundles: Mapping[str, dict[str, Any]]) -> bytes:
    """The manifest of ``bundles`` (SOP Instance UID -> ``Ledger.prove_instance`` of it), canonical JSON.

    Checks what the sender can know without its key: formats, UIDs, that each bundle is of the object it is
    filed under and of ``origin``'s log, and the receiver's size bounds. Raises :class:`ProvenanceError`.
    """
    if not isinstance(origin, str) or not origin or "\n" in origin:
        raise ProvenanceError("the origin must be one non-empty line")
    if not bundles:
        raise ProvenanceError("a provenance manifest needs at least one bundle")
    if len(bundles) > MAX_BUNDLES:
        raise ProvenanceError(f"more than {MAX_BUNDLES} bundles in one manifest")
    for uid, bundle in bundles.items():
        if not _is_uid(uid):
            raise ProvenanceError("not a valid SOP Instance UID", str(uid)[:64])
        if not isinstance(bundle, Mapping) or bundle.get("format") != BUNDLE_FORMAT:
            raise ProvenanceError(f"not a {BUNDLE_FORMAT} bundle", uid)
        if _leaf_uid(bundle) != uid:
            raise ProvenanceError("the bundle proves another object", uid)
        if _checkpoint_origin(bundle) != origin:
            raise ProvenanceError("the bundle's checkpoint is of another log than the origin", uid)
    doc = {"format": PROVENANCE_FORMAT, "origin": origin, "bundles": dict(bundles)}
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    if len(data) > MAX_PROVENANCE_BYTES:
        raise ProvenanceError(f"the manifest exceeds {MAX_PROVENANCE_BYTES} bytes: send fewer objects per request")
    return data


@dataclass(frozen=True)
class Provenance:
    """A parsed (not yet verified) manifest; :meth:`verify` checks one object at a time."""

    origin: str
    bundles: Mapping[str, Mapping[str, Any]]

    def verify(self, sop_instance_uid: str, dicom: bytes, verifier_key: str) -> ProvenLeaf:
        """Check the object ``dicom`` received as ``sop_instance_uid`` against its bundle and the pinned
        ``verifier_key`` (C2SP note key of the peer's ledger); raises :class:`ProvenanceError`."""
        bundle = self.bundles.get(sop_instance_uid)
        if bundle is None:
            raise ProvenanceError("no provenance bundle for this object", sop_instance_uid)
        if _checkpoint_origin(bundle) != self.origin:
            raise ProvenanceError("the bundle's checkpoint is of another log than the manifest's origin", sop_instance_uid)
        try:
            proven = check_bundle(json.dumps(bundle).encode("utf-8"), verifier_key, dicom=dicom)
        except CheckpointError as exc:  # BundleError too: signature, origin, inclusion, digests
            raise ProvenanceError(str(exc), sop_instance_uid) from None
        except (RecursionError, ValueError, TypeError):
            raise ProvenanceError("the bundle is malformed", sop_instance_uid) from None
        if proven.checkpoint.origin != self.origin:
            raise ProvenanceError("the checkpoint's origin differs from the manifest's", sop_instance_uid)
        if proven.leaf.get("kind") != "instance" or proven.leaf.get("sop_instance_uid") != sop_instance_uid:
            raise ProvenanceError("the bundle proves another object", sop_instance_uid)
        return proven


def _bounded_json(data: bytes) -> Any:
    """``json.loads`` of at most :data:`MAX_PROVENANCE_BYTES` holding at most a bounded number of values.

    A JSON value costs far more memory parsed than as text (``[[],[],...]`` is ~20x), so the number of
    containers and separators is counted on the raw bytes first (strings may hold some: an upper bound).
    """
    if len(data) > MAX_PROVENANCE_BYTES:
        raise ProvenanceError(f"the provenance manifest exceeds {MAX_PROVENANCE_BYTES} bytes")
    tokens = data.count(b",") + data.count(b":") + data.count(b"[") + data.count(b"{")
    if tokens > MAX_BUNDLES * _MAX_JSON_TOKENS_PER_BUNDLE:
        raise ProvenanceError("the provenance manifest holds too many JSON values")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise ProvenanceError("the provenance manifest is not valid JSON") from None


def parse_provenance(data: bytes) -> Provenance:
    """Parse and bound a manifest (format, origin, at most :data:`MAX_BUNDLES` bundles keyed by UID); no
    signature is checked here. Raises :class:`ProvenanceError`."""
    doc = _bounded_json(data)
    if not isinstance(doc, dict) or doc.get("format") != PROVENANCE_FORMAT:
        raise ProvenanceError(f"not a {PROVENANCE_FORMAT} manifest")
    origin, bundles = doc.get("origin"), doc.get("bundles")
    if not isinstance(origin, str) or not origin or "\n" in origin:
        raise ProvenanceError("the manifest's origin is not one non-empty line")
    if not isinstance(bundles, dict) or not bundles:
        raise ProvenanceError("the manifest holds no bundles")
    if len(bundles) > MAX_BUNDLES:
        raise ProvenanceError(f"the manifest holds more than {MAX_BUNDLES} bundles")
    for uid, bundle in bundles.items():
        if not _is_uid(uid):
            raise ProvenanceError("the manifest files a bundle under an invalid SOP Instance UID")
        if not isinstance(bundle, dict):
            raise ProvenanceError("the bundle is not a JSON object", uid)
    return Provenance(origin, bundles)


def verify_provenance(data: bytes, verifier_key: str, objects: Mapping[str, bytes], *, allow_extra: bool = False) -> dict[str, ProvenLeaf]:
    """Verify the manifest ``data`` for every object received (SOP Instance UID -> its bytes as received).

    ``verifier_key`` is the peer's ledger key as pinned in the peers registry; its name must be the manifest's
    origin. ``objects`` may be a lazy mapping: each value is read once, in the mapping's order, and not kept.
    Bundles for objects not received are refused unless ``allow_extra``. Raises :class:`ProvenanceError`
    naming the first failing UID (in ``objects`` order).
    """
    manifest = parse_provenance(data)
    try:
        pinned = CheckpointVerifier.from_verifier_key(verifier_key.strip())
    except CheckpointError as exc:
        raise ProvenanceError(f"the peer's verifier key is unusable: {exc}") from None
    if pinned.origin != manifest.origin:
        raise ProvenanceError(f"the manifest's origin {manifest.origin!r} is not the peer's {pinned.origin!r}")
    received = list(objects)  # keys only: a lazy mapping's membership test could read a value
    if not received:
        raise ProvenanceError("no objects to verify")
    if not allow_extra:
        keys = set(received)
        extra = next((uid for uid in manifest.bundles if uid not in keys), None)
        if extra is not None:
            raise ProvenanceError("a bundle names an object that was not received", extra)
    return {uid: manifest.verify(uid, objects[uid], verifier_key) for uid in received}
