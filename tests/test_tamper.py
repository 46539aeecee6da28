"""Attacks by someone with file-system and database access, each caught by ``verify`` with the right object.

One table of named attacks, one runner (the shape of python-tuf's repository
simulator). Each attack is done the way an attacker would do it: edit files,
re-encrypt with the real keys, edit or delete rows, copy an old home back.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import delete, select, update

from dicomguard.app.archive import Archive
from dicomguard.app.verify import verify_archive
from dicomguard.core.events import IntegrityViolation
from dicomguard.core.integrity import ProblemKind
from dicomguard.crypto.blob_cipher import BlobEncryptor, blob_identity
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import Instance, LedgerCheckpoint, LedgerHead, LedgerLeaf, LedgerNode
from dicomguard.ledger import merkle
from dicomguard.ledger.checkpoint import Checkpoint
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of, to_bytes


@dataclass
class Scene:
    archive: Archive
    uids: list[str]

    def row(self, uid: str) -> Instance:
        with read_session(self.archive.ctx.engine) as s:
            return s.get(Instance, uid)

    def blob_path(self, uid: str) -> Path:
        return self.archive.ctx.store._path(self.row(uid).blob_id)

    def reencrypt(self, uid: str, data: bytes) -> None:
        row = self.row(uid)
        key = self.archive.ctx.keyring.patient_key(row.patient_ref)
        enc = BlobEncryptor(key, blob_identity(uid, row.series_uid, row.study_uid, row.patient_ref))
        self.blob_path(uid).write_bytes(enc.header + enc.encrypt_segment(data, last=True))

    def sql(self, stmt) -> None:  # type: ignore[no-untyped-def]
        with write_session(self.archive.ctx.engine) as s:
            s.execute(stmt)


def edit_blob_bytes(sc: Scene) -> str:
    p = sc.blob_path(sc.uids[0])
    raw = bytearray(p.read_bytes())
    raw[-40] ^= 0x10
    p.write_bytes(bytes(raw))
    return sc.uids[0]


def change_pixels_with_real_key(sc: Scene) -> str:
    ds = dataset_of(sc.archive.operator.retrieve.instance(sc.uids[1]).data)
    px = bytearray(ds.PixelData)
    px[10:20] = bytes(10)
    ds.PixelData = bytes(px)
    sc.reencrypt(sc.uids[1], to_bytes(ds))
    return sc.uids[1]


def change_header_with_real_key(sc: Scene) -> str:
    ds = dataset_of(sc.archive.operator.retrieve.instance(sc.uids[2]).data)
    ds.PatientName = "SOMEBODY^ELSE"
    sc.reencrypt(sc.uids[2], to_bytes(ds))
    return sc.uids[2]


def delete_blob(sc: Scene) -> str:
    sc.blob_path(sc.uids[0]).unlink()
    return sc.uids[0]


def swap_blobs(sc: Scene) -> str:
    a, b = sc.blob_path(sc.uids[0]), sc.blob_path(sc.uids[1])
    a.write_bytes(b.read_bytes())
    return sc.uids[0]


def plant_unknown_blob(sc: Scene) -> str:
    blob_id = "ab" * 16
    sc.archive.ctx.store.put(blob_id, [b"DGB1" + bytes(100)])
    return blob_id


def alter_index_digest(sc: Scene) -> str:
    sc.sql(update(Instance).where(Instance.sop_instance_uid == sc.uids[1]).values(pixel_sha256=bytes(32)))
    return sc.uids[1]


def repoint_index_row_to_another_blob(sc: Scene) -> str:
    other = sc.row(sc.uids[3])
    sc.sql(update(Instance).where(Instance.sop_instance_uid == sc.uids[3]).values(blob_id="cd" * 16))
    sc.sql(update(Instance).where(Instance.sop_instance_uid == sc.uids[0]).values(blob_id=other.blob_id, blob_salt=other.blob_salt))
    return sc.uids[0]


def delete_index_row(sc: Scene) -> str:
    sc.sql(delete(Instance).where(Instance.sop_instance_uid == sc.uids[2]))
    return sc.uids[2]


def delete_last_ledger_rows(sc: Scene) -> str:
    """Hide the newest object from the log: drop its leaf and nodes, rewind the head."""
    with read_session(sc.archive.ctx.engine) as s:
        n = s.scalar(select(LedgerHead.size))
    sc.sql(delete(LedgerLeaf).where(LedgerLeaf.idx == n - 1))
    for level in range(n.bit_length()):
        sc.sql(delete(LedgerNode).where(LedgerNode.level == level, LedgerNode.idx == (n - 1) >> level))
    sc.sql(update(LedgerHead).values(size=n - 1))
    return "ledger"


def rewrite_a_leaf(sc: Scene) -> str:
    with read_session(sc.archive.ctx.engine) as s:
        leaf = s.scalar(select(LedgerLeaf).where(LedgerLeaf.idx == 1))
    sc.sql(update(LedgerLeaf).where(LedgerLeaf.idx == 1).values(data=leaf.data.replace(b'"pixel_sha256":"', b'"pixel_sha256":"0', 1)))
    return "checkpoint"


def forge_checkpoint_signature(sc: Scene) -> str:
    with read_session(sc.archive.ctx.engine) as s:
        cp = s.scalar(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(1))
    note = bytearray(cp.note)
    note[-10] = ord("A") if note[-10] != ord("A") else ord("B")
    sc.sql(update(LedgerCheckpoint).where(LedgerCheckpoint.size == cp.size).values(note=bytes(note)))
    return f"checkpoint {cp.size}"


@dataclass(frozen=True)
class Attack:
    run: Callable[[Scene], str]
    kind: ProblemKind
    subject: Callable[[str], Callable[[str], bool]] = lambda expected: (lambda got: got == expected)


ATTACKS = {
    "edit blob bytes": Attack(edit_blob_bytes, ProblemKind.BLOB_ALTERED),
    "re-encrypt changed pixels with the real key": Attack(change_pixels_with_real_key, ProblemKind.PIXEL_CHANGED),
    "re-encrypt changed header with the real key": Attack(change_header_with_real_key, ProblemKind.HEADER_CHANGED),
    "delete a blob": Attack(delete_blob, ProblemKind.BLOB_MISSING),
    "swap two blobs": Attack(swap_blobs, ProblemKind.BLOB_SWAPPED),
    "plant an unknown blob": Attack(plant_unknown_blob, ProblemKind.UNKNOWN_BLOB),
    "alter a digest in the index": Attack(alter_index_digest, ProblemKind.INDEX_ROW_ALTERED),
    "re-point an index row to another blob": Attack(repoint_index_row_to_another_blob, ProblemKind.INDEX_ROW_ALTERED),
    "delete an index row": Attack(delete_index_row, ProblemKind.INDEX_ROW_MISSING),
    "delete the newest ledger rows": Attack(delete_last_ledger_rows, ProblemKind.LEDGER_TRUNCATED, lambda _: lambda got: got.startswith("checkpoint")),
    "rewrite a ledger leaf": Attack(rewrite_a_leaf, ProblemKind.LEDGER_FORKED, lambda _: lambda got: got.startswith(("checkpoint", "node"))),
    "forge a checkpoint signature": Attack(forge_checkpoint_signature, ProblemKind.CHECKPOINT_SIGNATURE_BAD),
}


@pytest.fixture
def scene(archive) -> Scene:
    uids = [archive.operator.store.ingest(d).sop_instance_uid for d in ct_series(ALICE, n=3)]
    uids.append(archive.operator.store.ingest(ct_series(BOB, n=1, seed=6)[0]).sop_instance_uid)
    assert archive.operator.verify.run().ok
    return Scene(archive, uids)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_detected_with_the_right_kind_and_object(scene: Scene, name: str) -> None:
    attack = ATTACKS[name]
    alerts: list[IntegrityViolation] = []
    scene.archive.ctx.bus.subscribe(lambda s, e: alerts.append(e) if isinstance(e, IntegrityViolation) else None)
    subject = attack.run(scene)
    report = scene.archive.operator.verify.run()
    assert not report.ok
    matching = [p for p in report.problems if p.kind is attack.kind and attack.subject(subject)(p.subject)]
    assert matching, f"expected {attack.kind} on {subject}, got {report.problems}"
    # each problem is raised as a security alert
    assert {(a.kind, a.sop_instance_uid) for a in alerts} >= {(p.kind.value, p.subject[:64]) for p in report.problems}


def test_sampled_and_incremental_verification(scene: Scene) -> None:
    a = scene.archive
    size_before = a.ledger.verifier.verify(a.ledger.latest_checkpoint()).size
    new = a.operator.store.ingest(ct_series(BOB, n=1, seed=21)[0]).sop_instance_uid
    edit_blob_bytes(scene)  # an old object: outside --since
    r = verify_archive(a.ctx, a.ledger.verifier, since_size=size_before)
    assert r.objects_checked == 1 and r.ok
    swap_blobs(Scene(a, [new, scene.uids[1]]))
    r = verify_archive(a.ctx, a.ledger.verifier, since_size=size_before)
    assert [p.subject for p in r.problems] == [new]
    r = verify_archive(a.ctx, a.ledger.verifier, sample=2)
    assert r.objects_checked == 2


def _snapshot(archive: Archive, home: Path, db_url: str, dest: Path) -> Callable[[], None]:
    """Copy the whole home (and database); return a function that puts the copy back."""
    archive.close()
    shutil.copytree(home, dest)
    if not db_url:
        return lambda: (shutil.rmtree(home), shutil.copytree(dest, home))  # type: ignore[func-returns-value]
    url = sqlalchemy.engine.make_url(db_url)
    admin = sqlalchemy.create_engine(url.set(database="test"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{url.database}_snap" TEMPLATE "{url.database}"')

    def restore() -> None:
        shutil.rmtree(home)
        shutil.copytree(dest, home)
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE "{url.database}" WITH (FORCE)')
            c.exec_driver_sql(f'ALTER DATABASE "{url.database}_snap" RENAME TO "{url.database}"')

    return restore


def test_rollback_of_the_whole_home_is_caught_by_an_external_checkpoint(home, db_url, tmp_path) -> None:
    a = Archive.open(home, PASSPHRASE)
    for d in ct_series(ALICE, n=2):
        a.operator.store.ingest(d)
    restore_old = _snapshot(a, home, db_url, tmp_path / "old-home")
    a = Archive.open(home, PASSPHRASE)
    for d in ct_series(BOB, n=2, seed=3):
        a.operator.store.ingest(d)
    external = tmp_path / "witness.txt"  # kept on another disk
    external.write_bytes(a.ledger.latest_checkpoint())
    a.operator.ledger.witness(external.read_bytes(), "usb")
    a.close()
    restore_old()  # the attacker copies the old home back: its witness records are gone too
    with Archive.open(home, PASSPHRASE) as a:
        alone = verify_archive(a.ctx, a.ledger.verifier)
        assert alone.ok, "a consistent old copy verifies on its own: only an outside checkpoint can tell"
        report = a.operator.verify.run(trusted_notes_from_outside=[("external", external.read_bytes())])
    assert [(p.kind, p.subject) for p in report.problems] == [(ProblemKind.ROLLBACK, "external")]


def test_history_rewritten_with_the_real_keys_is_caught_by_a_witnessed_checkpoint(scene: Scene, tmp_path) -> None:
    """An insider with the passphrase rewrites the log and re-signs every checkpoint."""
    a = scene.archive
    external = a.ledger.latest_checkpoint()
    leaves = []
    with read_session(a.ctx.engine) as s:
        leaves = [(l.idx, l.data) for l in s.scalars(select(LedgerLeaf).order_by(LedgerLeaf.idx))]
    # replace the first object's digest in its leaf and in the index, then rebuild nodes and checkpoints
    k = next(i for i, (_, d) in enumerate(leaves) if b'"pixel_sha256"' in d)
    idx0, data0 = leaves[k]
    forged = data0.replace(b'"pixel_sha256":"', b'"pixel_sha256":"f', 1)
    leaves[k] = (idx0, forged)
    tree = merkle.TreeAppender()
    with write_session(a.ctx.engine) as s:
        s.execute(update(LedgerLeaf).where(LedgerLeaf.idx == idx0).values(data=forged))
        s.execute(delete(LedgerNode))
        s.execute(delete(LedgerCheckpoint))
        for _, d in leaves:
            for level, idx, h in tree.append([merkle.leaf_hash(d)]):
                s.add(LedgerNode(level=level, idx=idx, hash=h))
        from datetime import UTC, datetime

        s.add(LedgerCheckpoint(size=tree.size, note=a.ledger.signer.sign(Checkpoint(a.ledger.origin, tree.size, tree.root())), created_at=datetime.now(UTC)))
    report = verify_archive(a.ctx, a.ledger.verifier, trusted_notes_from_outside=[("witness", external)])
    assert (ProblemKind.LEDGER_FORKED, "witness") in {(p.kind, p.subject) for p in report.problems}
