"""End to end: an archive home whose blobs live in an S3 bucket (SeaweedFS), made by ``init`` from the environment.

It ingests, retrieves byte-identical objects, verifies clean, detects a blob deleted
behind its back, and the bucket holds ciphertext only: no identifier of the fake
patients in any object, whatever its encoding.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from dicomguard.app.archive import Archive
from dicomguard.app.home import init_home
from dicomguard.core.ingest import IngestStatus
from dicomguard.errors import ConfigurationError
from dicomguard.storage.s3 import S3BlobStore
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, BOB, CAROL, ct_series, phi_needles, us_multiframe
from tests.storage.conftest import BUCKET
from tests.storage.seaweedfs import SeaweedFS

pytestmark = pytest.mark.slow  # init, a real S3 server, a full verify




def _s3_environment(monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS, tmp_path: Path, prefix: str) -> Path:
    credentials = seaweedfs.credentials_file(tmp_path / "s3-credentials")
    for name, value in {"KIND": "s3", "S3__ENDPOINT": seaweedfs.https_endpoint, "S3__BUCKET": BUCKET,
                        "S3__CREDENTIALS_FILE": str(credentials), "S3__CA_FILE": str(seaweedfs.ca_file),
                        "S3__PREFIX": prefix}.items():
        monkeypatch.setenv(f"DICOMGUARD_STORAGE__{name}", value)
    return credentials


def _clear_s3_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KIND", "S3__ENDPOINT", "S3__BUCKET", "S3__CREDENTIALS_FILE", "S3__CA_FILE", "S3__PREFIX"):
        monkeypatch.delenv(f"DICOMGUARD_STORAGE__{name}", raising=False)


def test_archive_on_s3_ingests_retrieves_verifies_and_stores_ciphertext_only(
    seaweedfs: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"archive-{secrets.token_hex(4)}/"
    _s3_environment(monkeypatch, seaweedfs, tmp_path, prefix)
    home = tmp_path / "home"
    init_home(home, PASSPHRASE, "admin")
    _clear_s3_environment(monkeypatch)  # from now on only config.toml says where the blobs are

    config = (home / "config.toml").read_text()
    assert 'kind = "s3"' in config and f'prefix = "{prefix}"' in config
    assert seaweedfs.secret_key not in config and seaweedfs.access_key not in config  # no secret in the file
    assert not (home / "blobs").exists()

    objects = ct_series(ALICE, n=3) + ct_series(BOB, n=2, seed=5) + [us_multiframe(CAROL, frames=4)]
    with Archive.open(home, PASSPHRASE) as archive:
        assert isinstance(archive.ctx.store, S3BlobStore)
        outcomes = list(archive.operator.store.ingest_many([(str(i), (lambda d=d: d)) for i, d in enumerate(objects)]))
        assert [o.error for o in outcomes if o.error] == []
        assert all(o.result.status is IngestStatus.STORED for o in outcomes)
        for data, outcome in zip(objects, outcomes, strict=True):
            back = archive.operator.retrieve.instance(outcome.result.sop_instance_uid).data
            assert back[128:] == data[128:]
        report = archive.operator.verify.run()
        assert report.ok, report.problems
        assert report.objects_checked == len(objects)
        blob_ids = set(archive.ctx.store.iter_ids())
        assert len(blob_ids) == len(objects)

    raw = seaweedfs.client()
    keys = [o["Key"] for o in raw.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    assert {k.rsplit("/", 1)[-1] for k in keys} == blob_ids
    needles = phi_needles()
    for key in keys:
        body = raw.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert not [n for n in needles if n in body], f"plaintext identifier in {key}"
        assert b"DICM" not in body[:200]  # not a Part 10 file in clear either

    # A blob removed behind the archive's back is found by verify.
    raw.delete_object(Bucket=BUCKET, Key=keys[0])
    with Archive.open(home, PASSPHRASE) as archive:
        report = archive.operator.verify.run()
        assert not report.ok
        assert [(p.kind.value, keys[0].rsplit("/", 1)[-1] in p.detail) for p in report.problems] == [("blob-missing", True)]


def test_init_refuses_a_bucket_prefix_that_holds_another_archive(
    seaweedfs: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"shared-{secrets.token_hex(4)}/"
    _s3_environment(monkeypatch, seaweedfs, tmp_path, prefix)
    first = tmp_path / "first"
    init_home(first, PASSPHRASE, "admin")
    with Archive.open(first, PASSPHRASE) as archive:
        archive.operator.store.ingest(ct_series(ALICE, n=1)[0])
    second = tmp_path / "second"
    with pytest.raises(ConfigurationError, match="already holds blobs"):
        init_home(second, PASSPHRASE, "admin")
    assert not second.exists()  # nothing left of the refused init
