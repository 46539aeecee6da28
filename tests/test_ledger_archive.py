"""The ledger inside the archive: one leaf per stored object, signed checkpoints, proofs, witnesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from dicomguard.core.query import IndexQuery
from dicomguard.errors import RejectedObject
from dicomguard.index.db import make_engine, migrate, read_session, write_session
from dicomguard.index.models import LedgerCheckpoint, LedgerLeaf
from dicomguard.ledger import merkle
from dicomguard.ledger.checkpoint import CheckpointError
from dicomguard.ledger.leaves import decode
from dicomguard.ledger.proofs import BundleError, check_bundle
from dicomguard.ledger.store import LedgerStore
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of, to_bytes

CREATION = 1
"""Leaves before a test's own: the archive's creation record (``init`` writes it first)."""


def _leaves(archive) -> list[LedgerLeaf]:
    """The ledger's leaves after the archive's creation leaf."""
    with read_session(archive.ctx.engine) as s:
        return list(s.scalars(select(LedgerLeaf).where(LedgerLeaf.idx >= CREATION).order_by(LedgerLeaf.idx)))


def test_the_ledger_begins_with_the_archive_creation(archive) -> None:
    with read_session(archive.ctx.engine) as s:
        first = s.scalar(select(LedgerLeaf).where(LedgerLeaf.idx == 0))
    doc = decode(first.data)
    assert (first.kind, doc["event"], doc["object"]) == ("event", "security-configuration", "archive")
    assert "archive created" in doc["change"] and "administrator account admin" in doc["change"]


def test_every_stored_object_has_one_leaf_without_phi_and_a_signed_checkpoint(archive) -> None:
    objects = ct_series(ALICE, n=3) + ct_series(BOB, n=2, seed=7)
    outcomes = list(archive.operator.store.ingest_many([(str(i), (lambda d=d: d)) for i, d in enumerate(objects)]))
    archive.operator.store.ingest(objects[0])  # duplicate: no new leaf
    leaves = _leaves(archive)
    assert [leaf.idx for leaf in leaves] == list(range(CREATION, CREATION + 5))
    assert {leaf.subject for leaf in leaves} == {o.result.sop_instance_uid for o in outcomes}
    for leaf in leaves:
        doc = decode(leaf.data)
        row = IndexQuery(archive.ctx).instances(sop_instance_uid=leaf.subject)[0]
        assert doc["pixel_sha256"] == row.pixel_sha256 and doc["header_sha256"] == row.header_sha256
        for secret in ALICE.secrets() + BOB.secrets():
            assert secret.encode() not in leaf.data
    note = archive.ledger.latest_checkpoint()
    cp = archive.ledger.verifier.verify(note)
    tree = merkle.MemoryTree()
    with read_session(archive.ctx.engine) as s:
        tree.append(s.scalar(select(LedgerLeaf.data).where(LedgerLeaf.idx == 0)))
    for leaf in leaves:
        tree.append(leaf.data)
    assert (cp.size, cp.root_hash) == (6, tree.root())
    assert note.decode().startswith(archive.ledger.origin + "\n6\n")


def test_security_events_are_ledgered_too(archive) -> None:
    data = ct_series(ALICE, n=1)[0]
    archive.operator.store.ingest(data)
    ds = dataset_of(data)
    ds.PatientSex = "M"
    with pytest.raises(RejectedObject):
        archive.operator.store.ingest(to_bytes(ds))  # write-once conflict
    archive.operator.erase.patient(ALICE.patient_id, "request")
    archive.operator.keys.rotate(PASSPHRASE)
    kinds = [(leaf.kind, decode(leaf.data).get("event")) for leaf in _leaves(archive)]
    assert kinds == [("instance", None), ("event", "conflict-refused"), ("event", "patient-erased"), ("event", "keys-rotated")]


def test_checkpoint_per_transaction_and_consistency_between_them(archive) -> None:
    for seed in range(3):
        archive.operator.store.ingest(ct_series(ALICE, n=1, seed=seed)[0])
    with read_session(archive.ctx.engine) as s:
        notes = [n for (n,) in s.execute(select(LedgerCheckpoint.note).order_by(LedgerCheckpoint.size))]
    cps = [archive.ledger.verifier.verify(n) for n in notes]
    assert [c.size for c in cps] == [1, 2, 3, 4]  # the creation, then one per ingest
    for old, new in zip(cps, cps[1:], strict=False):
        merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, archive.ledger.consistency_proof(old.size, new.size))


@settings(max_examples=15, deadline=None)
@given(batches=st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_stored_tree_matches_rfc9162_for_any_batching(tmp_path_factory, batches) -> None:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('ledger')}/l.db")
    migrate(engine)
    tree = merkle.MemoryTree()
    from datetime import UTC, datetime

    n = 0
    for b in batches:
        entries = [("event", str(n + i), f"leaf {n + i}".encode()) for i in range(b)]
        with write_session(engine) as s:
            size, root, _ = LedgerStore(s).append(entries, datetime.now(UTC))
        for _, _, d in entries:
            tree.append(d)
        n += b
        assert (size, root) == (tree.size, tree.root())
    with read_session(engine) as s:
        store = LedgerStore(s)
        for m in range(1, n + 1):
            assert store.root(m) == tree.root(m)
            merkle.verify_consistency(m, n, tree.root(m), tree.root(), store.consistency_proof(m, n))
        for i in range(n):
            merkle.verify_inclusion(merkle.leaf_hash(f"leaf {i}".encode()), i, n, store.inclusion_proof(i, n), tree.root())
    engine.dispose()


@pytest.mark.slow
def test_concurrent_writers_form_one_sequence(home, db_url) -> None:
    """Two processes ingesting at once: contiguous leaves, one valid tree, every checkpoint consistent."""
    script = textwrap.dedent(
        """
        import sys
        from dicomguard.app.archive import Archive
        from tests.dicom_factory import FakePatient, ct_series
        p = FakePatient("PIDCONC" + sys.argv[2], "CONC^" + sys.argv[2], "20000101", "ACCCONC" + sys.argv[2])
        with Archive.open(sys.argv[1]) as a:
            for seed in range(12):
                a.operator.store.ingest(ct_series(p, n=1, size=16, seed=seed * 100 + int(sys.argv[2]))[0])
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(home), str(k)], env=env) for k in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    from dicomguard.app.archive import Archive

    with Archive.open(home, PASSPHRASE) as a:
        report = a.operator.verify.run()
        assert report.ok, report.problems
        assert report.tree_size == CREATION + 24 and report.checkpoints_checked == CREATION + 24


def test_proof_bundle_verifies_offline_and_a_modified_image_does_not(archive, tmp_path) -> None:
    data = ct_series(ALICE, n=3)
    uids = [archive.operator.store.ingest(d).sop_instance_uid for d in data]
    bundle = json.dumps(archive.ledger.prove_instance(uids[1])).encode()
    key = archive.ledger.verifier.to_verifier_key()
    proven = check_bundle(bundle, key, dicom=archive.operator.retrieve.instance(uids[1]).data)
    assert proven.leaf["sop_instance_uid"] == uids[1] and proven.checkpoint.size == CREATION + 3
    check_bundle(bundle, key, dicom=data[1])  # the original file, preamble and all, matches too
    ds = dataset_of(data[1])
    pixels = bytearray(ds.PixelData)
    pixels[0] ^= 1
    ds.PixelData = bytes(pixels)
    with pytest.raises(BundleError, match="pixel data differs"):
        check_bundle(bundle, key, dicom=to_bytes(ds))
    ds = dataset_of(data[1])
    ds.PatientName = "SOMEONE^ELSE"
    with pytest.raises(BundleError, match="header differs"):
        check_bundle(bundle, key, dicom=to_bytes(ds))
    with pytest.raises(BundleError, match="pixel data differs"):
        check_bundle(bundle, key, dicom=data[0])  # another image of the series
    doc = json.loads(bundle)
    doc["leaf"] = doc["leaf"].replace(doc["leaf"][doc["leaf"].index("pixel_sha256") + 15], "0", 1)
    with pytest.raises(BundleError):
        check_bundle(json.dumps(doc).encode(), key)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from dicomguard.ledger.checkpoint import CheckpointSigner

    other = CheckpointSigner(archive.ledger.origin, Ed25519PrivateKey.generate()).verifier().to_verifier_key()
    with pytest.raises(CheckpointError):
        check_bundle(bundle, other)


def test_witness_refuses_a_checkpoint_the_tree_does_not_contain(archive, tmp_path) -> None:
    archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    note = archive.ledger.latest_checkpoint()
    assert archive.operator.ledger.witness(note, "usb stick").size == CREATION + 1
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from dicomguard.ledger.checkpoint import Checkpoint, CheckpointSigner

    forged = CheckpointSigner(archive.ledger.origin, Ed25519PrivateKey.generate()).sign(Checkpoint(archive.ledger.origin, 1, bytes(32)))
    with pytest.raises(CheckpointError):
        archive.operator.ledger.witness(forged, "attacker")
    ahead = archive.ledger.signer.sign(Checkpoint(archive.ledger.origin, 9, bytes(32)))
    with pytest.raises(CheckpointError, match="ahead"):
        archive.operator.ledger.witness(ahead, "future")
    other_root = archive.ledger.signer.sign(Checkpoint(archive.ledger.origin, 1, bytes(32)))
    with pytest.raises(CheckpointError, match="rewritten"):
        archive.operator.ledger.witness(other_root, "fork")
