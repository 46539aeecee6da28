"""The blob store the settings name (``[storage] kind``), and the S3 connection of a ``[... .s3]`` section.

Both stores hold ciphertext only and keep the same contract
(``tests/storage/test_blob_store_contract.py``); ADR 0006.
"""

from __future__ import annotations

from pathlib import Path

from dicomguard.config import S3Settings, Settings, home_relative, storage_path
from dicomguard.storage.base import BlobStore
from dicomguard.storage.filesystem import FilesystemBlobStore
from dicomguard.storage.s3 import S3BlobStore, S3Bucket, S3Credentials, S3Location


def s3_bucket(s3: S3Settings, home: Path) -> S3Bucket:
    """Connect to the bucket of an S3 settings section (credentials read now, mode 600 required)."""
    location = S3Location(
        bucket=s3.bucket, endpoint=s3.endpoint, region=s3.region, prefix=s3.prefix,
        ca_file=home_relative(home, s3.ca_file) if s3.ca_file else None, addressing_style=s3.addressing_style,
    )
    return S3Bucket(location, S3Credentials.from_file(home_relative(home, s3.credentials_file)))


def open_blob_store(settings: Settings, home: Path) -> FilesystemBlobStore | S3BlobStore:
    """The archive's blob store. An S3 store is checked first: reachable, and refusing to overwrite."""
    if settings.storage.kind == "s3":
        store = S3BlobStore(s3_bucket(settings.storage.s3, home))
        store.check()
        return store
    return FilesystemBlobStore(storage_path(settings, home))


def create_blob_store(settings: Settings, home: Path) -> BlobStore:
    """``init``: lay the store out (filesystem: 256 folders; S3: check, and refuse a prefix already in use)."""
    if settings.storage.kind == "s3":
        s3 = S3BlobStore(s3_bucket(settings.storage.s3, home))
        s3.create_layout()
        return s3
    fs = FilesystemBlobStore(storage_path(settings, home))
    fs.create_layout()
    return fs
