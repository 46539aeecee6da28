"""The gateway's leg to the upstream archive: DIMSE over mutually authenticated TLS.

PS3.15 Annex B.1 (Basic TLS Secure Transport Connection Profile) as hardened
by BCP 195: the gateway verifies the upstream's certificate against the
configured CA and host name, and presents its own client certificate, whose
AE title (CN / ``urn:dicom:ae:`` SAN) is the calling AE title. There is no
plaintext fallback: a TLS failure is an upstream failure, retried later.

One association carries many C-STOREs (PS3.8 7.1: association set-up is the
expensive part); its presentation contexts (PS3.8 7.1.1.13) are the
(SOP class, transfer syntax) pairs of the objects about to be sent, each
proposed with exactly the transfer syntax the object is encoded in, because
the bytes are forwarded unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Iterable, Iterator
from enum import Enum
from pathlib import Path

from pynetdicom import AE, _config
from pynetdicom.association import Association

from dicomguard.gateway.config import GatewayConfig, GatewayError

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1-255
Pair = tuple[str, str]  # (SOP Class UID, Transfer Syntax UID)


class Outcome(Enum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


def classify(status: int | None) -> Outcome:
    """What a C-STORE response status means for a queued object (PS3.4 B.2.3, PS3.7 Annex C).

    ==============================  ===========================================  ==========
    Status                          Meaning                                      Outcome
    ==============================  ===========================================  ==========
    0x0000                          Success                                      delivered
    0xB000, 0xB006, 0xB007, 0xBxxx  Warning (coercion, elements discarded, ...)  delivered
    0x0111                          Duplicate SOP Instance (already stored)      delivered
    0xA700-0xA7FF, 0x0213           Out of resources / resource limitation       transient
    0x0124                          Refused: not authorized (upstream policy)    transient
    none                            no response (abort, time-out, lost link)     transient
    anything else                   e.g. 0xA9xx, 0xCxxx, 0x0122, 0x0110          permanent
    ==============================  ===========================================  ==========

    Transient outcomes are not properties of the object: the head of the
    queue is retried (and blocks the queue) until the upstream recovers or is
    reconfigured. A permanent refusal is retried a few times
    (``dead_letter_after``) before the object is set aside as a dead letter,
    so one bad object cannot block the queue and a brief upstream hiccup does
    not divert anything.
    """
    if status is None:
        return Outcome.TRANSIENT
    if status == 0x0000 or 0xB000 <= status <= 0xBFFF or status == 0x0111:
        return Outcome.DELIVERED
    if 0xA700 <= status <= 0xA7FF or status in (0x0213, 0x0124):
        return Outcome.TRANSIENT
    return Outcome.PERMANENT


class UpstreamUnavailable(GatewayError):
    """No association could be established (connection, TLS, or A-ASSOCIATE-RJ); retry later."""


class ContextRefused(GatewayError):
    """The upstream accepted the association but not the object's (SOP class, transfer syntax)."""


@contextlib.contextmanager
def pynetdicom_settings() -> Iterator[None]:
    """Process-wide pynetdicom settings the gateway needs, restored afterwards.

    Identifiers of requests and responses are never logged (they can hold
    patient data), and datasets sent from a path are streamed unchanged, not
    decoded and re-encoded.
    """
    saved = (_config.LOG_REQUEST_IDENTIFIERS, _config.LOG_RESPONSE_IDENTIFIERS, _config.STORE_SEND_CHUNKED_DATASET)
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.LOG_REQUEST_IDENTIFIERS, _config.LOG_RESPONSE_IDENTIFIERS, _config.STORE_SEND_CHUNKED_DATASET = saved


class UpstreamLink:
    """One reusable association to the upstream. Not thread-safe: one user at a time."""

    def __init__(self, config: GatewayConfig, tls: ssl.SSLContext) -> None:
        self._config = config
        self._tls = tls
        self._assoc: Association | None = None
        self._accepted: set[Pair] = set()
        self._msg_id = 0

    @property
    def is_open(self) -> bool:
        return self._assoc is not None and self._assoc.is_established

    def has(self, pair: Pair) -> bool:
        return self.is_open and pair in self._accepted

    def ensure(self, needed: Pair, upcoming: Iterable[Pair] = ()) -> None:
        """An association that can carry ``needed``; proposes ``upcoming`` pairs too, to be reused."""
        if self.has(needed):
            return
        self.release()
        pairs = [needed] + [p for p in dict.fromkeys(upcoming) if p != needed]
        ae = AE(self._config.ae_title)
        ae.maximum_pdu_size = 0
        ae.acse_timeout = min(30.0, self._config.upstream_timeout_s)
        ae.dimse_timeout = self._config.upstream_timeout_s
        ae.network_timeout = self._config.upstream_timeout_s
        ae.connection_timeout = min(15.0, self._config.upstream_timeout_s)
        for sop_class, syntax in pairs[:MAX_CONTEXTS]:
            ae.add_requested_context(sop_class, [syntax])
        host, port = self._config.upstream
        assoc = ae.associate(host, port, ae_title=self._config.upstream_ae, tls_args=(self._tls, self._config.server_name))
        if not assoc.is_established:
            if assoc.is_rejected:
                raise UpstreamUnavailable("upstream rejected the association (A-ASSOCIATE-RJ)")
            raise UpstreamUnavailable("upstream unreachable, TLS handshake failed or association aborted")
        self._assoc = assoc
        self._accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts if cx.transfer_syntax}
        if needed not in self._accepted:
            raise ContextRefused("upstream refused the presentation context (SOP class / transfer syntax)")

    def send(self, path: Path) -> int | None:
        """C-STORE the Part 10 file at ``path`` unchanged; the status, or None without a response."""
        assoc = self._assoc
        if assoc is None or not assoc.is_established:
            return None
        self._msg_id = self._msg_id % 0xFFFF + 1  # PS3.7 Annex E: distinguishes this request from the others
        try:
            rsp = assoc.send_c_store(path, msg_id=self._msg_id)
        except (RuntimeError, ValueError, OSError, AttributeError) as exc:
            log.warning("C-STORE to upstream failed: %s", type(exc).__name__)
            self.release()
            return None
        status = getattr(rsp, "Status", None)
        if status is None or not assoc.is_established:
            self.release()
        return None if status is None else int(status)

    def release(self) -> None:
        assoc, self._assoc = self._assoc, None
        self._accepted = set()
        if assoc is not None and assoc.is_established:
            with contextlib.suppress(Exception):
                assoc.release()
