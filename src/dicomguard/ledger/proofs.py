"""Offline checking of proof bundles (``dicomguard ledger check-proof``).

A bundle lets anyone holding the archive's public key check, without access to
the archive, that an object with given pixel and header digests is in the log:
the checkpoint signature (Ed25519, C2SP signed-note), then the inclusion of the
leaf under the checkpoint's root (RFC 9162 2.1.3.2), then, optionally, that a
DICOM file at hand has exactly the leaf's digests.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from dicomguard.ledger import merkle
from dicomguard.ledger.checkpoint import Checkpoint, CheckpointError, CheckpointVerifier
from dicomguard.ledger.leaves import decode

BUNDLE_FORMAT = "dicomguard-proof/1"


class BundleError(CheckpointError):
    """The bundle does not prove what it claims."""


@dataclass(frozen=True)
class ProvenLeaf:
    checkpoint: Checkpoint
    leaf: dict[str, Any]
    index: int


def check_bundle(bundle_bytes: bytes, verifier_key: str, dicom: bytes | None = None) -> ProvenLeaf:
    """Verify a proof bundle against a trusted public key; raises :class:`BundleError`."""
    try:
        bundle = json.loads(bundle_bytes)
        if bundle.get("format") != BUNDLE_FORMAT:
            raise BundleError("not a dicomguard proof bundle")
        leaf_bytes = bundle["leaf"].encode("ascii")
        index, size = int(bundle["leaf_index"]), int(bundle["tree_size"])
        proof = [base64.b64decode(h, validate=True) for h in bundle["inclusion_proof"]]
        note = bundle["checkpoint"].encode("utf-8")
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise BundleError(f"malformed proof bundle: {exc}") from None
    verifier = CheckpointVerifier.from_verifier_key(verifier_key.strip())
    cp = verifier.verify(note)
    if cp.size != size:
        raise BundleError("bundle tree size differs from its checkpoint")
    try:
        merkle.verify_inclusion(merkle.leaf_hash(leaf_bytes), index, size, proof, cp.root_hash)
    except merkle.ProofError as exc:
        raise BundleError(f"leaf is not in the signed tree: {exc}") from None
    leaf = decode(leaf_bytes)
    if dicom is not None:
        _check_dicom(leaf, dicom)
    return ProvenLeaf(cp, leaf, index)


def _check_dicom(leaf: dict[str, Any], dicom: bytes) -> None:
    from dicomguard.config import LimitSettings
    from dicomguard.core.dicom_structure import walk_part10
    from dicomguard.core.hashing import digest_object
    from dicomguard.errors import RejectedObject

    try:
        wide = LimitSettings(max_object_bytes=16384 * 1024 * 1024, max_inflated_bytes=16384 * 1024 * 1024, max_inflation_ratio=2000)
        structure = walk_part10(dicom, wide)
    except RejectedObject as exc:
        raise BundleError(f"the DICOM file is not well-formed: {exc}") from None
    d = digest_object(dicom, structure)
    if d.pixel_sha256.hex() != leaf.get("pixel_sha256"):
        raise BundleError("the DICOM file's pixel data differs from the archived object")
    if d.header_sha256.hex() != leaf.get("header_sha256"):
        raise BundleError("the DICOM file's header differs from the archived object")
