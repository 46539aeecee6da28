"""The two per-object S3 requests through obstore (Rust ``object_store``): a whole-object GET and a create-only PUT.

Every stored and every retrieved instance costs one of these requests, and botocore spends about
2-2.5 ms of Python CPU on each (endpoint rules, parameter validation, event hooks, signing,
parsing), holding the interpreter lock; obstore sends the same request in about 0.3-0.5 ms with
the lock released (``bench/s3_requests.py``, ADR 0015). Everything else (multipart uploads,
versioned or resumable reads, Object Lock, listing, deletes, the write-once probe) stays on
botocore in :mod:`dicomguard.storage.s3`, which owns this client and keeps one set of guarantees:

* **TLS always verified**: against the configured ``ca_file`` or the system's roots; invalid
  certificates are never allowed; plain ``http://`` only where the settings accepted it (a
  loopback endpoint, ``config.S3Settings``).
* **Write-once by the server**: :meth:`ObstoreObjects.put_new` sends ``If-None-Match: *``
  (RFC 9110 section 13.1.2, obstore's ``mode="create"``); an existing key answers 412, raised as
  :class:`~dicomguard.storage.s3.S3Exists`, and the caller decides with its writer token whether
  the object is its own (a retried request) or another writer's.
* **Blind to the environment where it matters**: obstore's constructor reads ``AWS_*`` variables;
  every setting that could redirect a request, skip or weaken its signature, allow plaintext or an
  unverified certificate, or change the conditional-write protocol is passed explicitly, and
  explicit values win. Credentials come from a provider that returns the caller's key only, so no
  variable, file or instance-metadata service is consulted (``tests/storage/test_s3.py``).
* **Signed payloads**: SigV4 with the body's SHA-256 (``unsigned_payload`` off), so the server
  refuses a body altered in flight; objects hold ciphertext only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicomguard.storage.s3 import S3Credentials, S3Location

log = logging.getLogger(__name__)

SMALL_BODY = 1024 * 1024
"""Bodies up to this size are taken as one buffer; larger ones are copied into place as they arrive."""
READ_CHUNK = 8 * 1024 * 1024
GET_ATTEMPTS = 2
"""Whole-object GETs tried at most: obstore retries each request itself (connection errors, 5xx, throttling); one
more GET covers a body that broke after its response began (the object is write-once: a refetch is the same bytes)."""


class ObstoreObjects:
    """Whole-object GET and create-only PUT on one bucket, through obstore. Thread-safe; the interpreter lock is
    released while a request is in flight."""

    def __init__(self, location: S3Location, credentials: S3Credentials, *, max_attempts: int,
                 connect_timeout: float, read_timeout: float, backoff: Callable[[int], float]) -> None:
        import obstore  # imported here: only an archive on S3 pays for it
        from obstore.store import S3Store

        self._obstore = obstore
        self._backoff = backoff
        endpoint = location.endpoint or f"https://s3.{location.region}.amazonaws.com"
        virtual = location.addressing_style == "virtual"
        if virtual:  # object_store expects the bucket in a virtual-hosted endpoint's host name
            scheme, _, host = endpoint.partition("://")
            endpoint = f"{scheme}://{location.bucket}.{host}"
        key = {"access_key_id": credentials.access_key_id, "secret_access_key": credentials.secret_access_key,
               "token": credentials.session_token, "expires_at": None}
        client: dict[str, Any] = {
            "allow_http": endpoint.startswith("http://"),  # the settings accept http:// for a loopback endpoint only
            "allow_invalid_certificates": False,
            "connect_timeout": timedelta(seconds=connect_timeout),
            "timeout": timedelta(seconds=read_timeout),
            "user_agent": "dicomguard",
        }
        if location.ca_file is not None:
            client["root_certificate"] = location.ca_file.read_bytes()
        self._store = S3Store(
            location.bucket,
            config={
                "endpoint": endpoint, "aws_endpoint_url_s3": endpoint, "region": location.region,
                "default_region": location.region, "virtual_hosted_style_request": virtual,
                "skip_signature": False, "unsigned_payload": False, "s3_express": False, "request_payer": False,
                "imdsv1_fallback": False, "conditional_put": "etag",
            },
            client_options=client,  # type: ignore[arg-type]
            retry_config={"max_retries": max(0, max_attempts - 1), "retry_timeout": timedelta(seconds=read_timeout),
                          "backoff": {"init_backoff": timedelta(milliseconds=250), "max_backoff": timedelta(seconds=20),
                                      "base": 2.0}},
            credential_provider=lambda: key,  # type: ignore[arg-type,return-value]
        )

    def get(self, key: str, name: str) -> bytes:
        """The whole object under ``key``; :class:`S3NotFound` when there is none."""
        attempt = 1
        while True:
            try:
                return self._read(key, name)
            except _errors() as exc:
                error = _translate(exc, "get_object", name)
                if not _transient(exc) or attempt >= GET_ATTEMPTS:
                    raise error from exc
                log.warning("reading %s failed (%s); reading it again", name, type(exc).__name__)
                time.sleep(self._backoff(attempt))
                attempt += 1

    def _read(self, key: str, name: str) -> bytes:
        """One GET. A large body is copied chunk by chunk into one buffer of its announced size: collecting it as
        obstore's own buffer and then copying that costs about 1.5x the CPU (64 MiB: 205-245 against 140-155 ms)."""
        result = self._obstore.get(self._store, key)
        size = int(result.meta["size"])
        if size <= SMALL_BODY:
            data = bytes(result.bytes())
            received = len(data)
        else:
            buffer, received = bytearray(size), 0
            view = memoryview(buffer)
            for chunk in result.stream(min_chunk_size=READ_CHUNK):
                end = received + len(chunk)
                if end > size:
                    received = end
                    break
                view[received:end] = chunk
                received = end
            data = buffer  # type: ignore[assignment]  # bytes-like, not copied again
        if received != size:
            from dicomguard.storage.s3 import S3Error

            raise S3Error(f"get_object {name}: {received} bytes received, {size} announced")
        return data

    def put_new(self, key: str, name: str, body: bytes | bytearray | memoryview, metadata: dict[str, str]) -> None:
        """One PUT that creates ``key`` or fails with :class:`S3Exists` (``If-None-Match: *``), with user metadata."""
        try:
            self._obstore.put(self._store, key, memoryview(body), mode="create", attributes=dict(metadata),
                              use_multipart=False)
        except _errors() as exc:
            raise _translate(exc, "put_object", name) from exc


def _errors() -> tuple[type[BaseException], ...]:
    """What obstore raises: its own errors, and built-in ones for some (``FileNotFoundError`` for a missing object,
    ``TimeoutError`` and ``ConnectionError`` for the network)."""
    from obstore.exceptions import BaseError

    return (BaseError, OSError)


def _transient(exc: BaseException) -> bool:
    """Worth one more GET: a failure of the transfer, not an answer (missing, refused, unauthenticated)."""
    from obstore.exceptions import GenericError

    return type(exc) is GenericError or isinstance(exc, (TimeoutError, ConnectionError))


def _translate(exc: BaseException, operation: str, name: str) -> Exception:
    """obstore's error as one of ours; the message names the key and the reason's first line (a URL and a status,
    never a credential: obstore prints neither the signature nor the key)."""
    from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

    from dicomguard.storage.s3 import S3Error, S3Exists, S3NotFound

    if isinstance(exc, (NotFoundError, FileNotFoundError)):
        return S3NotFound(name)
    if isinstance(exc, (AlreadyExistsError, PreconditionError)) and operation == "put_object":
        return S3Exists(f"{name} already exists")
    reason = (str(exc).strip().splitlines() or [""])[0][:300]
    return S3Error(f"{operation} {name}: {type(exc).__name__}: {reason}")
