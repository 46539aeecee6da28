"""Why a site-to-site transfer did not complete, split by what a retry queue should do about it.

Security property: the split is conservative about *who decides*. A failure
that only an operator can fix (the peer's certificate does not verify, our
client certificate is refused, 401/403, a request the peer will never accept)
is :class:`PermanentTransferError` and is never retried automatically, so a
misconfigured or impersonated peer is not hammered with PHI-bearing requests.
A failure of the path or of the peer's capacity (refused or reset connection,
timeout, 5xx, 408/429 with or without ``Retry-After``, RFC 9110 10.2.3 and
15.6) is :class:`RetryableTransferError`.

Per-object refusals of a STOW-RS request that was understood (PS3.18 10.5.3:
the FailedSOPSequence of a 202 or 409 response) are *not* exceptions: they are
outcomes of :class:`dicomguard.transfer.stow_response.StowOutcome`, each one
permanent.

Messages hold no PHI: a status code, a TLS reason, never a body from the peer
(that goes, bounded, to :attr:`TransferError.detail` for the operator's log).
"""

from __future__ import annotations

from dicomguard.errors import DicomGuardError


class TransferError(DicomGuardError):
    """Base of every transfer failure; :attr:`retryable` says whether the queue may try again unchanged."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        """HTTP status of the peer's answer, if there was one."""
        self.detail = detail
        """At most 512 printable characters of the peer's error body (may be anything the peer chose to say)."""


class RetryableTransferError(TransferError):
    """The same request may succeed later: the network path or the peer's capacity failed, not the request."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = None, detail: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message, status=status, detail=detail)
        self.retry_after_s = retry_after_s
        """The peer's ``Retry-After`` in seconds (RFC 9110 10.2.3), clamped to [0, 1 day]; None if it gave none."""


class PeerUnreachable(RetryableTransferError):
    """No answer: connection refused, reset or closed early, timed out, or the name did not resolve."""


class PeerBusy(RetryableTransferError):
    """The peer answered 408, 429 or 5xx (other than 501/505): overloaded, restarting or failing for now."""


class PermanentTransferError(TransferError):
    """Retrying the same request cannot help: an operator must change a certificate, a credential or the request."""


class TlsFailure(PermanentTransferError):
    """The TLS handshake failed (RFC 8446 6.2, RFC 5246 7.2.2): the peer's certificate did not verify against
    the configured CA or name, or the peer refused our client certificate or protocol version."""


class NotAuthorized(PermanentTransferError):
    """401 or 403: the peer does not accept our credentials for STOW-RS."""


class PayloadTooLarge(PermanentTransferError):
    """413: the request is larger than the peer accepts; send fewer objects per request."""


class RequestRejected(PermanentTransferError):
    """Another 4xx (or 1xx/3xx/501/505): the peer will not accept this request as it is. Redirects are not followed."""


class ResponseNotUnderstood(PermanentTransferError):
    """The peer answered, but not with a PS3.18 Store Instances Response this client can read."""
