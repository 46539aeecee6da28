"""Site-to-site transfer: a STOW-RS client over mutual TLS (PS3.18 10.5) and the provenance manifest that
carries the sender ledger's inclusion proofs (RFC 9162) with the objects.

The queue, the peers registry, the CLI and the receiving route build on these; this package holds no state.
"""

from __future__ import annotations

from dicomguard.transfer.errors import (
    NotAuthorized,
    PayloadTooLarge,
    PeerBusy,
    PeerUnreachable,
    PermanentTransferError,
    RequestRejected,
    ResponseNotUnderstood,
    RetryableTransferError,
    TlsFailure,
    TransferError,
)
from dicomguard.transfer.provenance import (
    PROVENANCE_FORMAT,
    PROVENANCE_MEDIA_TYPE,
    Provenance,
    ProvenanceError,
    build_provenance,
    parse_provenance,
    verify_provenance,
)
from dicomguard.transfer.stow_client import send_instances
from dicomguard.transfer.stow_response import InstanceOutcome, InstanceStatus, StowOutcome, describe_reason
from dicomguard.transfer.tls import client_context

__all__ = [
    "PROVENANCE_FORMAT", "PROVENANCE_MEDIA_TYPE", "InstanceOutcome", "InstanceStatus", "NotAuthorized", "PayloadTooLarge",
    "PeerBusy", "PeerUnreachable", "PermanentTransferError", "Provenance", "ProvenanceError", "RequestRejected",
    "ResponseNotUnderstood", "RetryableTransferError", "StowOutcome", "TlsFailure", "TransferError", "build_provenance",
    "client_context", "describe_reason", "parse_provenance", "send_instances", "verify_provenance",
]
