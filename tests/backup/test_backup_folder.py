"""Backups to a folder target: snapshot, incremental runs, restore, erasure and rotation across time, tampering, drills."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from dicomguard.app.archive import Archive
from dicomguard.app.backup.restore import RestoreError, Unlock, restore_home
from dicomguard.app.backup.snapshot import list_snapshots
from dicomguard.app.home import init_home
from dicomguard.core.access import AccessDenied, Principal, PrincipalKind
from dicomguard.crypto.recovery import parse_key
from dicomguard.errors import ErasedError, HomeExistsError, NotFoundError
from dicomguard.index.db import read_session
from dicomguard.index.models import BackupRun, Instance, LedgerLeaf
from dicomguard.storage.backup_targets import FolderTarget
from tests.backup.conftest import add_folder_target, load
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, BOB, ct_series, phi_needles


@pytest.fixture
def backed(home: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """An archive with Alice and Bob and a folder target ``nas``."""
    add_folder_target(home, tmp_path / "nas")
    archive = Archive.open(home, PASSPHRASE)
    alice, bob = load(archive)
    try:
        yield archive, alice, bob, FolderTarget("nas", tmp_path / "nas")
    finally:
        archive.close()


def _run(archive: Archive) -> str:
    [outcome] = archive.operator.backups.run()
    assert outcome.ok, outcome.error
    assert outcome.result is not None
    return outcome.result.snapshot_id


def _retrieve_all(archive: Archive, uids: list[str]) -> dict[str, bytes]:
    return {uid: archive.operator.retrieve.instance(uid).data for uid in uids}


def test_backup_restores_into_a_new_home_that_verifies_and_serves(backed, tmp_path: Path) -> None:
    archive, alice, bob, target = backed
    originals = _retrieve_all(archive, alice + bob)
    _run(archive)
    result = restore_home(target, tmp_path / "restored", Unlock(passphrase=PASSPHRASE))
    assert result.objects == len(originals) and result.tombstoned_patients == 0
    with Archive.open(tmp_path / "restored", PASSPHRASE) as restored:
        report = restored.operator.verify.run()
        assert report.ok, report.problems
        assert report.objects_checked == len(originals)
        assert _retrieve_all(restored, alice + bob) == originals
        # the restore is recorded in the restored home's ledger
        with read_session(restored.ctx.engine) as s:
            leaves = [json.loads(d)["event"] for d in s.scalars(select(LedgerLeaf.data).where(LedgerLeaf.kind == "event")
                                                                .order_by(LedgerLeaf.idx))]
        assert leaves.count("archive-restored") == 1


def test_second_run_copies_only_new_blobs(backed) -> None:
    archive, _, _, target = backed
    [first] = archive.operator.backups.run()
    [second] = archive.operator.backups.run()
    assert first.result and second.result
    assert first.result.new_objects == first.result.objects == 6
    assert second.result.new_objects == 0 and second.result.new_bytes == 0
    archive.operator.store.ingest(ct_series(ALICE, n=1, seed=77)[0])
    [third] = archive.operator.backups.run()
    assert third.result and third.result.new_objects == 1 and third.result.objects == 7
    assert len(list_snapshots(target)) == 3


def test_the_target_holds_no_key_and_no_plaintext(backed, tmp_path: Path) -> None:
    archive, _, _, _ = backed
    _run(archive)
    needles = phi_needles()
    for path in (tmp_path / "nas").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"SQLite format 3" not in data, f"{path} holds a plain index"
            for needle in needles:
                assert needle not in data, f"{needle!r} in {path}"
    vault = json.loads((tmp_path / "nas" / "vault" / "vault.json").read_bytes())
    assert set(vault) >= {"sealed_kek", "recovery_sealed_kek", "payload"} and "patients" not in vault


def test_a_snapshot_holds_no_wrapped_key(backed, tmp_path: Path) -> None:
    """Restoring the payload without the vault would give an index without keys: the snapshot alone opens nothing."""
    archive, _, _, target = backed
    sid = _run(archive)
    from dicomguard.app.backup.restore import _restore_files  # noqa: PLC2701 - checks the payload itself
    from dicomguard.app.backup.vault import VaultContents, open_vault

    vault = open_vault(list(target.vault_candidates()), passphrase=PASSPHRASE)
    empty = VaultContents(vault.archive_id, vault.kek, vault.sealed_kek, vault.written_at, vault.archive_keys, {})
    home = tmp_path / "keyless"
    home.mkdir()
    body = json.loads(target.read(f"snapshots/{sid}/manifest.json"))["body"]
    tombstoned, _ = _restore_files(target, home, sid, body, empty, Unlock(passphrase=PASSPHRASE), "")
    assert tombstoned == 2  # without the vault's patient keys every patient is a tombstone


def test_erasure_reaches_every_earlier_snapshot(backed, tmp_path: Path) -> None:
    archive, alice, bob, target = backed
    old = _run(archive)
    bob_data = _retrieve_all(archive, bob)
    archive.operator.erase.patient(ALICE.patient_id, "GDPR art. 17 request 2026-118")
    with read_session(archive.ctx.engine) as s:
        pushes = list(s.scalars(select(BackupRun).where(BackupRun.kind == "vault")))
    assert pushes and pushes[-1].ok  # the erasure pushed the vault to the target at once
    result = restore_home(target, tmp_path / "restored", Unlock(passphrase=PASSPHRASE), snapshot_id=old)
    assert result.tombstoned_patients == 1
    with Archive.open(tmp_path / "restored", PASSPHRASE) as restored:
        for uid in alice:
            with pytest.raises((ErasedError, NotFoundError)):
                restored.operator.retrieve.instance(uid)
        assert _retrieve_all(restored, bob) == bob_data
        assert restored.operator.verify.run().ok
    # the copied blobs of Alice are on the target, but nothing left anywhere opens them
    vault = (tmp_path / "nas" / "vault" / "vault.json").read_bytes()
    with read_session(archive.ctx.engine) as s:
        alice_ref = s.scalar(select(Instance.patient_ref).where(Instance.sop_instance_uid == alice[0]))
    assert alice_ref is not None and alice_ref.encode() not in vault


def test_a_snapshot_taken_before_key_rotation_restores(backed, tmp_path: Path) -> None:
    archive, alice, bob, target = backed
    data = _retrieve_all(archive, alice + bob)
    old = _run(archive)
    new_passphrase = "a brand new passphrase after rotation"
    archive.operator.keys.rotate(PASSPHRASE, new_passphrase)
    _run(archive)  # the vault now carries the new KEK's wrapping
    with pytest.raises(Exception, match="(?i)vault"):
        restore_home(target, tmp_path / "with-old", Unlock(passphrase=PASSPHRASE), snapshot_id=old)
    restore_home(target, tmp_path / "restored", Unlock(passphrase=new_passphrase), snapshot_id=old)
    with Archive.open(tmp_path / "restored", new_passphrase) as restored:
        assert _retrieve_all(restored, alice + bob) == data
        assert restored.operator.verify.run().ok


def test_recovery_key_restores_without_the_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    made = init_home(home, PASSPHRASE, "admin")
    add_folder_target(home, tmp_path / "nas")
    with Archive.open(home, PASSPHRASE) as archive:
        uid = archive.operator.store.ingest(ct_series(BOB, n=1)[0]).sop_instance_uid
        data = archive.operator.retrieve.instance(uid).data
        _run(archive)
    shutil.rmtree(home)
    target = FolderTarget("nas", tmp_path / "nas")
    with pytest.raises(ValueError, match="checksum"):
        parse_key(made.recovery_key[:10] + ("A" if made.recovery_key[10] != "A" else "B") + made.recovery_key[11:])
    new = "the passphrase of the new custodian"
    restore_home(target, tmp_path / "restored", Unlock(recovery_key=parse_key(made.recovery_key), new_passphrase=new))
    with Archive.open(tmp_path / "restored", new) as restored:
        assert restored.operator.retrieve.instance(uid).data == data
    with pytest.raises(Exception, match="(?i)passphrase|unseal"):
        Archive.open(tmp_path / "restored", PASSPHRASE)


def test_restore_never_overwrites_a_home(backed, home: Path) -> None:
    archive, _, _, target = backed
    _run(archive)
    before = sorted(p.name for p in home.iterdir())
    with pytest.raises(HomeExistsError):
        restore_home(target, home, Unlock(passphrase=PASSPHRASE))
    assert sorted(p.name for p in home.iterdir()) == before


def test_drill_passes_and_records_rpo_and_rto(backed) -> None:
    archive, _, _, _ = backed
    sid = _run(archive)
    [report] = archive.operator.backups.drill()
    assert report.ok, report.problems
    assert report.snapshot_id == sid and report.objects == 6 and report.rto_s > 0 and report.rpo_s >= 0
    status = archive.operator.backups.status()
    [t] = status.targets
    assert t.last_drill is not None and t.last_drill_problems == 0 and t.ok
    rules = {r.rule: r.ok for r in status.rules}
    assert rules == {"3 copies": False, "2 media": False, "1 off-site": False, "1 offline or immutable": False, "0 errors": True}


# -- tampering: each is detected by a drill and named --------------------------------------------


def _writable(path: Path) -> Path:
    os.chmod(path, 0o644)
    return path


def _blob_of(archive: Archive, uid: str) -> str:
    with read_session(archive.ctx.engine) as s:
        return s.scalar(select(Instance.blob_id).where(Instance.sop_instance_uid == uid))  # type: ignore[return-value]


def test_a_flipped_byte_in_a_blob_is_named(backed, tmp_path: Path) -> None:
    archive, alice, _, _ = backed
    _run(archive)
    path = _writable(tmp_path / "nas" / "blobs" / _blob_of(archive, alice[1]))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    [report] = archive.operator.backups.drill()
    assert [(p.kind.value, p.subject) for p in report.problems] == [("blob-altered", alice[1])]


def test_a_swapped_blob_is_named(backed, tmp_path: Path) -> None:
    archive, alice, bob, _ = backed
    _run(archive)
    victim = _writable(tmp_path / "nas" / "blobs" / _blob_of(archive, alice[0]))
    victim.write_bytes((tmp_path / "nas" / "blobs" / _blob_of(archive, bob[0])).read_bytes())
    [report] = archive.operator.backups.drill()
    assert [(p.kind.value, p.subject) for p in report.problems] == [("blob-swapped", alice[0])]


def test_an_edited_manifest_is_named(backed, tmp_path: Path) -> None:
    archive, _, _, _ = backed
    sid = _run(archive)
    path = _writable(tmp_path / "nas" / "snapshots" / sid / "manifest.json")
    doc = json.loads(path.read_bytes())
    doc["body"]["objects"] = 5
    path.write_text(json.dumps(doc))
    [report] = archive.operator.backups.drill()
    assert [p.kind.value for p in report.problems] == ["manifest-invalid"]
    assert "signature" in report.problems[0].detail


def test_an_older_manifest_replayed_as_newer_is_named(backed, tmp_path: Path) -> None:
    archive, _, _, _ = backed
    older = _run(archive)
    archive.operator.store.ingest(ct_series(ALICE, n=1, seed=55)[0])
    newer = _run(archive)
    snaps = tmp_path / "nas" / "snapshots"
    _writable(snaps / newer / "manifest.json").write_bytes((snaps / older / "manifest.json").read_bytes())
    _writable(snaps / newer / "payload").write_bytes((snaps / older / "payload").read_bytes())
    [report] = archive.operator.backups.drill()
    assert [p.kind.value for p in report.problems] == ["manifest-invalid"]
    assert "replayed" in report.problems[0].detail


def test_a_deleted_newest_snapshot_is_named(backed, tmp_path: Path) -> None:
    archive, _, _, _ = backed
    _run(archive)
    newest = _run(archive)
    shutil.rmtree(tmp_path / "nas" / "snapshots" / newest)
    [report] = archive.operator.backups.drill()
    assert [(p.kind.value, p.subject) for p in report.problems] == [("snapshot-missing", newest)]


def test_a_manifest_of_another_archive_is_refused(backed, tmp_path: Path) -> None:
    """A valid-looking snapshot planted by someone else (another archive's key) never restores as ours."""
    archive, _, _, _ = backed
    _run(archive)
    other_home = tmp_path / "other"
    init_home(other_home, PASSPHRASE, "admin")
    add_folder_target(other_home, tmp_path / "other-nas")
    with Archive.open(other_home, PASSPHRASE) as other:
        other.operator.store.ingest(ct_series(BOB, n=1, seed=3)[0])
        planted = _run(other)
    shutil.copytree(tmp_path / "other-nas" / "snapshots" / planted, tmp_path / "nas" / "snapshots" / planted)
    [report] = archive.operator.backups.drill(snapshot=planted)
    assert report.problems and report.problems[0].kind.value == "manifest-invalid"


def test_an_altered_payload_is_named(backed, tmp_path: Path) -> None:
    archive, _, _, _ = backed
    sid = _run(archive)
    path = _writable(tmp_path / "nas" / "snapshots" / sid / "payload")
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    [report] = archive.operator.backups.drill()
    assert [p.kind.value for p in report.problems] == ["restore-failed"]
    assert "payload" in report.problems[0].detail
    with pytest.raises(RestoreError, match="payload"):
        restore_home(FolderTarget("nas", tmp_path / "nas"), tmp_path / "restored", Unlock(passphrase=PASSPHRASE))
    assert not (tmp_path / "restored").exists()


# -- insiders -----------------------------------------------------------------------------------


def _user(name: str, *roles: str) -> Principal:
    return Principal(PrincipalKind.USER, name, frozenset(roles), attributes={"department": "radiology"})


def test_only_permitted_principals_back_up_drill_or_read(backed) -> None:
    archive, _, _, _ = backed
    radiologist = archive.services(_user("dr.rita", "radiologist"))
    for call in (radiologist.backups.run, radiologist.backups.drill, radiologist.backups.status, radiologist.backups.snapshots):
        with pytest.raises(AccessDenied):
            call()
    officer = archive.services(_user("sec.sam", "security_officer"))
    assert officer.backups.status().targets  # the officer reads the posture ...
    with pytest.raises(AccessDenied):
        officer.backups.run()  # ... but does not write copies of the archive
    with read_session(archive.ctx.engine) as s:
        assert s.scalar(select(BackupRun)) is None


def test_an_unknown_target_is_a_clear_error(backed) -> None:
    archive, _, _, _ = backed
    from dicomguard.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="no backup target named 'tape'"):
        archive.operator.backups.run("tape")


def test_a_new_recovery_key_opens_backups_written_after_it(backed, tmp_path: Path) -> None:
    archive, _, bob, target = backed
    with pytest.raises(ValueError, match="--replace"):
        archive.operator.keys.new_recovery_key(PASSPHRASE)
    with pytest.raises(Exception, match="(?i)unseal|passphrase"):
        archive.operator.keys.new_recovery_key("not the archive passphrase", replace=True)
    printed = archive.operator.keys.new_recovery_key(PASSPHRASE, replace=True)
    _run(archive)
    new = "the passphrase of the new custodian"
    restore_home(target, tmp_path / "restored", Unlock(recovery_key=parse_key(printed), new_passphrase=new))
    with Archive.open(tmp_path / "restored", new) as restored:
        assert restored.operator.retrieve.instance(bob[0]).data


def test_no_wrapped_key_byte_is_left_in_the_index_copy(backed, tmp_path: Path) -> None:
    """Not even in free pages: the payload's index copy holds none of the live index's wrapped keys."""
    import tarfile

    from dicomguard.app.backup.snapshot import decrypt_to_file, payload_identity, snapshot_key
    from dicomguard.app.backup.vault import open_vault
    from dicomguard.core.keyring import PURPOSE_BACKUP
    from dicomguard.index.models import Patient, WrappedKey

    archive, _, _, target = backed
    sid = _run(archive)
    with read_session(archive.ctx.engine) as s:
        secrets_ = [w for w in s.scalars(select(Patient.wrapped_data_key)) if w] + list(s.scalars(select(WrappedKey.wrapped)))
    assert len(secrets_) >= 5
    vault = open_vault(list(target.vault_candidates()), passphrase=PASSPHRASE)
    import hashlib

    tar_path = tmp_path / "payload.tar"
    decrypt_to_file(target.stream(f"snapshots/{sid}/payload"), snapshot_key(vault.archive_key(PURPOSE_BACKUP), sid),
                    payload_identity(vault.archive_id, sid), tar_path, hashlib.sha256())
    with tarfile.open(tar_path) as tar:
        index = tar.extractfile("index.db").read()  # type: ignore[union-attr]
    assert index.startswith(b"SQLite format 3")
    for secret in secrets_:
        assert secret not in index and secret[:24] not in index


def test_restore_at_a_point_in_time_takes_the_newest_snapshot_before_it(backed, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from dicomguard.app.backup.snapshot import snapshot_time

    archive, alice, bob, target = backed
    first = _run(archive)
    later_uid = archive.operator.store.ingest(ct_series(BOB, n=1, seed=66)[0]).sop_instance_uid
    second = _run(archive)
    between = snapshot_time(first) + (snapshot_time(second) - snapshot_time(first)) / 2  # type: ignore[operator]
    result = restore_home(target, tmp_path / "at", Unlock(passphrase=PASSPHRASE), at=between)
    assert result.snapshot_id == first
    with Archive.open(tmp_path / "at", PASSPHRASE) as restored:
        assert restored.operator.retrieve.instance(bob[0]).data
        with pytest.raises(NotFoundError):
            restored.operator.retrieve.instance(later_uid)
    with pytest.raises(RestoreError, match="no snapshot"):
        restore_home(target, tmp_path / "before", Unlock(passphrase=PASSPHRASE), at=datetime(2020, 1, 1, tzinfo=UTC))
