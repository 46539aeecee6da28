"""The ransomware drill, end to end, on a real S3 server with Object Lock (SeaweedFS 4.48) and a folder.

The attacker has root on the archive host and the archive's own S3 keys (an identity
that administers the bucket): the home is deleted, the folder target overwritten with
random bytes, and every locked object is attacked. The restore from the immutable copy
must hold every instance acknowledged before the last backup, pass ``verify`` and
serve them over DICOMweb.
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from dicomguard.app.archive import Archive
from dicomguard.app.backup.restore import Unlock, restore_home
from dicomguard.app.backup.targets import open_target, target_settings
from dicomguard.app.home import init_home
from dicomguard.config import load_settings
from dicomguard.errors import ErasedError, NotFoundError
from tests.backup.conftest import add_folder_target, add_s3_target, load
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, DEPARTMENT, dataset_of
from tests.web.conftest import start_server

pytestmark = pytest.mark.slow


@pytest.fixture
def locked_home(tmp_path: Path, seaweedfs):  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    init_home(home, PASSPHRASE, "admin")
    bucket = seaweedfs.create_bucket(f"dg-backup-{secrets.token_hex(4)}", object_lock=True)
    add_folder_target(home, tmp_path / "nas")
    add_s3_target(home, seaweedfs, bucket, offsite=True)
    return home, bucket


def _attack_bucket(client, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """Every destructive request the archive's own credentials can make; deletions of locked data must all be refused."""
    versions = client.list_object_versions(Bucket=bucket)["Versions"]
    assert versions
    until = datetime.now(UTC) + timedelta(hours=1)
    for v in versions:
        key, vid = v["Key"], v["VersionId"]
        for attempt in (
            lambda: client.delete_object(Bucket=bucket, Key=key, VersionId=vid),
            lambda: client.delete_object(Bucket=bucket, Key=key, VersionId=vid, BypassGovernanceRetention=True),
            lambda: client.put_object_retention(Bucket=bucket, Key=key, VersionId=vid,
                                                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until}),
            lambda: client.put_object_retention(Bucket=bucket, Key=key, VersionId=vid,
                                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until}),
        ):
            with pytest.raises(ClientError) as refused:
                attempt()
            assert refused.value.response["Error"]["Code"] in ("AccessDenied", "InvalidRequest"), refused.value.response
    # What S3 does allow on a versioned bucket is harmless: a new version over a key, a delete marker.
    first = versions[0]["Key"]
    client.put_object(Bucket=bucket, Key=first, Body=os.urandom(4096))
    for v in versions[1:4]:
        client.delete_object(Bucket=bucket, Key=v["Key"])
    with pytest.raises(ClientError):
        client.delete_bucket(Bucket=bucket)


def test_ransomware_drill_restores_everything_from_the_immutable_copy(locked_home, seaweedfs, tmp_path: Path) -> None:
    home, bucket = locked_home
    with Archive.open(home, PASSPHRASE) as archive:
        alice, bob = load(archive)
        outcomes = archive.operator.backups.run()
        assert [o.ok for o in outcomes] == [True, True], [o.error for o in outcomes]
        reports = archive.operator.backups.drill()
        assert all(r.ok for r in reports), [r.problems for r in reports]
        originals = {uid: archive.operator.retrieve.instance(uid).data for uid in alice + bob}
        status = archive.operator.backups.status()
        assert {r.rule: r.ok for r in status.rules} == {"3 copies": True, "2 media": True, "1 off-site": True,
                                                       "1 offline or immutable": True, "0 errors": True}
    # the operator keeps the configuration and the target credentials apart from the host (docs/operations.md)
    kept = tmp_path / "kept"
    kept.mkdir()
    shutil.copy(home / "config.toml", kept / "config.toml")
    shutil.copy(home / "locked-s3.credentials", kept / "locked-s3.credentials")
    (kept / "config.toml").write_text((kept / "config.toml").read_text().replace(str(home / "locked-s3.credentials"),
                                                                               str(kept / "locked-s3.credentials")))
    os.chmod(kept / "locked-s3.credentials", 0o600)

    # -- the attack ------------------------------------------------------------------------
    shutil.rmtree(home)
    for path in (tmp_path / "nas").rglob("*"):
        if path.is_file():
            os.chmod(path, 0o600)
            path.write_bytes(os.urandom(max(16, path.stat().st_size)))
    _attack_bucket(seaweedfs.client(), bucket)

    # -- the restore from the immutable copy ------------------------------------------------
    settings = load_settings(kept)
    folder = open_target(target_settings(settings, "nas")[0], kept)
    with pytest.raises(Exception):  # noqa: B017 - the overwritten folder no longer opens, whatever the first failure
        restore_home(folder, tmp_path / "from-folder", Unlock(passphrase=PASSPHRASE))
    locked = open_target(target_settings(settings, "locked")[0], kept)
    result = restore_home(locked, tmp_path / "restored", Unlock(passphrase=PASSPHRASE))
    assert result.objects == len(originals)
    with Archive.open(tmp_path / "restored", PASSPHRASE) as restored:
        report = restored.operator.verify.run()
        assert report.ok, report.problems
        assert {uid: restored.operator.retrieve.instance(uid).data for uid in originals} == originals
        web, stop = start_server(restored)
        try:
            client = web.dicomweb_client(web.token("dr.after", "radiologist", department=DEPARTMENT))
            ds = dataset_of(originals[bob[-1]])
            got = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            assert got.SOPInstanceUID == ds.SOPInstanceUID and got.PixelData == ds.PixelData
        finally:
            stop()


def test_erasure_reaches_a_locked_bucket_through_its_vault(locked_home, tmp_path: Path) -> None:
    home, _ = locked_home
    with Archive.open(home, PASSPHRASE) as archive:
        alice, bob = load(archive)
        assert all(o.ok for o in archive.operator.backups.run())
        archive.operator.erase.patient(ALICE.patient_id, "GDPR art. 17 request 2026-311")
        locked = open_target(target_settings(archive.settings, "locked")[0], home)
    result = restore_home(locked, tmp_path / "restored", Unlock(passphrase=PASSPHRASE))
    assert result.tombstoned_patients == 1
    with Archive.open(tmp_path / "restored", PASSPHRASE) as restored:
        for uid in alice:
            with pytest.raises((ErasedError, NotFoundError)):
                restored.operator.retrieve.instance(uid)
        assert all(restored.operator.retrieve.instance(uid).data for uid in bob)


def test_an_immutable_target_without_object_lock_is_refused(tmp_path: Path, seaweedfs) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    init_home(home, PASSPHRASE, "admin")
    plain = seaweedfs.create_bucket(f"dg-plain-{secrets.token_hex(4)}")
    add_s3_target(home, seaweedfs, plain)
    with Archive.open(home, PASSPHRASE) as archive:
        [outcome] = archive.operator.backups.run()
    assert not outcome.ok and "Object Lock" in (outcome.error or "")
