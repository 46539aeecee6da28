"""Several archive nodes on one PostgreSQL index and one S3 bucket: the session's SeaweedFS server is shared with tests/storage."""

from tests.storage.conftest import seaweedfs  # noqa: F401  (the session's S3 server)
