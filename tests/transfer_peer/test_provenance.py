"""The provenance manifest: real bundles from a real archive's ledger, verified against the pinned key,
including the bytes received; every way it can fail names the object and the reason."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dicomguard.ledger.checkpoint import Checkpoint, CheckpointSigner
from dicomguard.transfer import PROVENANCE_FORMAT, ProvenanceError, build_provenance, parse_provenance, verify_provenance
from dicomguard.transfer import provenance as provenance_module
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of, to_bytes


def _sent(archive, objects: list[bytes]) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """Store ``objects`` and return them as the sender would send them: retrieved from its archive."""
    uids = [archive.operator.store.ingest(o).sop_instance_uid for o in objects]
    return {uid: archive.operator.retrieve.instance(uid).data for uid in uids}


def _manifest(archive, uids) -> bytes:  # type: ignore[no-untyped-def]
    return build_provenance(archive.ledger.origin, {uid: archive.ledger.prove_instance(uid) for uid in uids})


@pytest.fixture
def sender(archive):  # type: ignore[no-untyped-def]
    sent = _sent(archive, ct_series(ALICE, n=3) + ct_series(BOB, n=1, seed=5))
    return archive, sent, _manifest(archive, sent), archive.ledger.verifier.to_verifier_key()


@pytest.fixture
def other_archive(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """An archive of its own (own ledger key and archive id: the test homes share the template's)."""
    from dicomguard.app.archive import Archive
    from dicomguard.app.home import init_home

    root = tmp_path / "other-home"
    init_home(root, PASSPHRASE, "admin")
    a = Archive.open(root, PASSPHRASE)
    try:
        yield a
    finally:
        a.close()


def test_a_manifest_of_real_bundles_verifies_with_the_bytes_received(sender) -> None:
    archive, sent, data, key = sender
    doc = json.loads(data)
    assert doc["format"] == PROVENANCE_FORMAT and doc["origin"] == archive.ledger.origin and set(doc["bundles"]) == set(sent)
    proven = verify_provenance(data, key, sent)
    assert list(proven) == list(sent)
    for uid, leaf in proven.items():
        assert leaf.leaf["sop_instance_uid"] == uid and leaf.checkpoint.origin == archive.ledger.origin
    assert parse_provenance(data).origin == archive.ledger.origin


def test_a_flipped_pixel_byte_fails_naming_the_object(sender) -> None:
    _, sent, data, key = sender
    uids = list(sent)
    ds = dataset_of(sent[uids[2]])
    pixels = bytearray(ds.PixelData)
    pixels[100] ^= 0x01
    ds.PixelData = bytes(pixels)
    received = {**sent, uids[2]: to_bytes(ds)}
    with pytest.raises(ProvenanceError, match="pixel data differs") as caught:
        verify_provenance(data, key, received)
    assert caught.value.sop_instance_uid == uids[2] and uids[2] in str(caught.value)


def test_a_flipped_byte_anywhere_in_an_object_fails(sender) -> None:
    _, sent, data, key = sender
    uids = list(sent)
    raw = bytearray(sent[uids[0]])
    raw[len(raw) // 2] ^= 0x80  # in the pixel data of a 64x64 CT
    with pytest.raises(ProvenanceError) as caught:
        verify_provenance(data, key, {**sent, uids[0]: bytes(raw)})
    assert caught.value.sop_instance_uid == uids[0]


def test_a_substituted_object_fails(sender) -> None:
    _, sent, data, key = sender
    uids = list(sent)
    with pytest.raises(ProvenanceError, match="differs") as caught:
        verify_provenance(data, key, {**sent, uids[1]: sent[uids[0]]})
    assert caught.value.sop_instance_uid == uids[1]


def test_a_missing_bundle_fails_naming_the_object(sender) -> None:
    archive, sent, _, key = sender
    uids = list(sent)
    partial = _manifest(archive, uids[:2] + uids[3:])
    with pytest.raises(ProvenanceError, match="no provenance bundle") as caught:
        verify_provenance(partial, key, sent)
    assert caught.value.sop_instance_uid == uids[2]


def test_a_bundle_for_an_object_not_received_is_refused_unless_allowed(sender) -> None:
    _, sent, data, key = sender
    uids = list(sent)
    fewer = {u: sent[u] for u in uids[:3]}
    with pytest.raises(ProvenanceError, match="not received") as caught:
        verify_provenance(data, key, fewer)
    assert caught.value.sop_instance_uid == uids[3]
    assert list(verify_provenance(data, key, fewer, allow_extra=True)) == uids[:3]


def test_a_manifest_of_another_archive_is_refused(sender, other_archive) -> None:
    _, _, _, key = sender
    theirs = _sent(other_archive, ct_series(ALICE, n=1, seed=9))
    data = _manifest(other_archive, theirs)
    with pytest.raises(ProvenanceError, match="is not the peer's") as caught:
        verify_provenance(data, key, theirs)
    assert caught.value.sop_instance_uid is None
    assert list(verify_provenance(data, other_archive.ledger.verifier.to_verifier_key(), theirs)) == list(theirs)


def test_a_bundle_of_another_archive_under_our_origin_is_refused(sender, other_archive) -> None:
    archive, sent, data, key = sender
    theirs = _sent(other_archive, ct_series(BOB, n=1, seed=11))
    (uid,) = theirs
    doc = json.loads(data)
    doc["bundles"][uid] = other_archive.ledger.prove_instance(uid)
    with pytest.raises(ProvenanceError, match="another log") as caught:
        verify_provenance(json.dumps(doc).encode(), key, {**sent, **theirs})
    assert caught.value.sop_instance_uid == uid


def test_a_checkpoint_signed_by_another_key_for_our_origin_is_refused(sender) -> None:
    """An impostor who knows the origin line but not the key: the note is not signed by the pinned key."""
    archive, sent, data, key = sender
    uids = list(sent)
    doc = json.loads(data)
    bundle = doc["bundles"][uids[0]]
    body = bundle["checkpoint"].split("\n\n", 1)[0] + "\n"
    forged = CheckpointSigner(archive.ledger.origin, Ed25519PrivateKey.generate()).sign(Checkpoint.from_body(body.encode()))
    bundle["checkpoint"] = forged.decode()
    with pytest.raises(ProvenanceError, match="not signed by") as caught:
        verify_provenance(json.dumps(doc).encode(), key, sent)
    assert caught.value.sop_instance_uid == uids[0]


def test_a_bundle_filed_under_another_uid_is_refused(sender) -> None:
    _, sent, data, key = sender
    uids = list(sent)
    doc = json.loads(data)
    doc["bundles"][uids[0]], doc["bundles"][uids[1]] = doc["bundles"][uids[1]], doc["bundles"][uids[0]]
    with pytest.raises(ProvenanceError) as caught:
        verify_provenance(json.dumps(doc).encode(), key, sent)
    assert caught.value.sop_instance_uid == uids[0]


def test_a_tampered_inclusion_proof_is_refused(sender) -> None:
    _, sent, data, key = sender
    uids = list(sent)
    doc = json.loads(data)
    proof = doc["bundles"][uids[1]]["inclusion_proof"]
    assert proof
    proof[0] = proof[-1] if len(proof) > 1 and proof[0] != proof[-1] else "A" * 43 + "="
    with pytest.raises(ProvenanceError, match="not in the signed tree") as caught:
        verify_provenance(json.dumps(doc).encode(), key, sent)
    assert caught.value.sop_instance_uid == uids[1]


def test_build_refuses_what_the_receiver_would(sender) -> None:
    archive, sent, _, _ = sender
    uids = list(sent)
    bundles = {uid: archive.ledger.prove_instance(uid) for uid in uids}
    with pytest.raises(ProvenanceError, match="proves another object"):
        build_provenance(archive.ledger.origin, {uids[0]: bundles[uids[1]]})
    with pytest.raises(ProvenanceError, match="another log"):
        build_provenance("dicomguard/someone-else", bundles)
    with pytest.raises(ProvenanceError, match="valid SOP Instance UID"):
        build_provenance(archive.ledger.origin, {"1.2.03": bundles[uids[0]]})
    with pytest.raises(ProvenanceError, match="at least one"):
        build_provenance(archive.ledger.origin, {})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "too many JSON values|not valid JSON"),
        (b'{"format": "dicomguard-proof/1"}', "not a dicomguard-provenance/1"),
        (b'{"format": "dicomguard-provenance/1", "origin": "a\\nb", "bundles": {"1.2": {}}}', "origin"),
        (b'{"format": "dicomguard-provenance/1", "origin": "o", "bundles": {}}', "no bundles"),
        (b'{"format": "dicomguard-provenance/1", "origin": "o", "bundles": {"../x": {}}}', "invalid SOP Instance UID"),
        (b'{"format": "dicomguard-provenance/1", "origin": "o", "bundles": {"1.2": []}}', "not a JSON object"),
    ],
)
def test_malformed_manifests_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ProvenanceError, match=message):
        parse_provenance(data)


def test_oversized_manifests_are_refused_before_parsing(sender, monkeypatch) -> None:
    _, sent, _, key = sender
    huge = b'{"format": "dicomguard-provenance/1", "pad": "' + b"x" * (64 * 1024 * 1024) + b'"}'
    started = time.monotonic()
    with pytest.raises(ProvenanceError, match="exceeds"):
        verify_provenance(huge, key, sent)
    assert time.monotonic() - started < 1.0
    # Many small values in a size that passes: [[],[],...] would cost ~20x its size once parsed.
    many = b'{"format": "dicomguard-provenance/1", "x": [' + b"[]," * 3_000_000 + b"[]]}"
    with pytest.raises(ProvenanceError, match="too many JSON values"):
        verify_provenance(many, key, sent)
    monkeypatch.setattr(provenance_module, "MAX_BUNDLES", 3)
    bundles = {f"1.2.3.{i}": {} for i in range(4)}
    with pytest.raises(ProvenanceError, match="more than 3 bundles"):
        parse_provenance(json.dumps({"format": PROVENANCE_FORMAT, "origin": "o", "bundles": bundles}).encode())


def test_objects_may_be_a_lazy_mapping_read_once_each(sender) -> None:
    _, sent, data, key = sender

    class Lazy(Mapping[str, bytes]):
        def __init__(self) -> None:
            self.reads: list[str] = []

        def __getitem__(self, uid: str) -> bytes:
            self.reads.append(uid)
            return sent[uid]

        def __iter__(self) -> Iterator[str]:
            return iter(sent)

        def __len__(self) -> int:
            return len(sent)

    lazy = Lazy()
    verify_provenance(data, key, lazy)
    assert lazy.reads == list(sent)


def test_an_unusable_pinned_key_is_refused(sender) -> None:
    _, sent, data, _ = sender
    with pytest.raises(ProvenanceError, match="verifier key"):
        verify_provenance(data, "not a key", sent)
