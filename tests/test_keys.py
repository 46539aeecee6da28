"""Key hierarchy: wrong passphrase opens nothing; rotation re-wraps and retires the old KEK."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from dicomguard.app.archive import Archive
from dicomguard.app.home import KEYS_DIR, sealed_kek_path
from dicomguard.core.keyring import PURPOSE_INDEX, PURPOSE_PATIENT
from dicomguard.crypto.kek import KdfParams, Kek
from dicomguard.errors import UnsealError
from dicomguard.index.db import read_session
from dicomguard.index.models import Instance, Patient, WrappedKey
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, BOB, ct_series


def test_wrong_passphrase_opens_nothing(home: Path) -> None:
    with pytest.raises(UnsealError):
        Archive.open(home, "not the passphrase at all")


def test_sealed_file_records_argon2id_parameters(home: Path) -> None:
    (sealed,) = (home / KEYS_DIR).glob("kek-*.sealed")
    doc = json.loads(sealed.read_bytes())
    assert doc["kdf"]["alg"] == "argon2id"
    assert doc["kdf"]["memory_kib"] == 8192  # the test fixture's setting, recorded with the key
    assert PASSPHRASE.encode() not in sealed.read_bytes()


def test_default_kdf_cost_follows_rfc9106() -> None:
    p = KdfParams()
    assert p.memory_kib >= 64 * 1024 and p.time_cost >= 3


def test_damaged_sealed_file_is_refused_opaquely() -> None:
    kek = Kek.generate()
    sealed = bytearray(kek.seal_with_passphrase("a long enough passphrase", KdfParams(1, 8192, 1)))
    sealed[sealed.index(b'"sealed": "') + 20] ^= 1
    with pytest.raises(UnsealError, match="wrong passphrase or damaged"):
        Kek.unseal(bytes(sealed), "a long enough passphrase")


def test_forged_kdf_cost_is_refused_before_hashing() -> None:
    kek = Kek.generate()
    doc = json.loads(kek.seal_with_passphrase("a long enough passphrase", KdfParams(1, 8192, 1)))
    doc["kdf"]["memory_kib"] = 64 * 1024 * 1024  # 64 GiB: would exhaust memory
    with pytest.raises(UnsealError):
        Kek.unseal(json.dumps(doc).encode(), "a long enough passphrase")


def test_rotation_rewraps_keys_retires_old_kek_and_data_still_reads(home: Path) -> None:
    uids = []
    with Archive.open(home, PASSPHRASE) as a:
        for data in ct_series(ALICE, n=2) + ct_series(BOB, n=1, seed=3):
            uids.append(a.operator.store.ingest(data).sop_instance_uid)
        old_id = a.ctx.keyring.kek_id
        old_sealed = sealed_kek_path(home, old_id).read_bytes()
        with read_session(a.ctx.engine) as s:
            blobs_before = {r.blob_id for r in s.scalars(select(Instance))}
        n = a.operator.keys.rotate(PASSPHRASE).rewrapped
        assert n == 5 + 2  # index, identity, ledger-signing, tls-ca, tls-server keys; two patients
        assert a.ctx.keyring.kek_id != old_id
    assert not sealed_kek_path(home, old_id).exists()
    with Archive.open(home, PASSPHRASE) as a:
        for uid in uids:
            assert a.operator.retrieve.instance(uid).data  # everything still reads, verified
        with read_session(a.ctx.engine) as s:
            assert {r.blob_id for r in s.scalars(select(Instance))} == blobs_before  # no blob re-encrypted
            wrapped = list(s.scalars(select(WrappedKey)))
            patients = list(s.scalars(select(Patient)))
    # An attacker holding the old sealed file and the passphrase unseals the old KEK...
    old_kek = Kek.unseal(old_sealed, PASSPHRASE)
    # ...but it opens none of the current keys.
    for row in wrapped:
        with pytest.raises(UnsealError):
            old_kek.unwrap(row.purpose, "archive", row.wrapped)
    for p in patients:
        with pytest.raises(UnsealError):
            old_kek.unwrap(PURPOSE_PATIENT, p.ref, p.wrapped_data_key)
    assert {row.purpose for row in wrapped} == {PURPOSE_INDEX, "identity", "ledger-signing", "tls-ca", "tls-server"}


def test_rotation_with_wrong_passphrase_changes_nothing(archive) -> None:
    archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    before = archive.ctx.keyring.kek_id
    with pytest.raises(UnsealError):
        archive.operator.keys.rotate("wrong passphrase entirely")
    assert archive.ctx.keyring.kek_id == before
    assert len(list((archive.home / KEYS_DIR).glob("kek-*.sealed"))) == 1


def test_wrapped_key_moved_to_another_patient_does_not_open(archive) -> None:
    """Wrapped data keys are bound to their owner: swapping them between rows fails."""
    archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    archive.operator.store.ingest(ct_series(BOB, n=1, seed=4)[0])
    with read_session(archive.ctx.engine) as s:
        a, b = list(s.scalars(select(Patient)))
    kek = Kek.unseal(sealed_kek_path(archive.home, archive.ctx.keyring.kek_id).read_bytes(), PASSPHRASE)
    with pytest.raises(UnsealError):
        kek.unwrap(PURPOSE_PATIENT, b.ref, a.wrapped_data_key)


def test_a_process_with_a_rotated_away_kek_stores_nothing_new_until_restarted(home: Path) -> None:
    """Two processes (``serve --workers``, two nodes, ``keys rotate`` beside ``serve``): after one rotates, the other
    would wrap new keys under a KEK whose sealed file is gone. It refuses instead (fail closed), and nothing is lost."""
    from dicomguard.core.keyring import StaleKek

    with Archive.open(home, PASSPHRASE) as rotator, Archive.open(home, PASSPHRASE) as stale:
        known = stale.operator.store.ingest(ct_series(ALICE, n=1)[0]).sop_instance_uid
        rotator.operator.keys.rotate(PASSPHRASE)
        with pytest.raises(StaleKek, match="restart"):
            stale.operator.store.ingest(ct_series(BOB, n=1, seed=4)[0])  # a new patient: a new data key, refused
        with pytest.raises(StaleKek):
            stale.ctx.keyring.ensure_archive_key("test-purpose")  # a new archive key, refused too
        assert stale.operator.retrieve.instance(known).data  # reading what exists goes on
        with pytest.raises(StaleKek):  # and it cannot rotate back over the other's rotation
            stale.operator.keys.rotate(PASSPHRASE)
    with Archive.open(home, PASSPHRASE) as restarted:
        bob = restarted.operator.store.ingest(ct_series(BOB, n=1, seed=4)[0]).sop_instance_uid
        assert restarted.operator.retrieve.instance(bob).data and restarted.operator.retrieve.instance(known).data
        report = restarted.operator.verify.run()
        assert report.ok, report.problems
