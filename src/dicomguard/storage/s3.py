"""S3-compatible object storage: one bucket connection (blob store now, backup targets next) and the blob store.

:class:`S3Bucket` is a bucket, and a key prefix in it, reached with botocore (the
engine of boto3; ADR 0006): TLS verified (the system's CAs, or ``ca_file``),
credentials read from a file only the service account may read, retries with
exponential back-off and jitter (botocore's ``standard`` mode: throttling, 5xx,
dropped connections), and every failure raised as :class:`S3Error`. Nothing in
it is specific to blobs: the backup targets use the same class.

:class:`S3BlobStore` implements :class:`~dicomguard.storage.base.BlobStore` on a
bucket with the filesystem store's guarantees:

* **Write-once, without a race window.** Every write is conditional:
  ``If-None-Match: *`` (RFC 9110 section 13.1.2) on ``PutObject`` and on
  ``CompleteMultipartUpload``. The server decides atomically when the object
  would become visible: of concurrent writers of one key exactly one succeeds,
  the others get 412 and nothing is replaced (AWS S3 since 2024; SeaweedFS
  enforces it, 4.48 tested, including 16 concurrent writers per key). A server
  that ignored the header would silently overwrite: :meth:`S3Bucket.check_conditional_writes`
  probes it, and the archive refuses to start on such a server (``init`` and every open).
* **Idempotent retries.** A conditional write whose response was lost is retried
  by botocore and then answered 412 by its own success. Every write carries a
  random writer token as user metadata; on 412 (or a vanished upload id after
  ``CompleteMultipartUpload``) the object's token is read back: ours means the
  write succeeded, another means the id was taken.
* **Atomic visibility.** An object is visible only once its single PUT or its
  ``CompleteMultipartUpload`` has succeeded: a failed, aborted or killed upload
  leaves nothing under the key. A multipart upload is aborted on any error
  (including an exception from the caller's chunk iterator); one whose writer
  was killed (``kill -9``) stays invisible and is aborted by
  :meth:`S3BlobStore.remove_stale_temporaries` once older than a day (and by a
  lifecycle rule ``AbortIncompleteMultipartUpload``, recommended in docs/operations.md).
* **Streaming both ways, bounded memory.** Up to ``part_size`` (16 MiB) bytes are
  gathered from the chunk iterator: a blob that fits is one ``PutObject``, a
  larger one a multipart upload of ``part_size`` parts sent one after the other,
  so at most about one part is held whatever the object's size (a 2 GiB cine:
  16 MiB). Reads yield ``chunk_size`` pieces of the response body; a connection
  that drops mid-body is resumed with a ``Range`` request pinned to the object's
  ETag (``If-Match``), after a back-off.
* **Durability.** A write is durable when it returns, as the server defines it
  (AWS: several availability zones; SeaweedFS: its replication setting): ``sync``
  has nothing left to do.

The two requests every object costs, the whole-object GET and the single create-only PUT, go
through obstore (``storage/s3_obstore.py``, ADR 0015: about a fifth of botocore's CPU per request,
with the interpreter lock released), with the same guarantees; everything else goes through botocore.

Keys are ``<prefix><first two hex digits>/<blob id>``, like the filesystem
layout (spreads request load over key prefixes on AWS). Objects hold ciphertext
only: the blob format is encrypted and authenticated before it reaches this
module (``crypto/blob_cipher.py``).
"""

from __future__ import annotations

import base64
import configparser
import functools
import logging
import random
import secrets
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dicomguard.errors import ConfigurationError
from dicomguard.storage.base import BLOB_ID, BlobExistsError, BlobMissingError, BlobStoreError
from dicomguard.storage.filesystem import read_private_file
from dicomguard.storage.s3_obstore import ObstoreObjects

log = logging.getLogger(__name__)

MiB = 1024 * 1024
PART_SIZE = 16 * MiB
"""Multipart part size, and the largest object sent as one PUT. S3 requires 5 MiB-5 GiB parts, at most 10,000."""
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
READ_CHUNK = 1 * MiB
READS_IN_FLIGHT = 8
"""GETs a bulk reader keeps going at once: a small object's GET mostly waits on the network (the per-object client
releases the interpreter lock meanwhile); 8 against 2 took a 5-client retrieval of 2,000 small objects from 2.3 to
1.7 s on 2 cores, 16 gained nothing more (``bench/orthanc_scenario.py``)."""
STALE_UPLOAD_AGE = timedelta(days=1)
"""An incomplete multipart upload this old belongs to a killed writer (a 2 GiB upload takes minutes)."""
WRITER_META = "dicomguard-writer"
_PROBE = ".dicomguard-probe-"
_CONDITIONAL_WRITES = ("put_object", "complete_multipart_upload")


class S3Error(BlobStoreError):
    """The object store refused or failed a request (after retries)."""


class S3NotFound(S3Error, BlobMissingError):
    """No object under that key."""


class S3Exists(S3Error, BlobExistsError):
    """A conditional (create-only) write found an object under that key: nothing was replaced."""


@dataclass(frozen=True)
class S3Credentials:
    """An access key. Read from a file, never from the configuration file (which holds no secret)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_file(cls, path: Path, profile: str = "default") -> S3Credentials:
        """Read an AWS-style credentials file (``[default]``, ``aws_access_key_id``, ``aws_secret_access_key``).

        Refused, like the passphrase file, when group or others have any access to it (``chmod 600``).
        """
        text = read_private_file(path, f"the S3 credentials file {path}")
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(text, source=str(path))
        except configparser.Error:
            raise ConfigurationError(f"{path} is not a credentials file ([{profile}] with aws_access_key_id and "
                                     "aws_secret_access_key)") from None  # the parser's message may quote the secret
        section = parser[profile] if parser.has_section(profile) else {}
        key, secret = section.get("aws_access_key_id", "").strip(), section.get("aws_secret_access_key", "").strip()
        if not key or not secret:
            raise ConfigurationError(f"{path} has no [{profile}] aws_access_key_id and aws_secret_access_key")
        return cls(key, secret, section.get("aws_session_token", "").strip() or None)


@dataclass(frozen=True)
class ObjectVersion:
    """One version of an object in a versioned bucket."""

    name: str
    version_id: str
    modified: datetime
    size: int
    latest: bool


@dataclass(frozen=True)
class S3Location:
    """Where: a bucket (and a key prefix in it) at an endpoint. Checked by the settings (``config.S3Settings``)."""

    bucket: str
    endpoint: str = ""
    """``https://host[:port]``; empty: AWS S3 in ``region``."""
    region: str = "us-east-1"
    prefix: str = ""
    """Key prefix of every object (``""`` or ending in ``/``): several archives, or backups, can share a bucket."""
    ca_file: Path | None = None
    """PEM bundle of the CAs that may issue the endpoint's certificate. None: the system's (certifi's) bundle."""
    addressing_style: str = "path"
    """``path`` (``https://host/bucket/key``: IP endpoints, most on-premises servers) or ``virtual`` (``bucket.host``)."""


class S3Bucket:
    """A connected bucket and prefix: streaming conditional writes, resumable reads, listing. Thread-safe."""

    def __init__(self, location: S3Location, credentials: S3Credentials, *, max_attempts: int = 5,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0, max_pool_connections: int = 32) -> None:
        from botocore.config import (
            Config,  # imported here: a filesystem archive never pays for botocore
        )

        self.location = location
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.max_attempts = max_attempts
        self._objects_args = (location, credentials, max_attempts, connect_timeout, read_timeout)
        self._objects: ObstoreObjects | None = None
        self._objects_lock = threading.Lock()
        with _session_lock:
            self._client = _session().create_client(
                "s3",
                region_name=location.region,
                endpoint_url=location.endpoint or None,
                verify=str(location.ca_file) if location.ca_file else True,
                use_ssl=True,
                aws_access_key_id=credentials.access_key_id,
                aws_secret_access_key=credentials.secret_access_key,
                aws_session_token=credentials.session_token,
                config=Config(
                    s3={"addressing_style": location.addressing_style},
                    retries={"mode": "standard", "total_max_attempts": max_attempts},
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                    max_pool_connections=max_pool_connections,
                    tcp_keepalive=True,
                    user_agent_extra="dicomguard",
                    ignore_configured_endpoint_urls=True,
                ),
            )

    def key(self, name: str) -> str:
        return self.prefix + name

    def _per_object(self) -> ObstoreObjects:
        """The client of the per-object GET and PUT (ADR 0015), made on first use: a process that never reads or
        writes a blob (and a child started before that) has no obstore runtime."""
        with self._objects_lock:
            if self._objects is None:
                location, credentials, attempts, connect, read = self._objects_args
                self._objects = ObstoreObjects(location, credentials, max_attempts=attempts, connect_timeout=connect,
                                               read_timeout=read, backoff=_backoff)
            return self._objects

    # -- checks -----------------------------------------------------------------------

    def check(self) -> None:
        """The bucket exists and these credentials reach it (``HeadBucket``)."""
        try:
            self._call("head_bucket", "", Bucket=self.bucket)
        except S3NotFound:
            raise S3Error(f"no bucket {self.bucket!r}") from None

    def check_conditional_writes(self) -> bool:
        """True if the server refuses to overwrite under ``If-None-Match: *`` (write-once holds).

        Writes a probe object, writes it again conditionally (must be refused), deletes it.
        """
        from botocore.exceptions import ClientError

        name = f"{_PROBE}{secrets.token_hex(8)}"
        self.put(name, [b"probe"])
        try:
            try:
                self._client.put_object(Bucket=self.bucket, Key=self.key(name), Body=b"overwritten", IfNoneMatch="*")
            except ClientError as exc:
                if _status(exc) == 412:
                    return True
                raise _translate(exc, "put_object", name) from exc
            return False
        finally:
            self.delete(name)

    # -- objects ----------------------------------------------------------------------

    def head(self, name: str) -> dict[str, Any] | None:
        """The object's metadata (``ContentLength``, ``ETag``, ``Metadata``), or None when there is none."""
        try:
            return self._call("head_object", name, Bucket=self.bucket, Key=self.key(name))
        except S3NotFound:
            return None

    def put(self, name: str, chunks: Iterable[bytes], *, part_size: int = PART_SIZE, create_only: bool = True,
            metadata: dict[str, str] | None = None, lock_until: datetime | None = None) -> int:
        """Stream ``chunks`` into one object; returns its size. Visible only once complete.

        ``create_only``: refuse (:class:`S3Exists`) if the key exists (``If-None-Match: *``).
        ``lock_until``: S3 Object Lock retention in COMPLIANCE mode until then (the bucket must have Object Lock
        enabled): nobody, not even the bucket's administrator, can delete this version or shorten its retention.
        """
        if not MIN_PART_SIZE <= part_size <= 5 * 1024 * MiB:
            raise ValueError("part_size must be 5 MiB to 5 GiB")
        token = secrets.token_hex(16)
        meta = {**(metadata or {}), WRITER_META: token}
        lock = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": lock_until} if lock_until else {}
        parts = _parts(chunks, part_size)
        head = [next(parts)]  # the first part lives in this list only, so that it can go as soon as it is sent
        if head[0][1]:
            return self._put_single(name, head.pop()[0], meta, create_only, token, lock)
        return self._put_multipart(name, head, parts, meta, create_only, token, lock)

    def _put_single(self, name: str, body: bytearray, meta: dict[str, str], create_only: bool, token: str,
                    lock: dict[str, Any]) -> int:
        from botocore.exceptions import ClientError

        if create_only and not lock:  # every blob: the per-object client (ADR 0015)
            try:
                self._per_object().put_new(self.key(name), name, body, meta)
            except S3Exists:
                if self._written_by(name, token):
                    return len(body)  # a retry answered by our own first attempt
                raise
            return len(body)
        args: dict[str, Any] = {"IfNoneMatch": "*", **lock} if create_only else dict(lock)
        try:
            self._client.put_object(Bucket=self.bucket, Key=self.key(name), Body=body, Metadata=meta,
                                    ChecksumCRC32=_crc32(body), **args)
        except ClientError as exc:
            if _status(exc) == 412 and self._written_by(name, token):
                return len(body)  # a retry answered by our own first attempt
            raise _translate(exc, "put_object", name) from exc
        except Exception as exc:
            raise _as_s3_error(exc, "put_object", name) from exc
        return len(body)

    def _put_multipart(self, name: str, head: list[tuple[bytearray, bool]], rest: Iterator[tuple[bytearray, bool]], meta: dict[str, str],
                       create_only: bool, token: str, lock: dict[str, Any]) -> int:
        from botocore.exceptions import ClientError

        key = self.key(name)
        upload_id = self._call("create_multipart_upload", name, Bucket=self.bucket, Key=key, Metadata=meta,
                               ChecksumAlgorithm="CRC32", **lock)["UploadId"]
        try:
            done: list[dict[str, Any]] = []
            size = 0
            data: bytearray | None = head.pop()[0]
            while data is not None:
                number = len(done) + 1
                if number > MAX_PARTS:
                    raise S3Error(f"{name}: more than {MAX_PARTS} parts; raise the part size")
                crc = _crc32(data)
                r = self._call("upload_part", name, Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                               Body=data, ChecksumCRC32=crc)
                done.append({"ETag": r["ETag"], "PartNumber": number, "ChecksumCRC32": crc})
                size += len(data)
                data = None  # no reference to the sent part while the next one is gathered
                item = next(rest, None)
                if item is not None:
                    data = item[0]
                    item = None
            args: dict[str, Any] = {"IfNoneMatch": "*"} if create_only else {}
            try:
                self._client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                       MultipartUpload={"Parts": done}, **args)
            except ClientError as exc:
                if _status(exc) in (404, 412) and self._written_by(name, token):
                    return size  # our completion succeeded; its retry found the upload gone or the key taken by us
                raise _translate(exc, "complete_multipart_upload", name) from exc
            except Exception as exc:
                raise _as_s3_error(exc, "complete_multipart_upload", name) from exc
            return size
        except BaseException:
            self.abort_upload(name, upload_id)
            raise

    def _written_by(self, name: str, token: str) -> bool:
        head = self.head(name)
        return head is not None and head.get("Metadata", {}).get(WRITER_META) == token

    def abort_upload(self, name: str, upload_id: str) -> None:
        """Abort a multipart upload (its parts are freed); failures are logged, never raised."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=self.key(name), UploadId=upload_id)
        except (BotoCoreError, ClientError) as exc:  # best effort: the stale-upload sweep and the lifecycle rule catch the rest
            log.warning("could not abort the multipart upload of %s: %s", name, type(exc).__name__)

    def get(self, name: str, version_id: str | None = None) -> bytes:
        """The whole object (or one version of it). The current version goes through the per-object client (ADR 0015)."""
        if version_id is None:
            return self._per_object().get(self.key(name), name)
        return b"".join(self.stream(name, 8 * MiB, version_id=version_id))

    def stream(self, name: str, chunk_size: int = READ_CHUNK, version_id: str | None = None) -> Iterator[bytes]:
        """Yield the object (or one version of it) in pieces of at most ``chunk_size`` bytes; a dropped connection
        is resumed where it broke."""
        retryable = _broken_connection_errors()
        version = {"VersionId": version_id} if version_id else {}
        response = self._call("get_object", name, Bucket=self.bucket, Key=self.key(name), **version)
        etag, size = response.get("ETag"), response["ContentLength"]
        offset, failures = 0, 0
        body = response["Body"]
        try:
            while True:
                try:
                    for chunk in body.iter_chunks(chunk_size):
                        offset += len(chunk)
                        failures = 0
                        yield chunk
                    break
                except Exception as exc:
                    if not isinstance(exc, retryable):
                        raise _as_s3_error(exc, "get_object", name) from exc
                    failures += 1
                    if failures >= self.max_attempts:
                        raise S3Error(f"{name}: reading failed after {failures} attempts ({type(exc).__name__})") from exc
                    log.warning("reading %s broke at byte %d (%s); resuming", name, offset, type(exc).__name__)
                    body.close()
                    time.sleep(_backoff(failures))
                    if offset >= size:
                        break
                    args = {"IfMatch": etag} if etag else {}
                    body = self._call("get_object", name, Bucket=self.bucket, Key=self.key(name),
                                      Range=f"bytes={offset}-", **args, **version)["Body"]
        finally:
            body.close()
        if offset != size:
            raise S3Error(f"{name}: {offset} bytes read, {size} expected")

    def delete(self, name: str) -> None:
        """Delete an object; a missing one is no error (S3 semantics)."""
        self._call("delete_object", name, Bucket=self.bucket, Key=self.key(name))

    def names(self, under: str = "") -> Iterator[str]:
        """Every object name (key without the prefix) under ``under``."""
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(under)):
                for obj in page.get("Contents", ()):
                    yield obj["Key"][len(self.prefix):]
        except Exception as exc:
            raise _as_s3_error(exc, "list_objects_v2", under) from exc

    def versions(self, under: str = "") -> Iterator[ObjectVersion]:
        """Every version of every object under ``under`` (delete markers excluded), as the server lists them."""
        paginator = self._client.get_paginator("list_object_versions")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(under)):
                for v in page.get("Versions", ()):
                    yield ObjectVersion(v["Key"][len(self.prefix):], v["VersionId"], v["LastModified"], v["Size"], bool(v.get("IsLatest")))
        except Exception as exc:
            raise _as_s3_error(exc, "list_object_versions", under) from exc

    def delete_version(self, name: str, version_id: str) -> None:
        """Delete one version for good (refused by the server while it is under COMPLIANCE retention)."""
        self._call("delete_object", name, Bucket=self.bucket, Key=self.key(name), VersionId=version_id)

    def retention(self, name: str, version_id: str) -> tuple[str, datetime] | None:
        """The version's Object Lock retention (mode, retain-until), or None when it has none."""
        try:
            r = self._call("get_object_retention", name, Bucket=self.bucket, Key=self.key(name), VersionId=version_id)
        except S3Error as exc:
            if "NoSuchObjectLockConfiguration" in str(exc) or "ObjectLockConfigurationNotFound" in str(exc):
                return None
            raise
        ret = r.get("Retention") or {}
        return (ret["Mode"], ret["RetainUntilDate"]) if ret.get("Mode") else None

    def object_lock_enabled(self) -> bool:
        """True when the bucket has Object Lock enabled (which also turns versioning on for good)."""
        try:
            r = self._call("get_object_lock_configuration", "", Bucket=self.bucket)
        except S3Error:
            return False
        return (r.get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled") == "Enabled"

    def incomplete_uploads(self, under: str = "") -> Iterator[tuple[str, str, datetime]]:
        """Multipart uploads started and neither completed nor aborted: (name, upload id, initiated)."""
        paginator = self._client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(under)):
                for u in page.get("Uploads", ()):
                    yield u["Key"][len(self.prefix):], u["UploadId"], u["Initiated"]
        except Exception as exc:
            raise _as_s3_error(exc, "list_multipart_uploads", under) from exc

    def _call(self, operation: str, name: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self._client, operation)(**kwargs)
            return result
        except Exception as exc:
            raise _as_s3_error(exc, operation, name) from exc


class S3BlobStore:
    """Ciphertext blobs in a bucket, write-once (see the module docstring for how each guarantee holds)."""

    reads_in_flight = READS_IN_FLIGHT

    def __init__(self, bucket: S3Bucket, *, part_size: int = PART_SIZE, stale_upload_age: timedelta = STALE_UPLOAD_AGE) -> None:
        self.bucket = bucket
        self.part_size = part_size
        self.stale_upload_age = stale_upload_age

    @staticmethod
    def _name(blob_id: str) -> str:
        if not BLOB_ID.match(blob_id):
            raise BlobStoreError("invalid blob id")  # never let an id become another key
        return f"{blob_id[:2]}/{blob_id}"

    def check(self) -> None:
        """Refuse a bucket we cannot reach or a server that would overwrite a blob (write-once must hold)."""
        try:
            self.bucket.check()
            enforced = self.bucket.check_conditional_writes()
        except S3Error as exc:
            raise ConfigurationError(f"object storage {self.bucket.location.endpoint or 'AWS'} bucket "
                                     f"{self.bucket.bucket!r}: {exc}") from exc
        if not enforced:
            raise ConfigurationError("the object store ignores If-None-Match: it would overwrite blobs (write-once "
                                     "cannot hold); use a server that supports conditional writes")

    def create_layout(self) -> None:
        """``init``: check the bucket, and refuse a prefix that holds blobs already (another archive's)."""
        self.check()
        try:
            in_use = next(self.iter_ids(), None) is not None
        except S3Error as exc:
            raise ConfigurationError(f"cannot list bucket {self.bucket.bucket!r}: {exc}") from exc
        if in_use:
            raise ConfigurationError(f"bucket {self.bucket.bucket!r} prefix {self.bucket.prefix!r} already holds "
                                     "blobs; give this archive its own prefix")

    def put(self, blob_id: str, chunks: Iterable[bytes], durable: bool = True) -> int:
        name = self._name(blob_id)
        try:
            return self.bucket.put(name, chunks, part_size=self.part_size, create_only=True)
        except S3Exists as exc:
            raise S3Exists(f"blob {blob_id} already exists") from exc

    def sync(self, blob_ids: list[str]) -> None:
        """Nothing to do: an object store's write is durable when it returns."""

    def read(self, blob_id: str) -> bytes:
        return self.bucket.get(self._name(blob_id))

    def stream(self, blob_id: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        return self.bucket.stream(self._name(blob_id), chunk_size)

    def exists(self, blob_id: str) -> bool:
        return self.bucket.head(self._name(blob_id)) is not None

    def delete(self, blob_id: str) -> None:
        self.bucket.delete(self._name(blob_id))

    def iter_ids(self) -> Iterator[str]:
        for name in self.bucket.names():
            folder, _, blob_id = name.partition("/")
            if BLOB_ID.match(blob_id) and folder == blob_id[:2]:
                yield blob_id

    def remove_stale_temporaries(self, older_than: timedelta | None = None) -> int:
        """Abort multipart uploads started more than ``older_than`` (default: a day) ago: their writers are gone."""
        cutoff = datetime.now(UTC) - (self.stale_upload_age if older_than is None else older_than)
        aborted = 0
        for name, upload_id, initiated in list(self.bucket.incomplete_uploads()):
            if initiated <= cutoff:
                self.bucket.abort_upload(name, upload_id)
                aborted += 1
        return aborted


_session_lock = threading.Lock()


@functools.cache
def _session() -> Any:
    """One botocore session for the process (its service models load once), blind to the environment.

    Only what :class:`S3Bucket` passes counts: no ``AWS_*`` variable (profile, endpoint,
    CA bundle, retry mode, model path) and no ``~/.aws`` file can redirect or weaken a connection.
    """
    from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES as DEFAULTS
    from botocore.session import Session

    session = Session(session_vars={name: (cfg, None, default, conv) for name, (cfg, _env, default, conv) in DEFAULTS.items()})
    for variable in ("config_file", "credentials_file"):
        session.set_config_variable(variable, "/dev/null")
    return session


def _parts(chunks: Iterable[bytes], size: int) -> Iterator[tuple[bytearray, bool]]:
    """Cut a chunk stream into ``size``-byte parts: (part, is_last). The last one may be shorter (or empty).

    A part is handed out only once a byte beyond it has arrived, so the caller knows
    whether it is the last one (one PUT) without holding a second part. Each byte is
    copied once, into the part's buffer, which is handed over as it is (botocore
    sends a buffer without copying it when the checksum is given); the generator
    starts the next buffer only when resumed, after the caller let go of the sent one.
    """
    buf = bytearray()
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        while len(view):
            if len(buf) == size:
                yield buf, False
                buf = bytearray()
            room = size - len(buf)
            buf += view[:room]
            view = view[room:]
    yield buf, True


def _broken_connection_errors() -> tuple[type[BaseException], ...]:
    """What a response body raises when the connection breaks (worth a resumed ``Range`` request)."""
    from botocore.exceptions import ConnectionError as ConnectionLost
    from botocore.exceptions import HTTPClientError, IncompleteReadError
    from urllib3.exceptions import HTTPError

    return (ConnectionLost, HTTPClientError, IncompleteReadError, HTTPError, OSError)


def _crc32(data: bytes | bytearray) -> str:
    """The ``x-amz-checksum-crc32`` value of ``data`` (base64 of the big-endian CRC-32): given, botocore adds none."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _translate(exc: Any, operation: str, name: str) -> S3Error:
    """A botocore ClientError as one of ours (the message names the key and the S3 code, never a secret)."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = _status(exc)
    text = f"{operation} {name}: {code or status}"
    if status == 412 or code == "PreconditionFailed":
        if operation in _CONDITIONAL_WRITES:
            return S3Exists(f"{name} already exists")
        return S3Error(f"{operation} {name}: the object changed while it was read")
    if code in ("NoSuchKey", "NotFound", "NoSuchUpload") or (status == 404 and code != "NoSuchBucket"):
        return S3NotFound(name)
    return S3Error(text)


def _as_s3_error(exc: BaseException, operation: str, name: str) -> S3Error:
    if isinstance(exc, S3Error):
        return exc
    if hasattr(exc, "response") and isinstance(getattr(exc, "response", None), dict):
        return _translate(exc, operation, name)
    return S3Error(f"{operation} {name}: {type(exc).__name__}: {exc}")


def _backoff(attempt: int, base: float = 0.25, cap: float = 20.0) -> float:
    """Full-jitter exponential back-off: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * 2**attempt))
