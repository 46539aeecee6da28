"""C-STORE SCP (PS3.4 Annex B): every received object goes through the core ingest pipeline."""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset

from dicomguard.core.access import AccessDenied
from dicomguard.dimse import status
from dicomguard.dimse.part10 import received_part10
from dicomguard.dimse.session import GateRefused, Sessions
from dicomguard.errors import RejectedObject, RejectReason
from dicomguard.storage.base import BlobStoreError

log = logging.getLogger(__name__)


def _status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]  # LO: 64 characters; comments never carry PHI
    return ds


def handle_store(event, sessions: Sessions) -> Dataset | int:  # type: ignore[no-untyped-def]
    try:
        session = sessions.gate(event.assoc)
    except GateRefused as exc:
        log.warning("C-STORE refused: %s", exc)
        return _status(status.REFUSED_NOT_AUTHORIZED, "refused")
    data = received_part10(event)
    try:
        session.services.store.ingest(data, source=f"dimse:{session.device.ae_title}")
    except AccessDenied:
        return _status(status.REFUSED_NOT_AUTHORIZED, "not authorized to store")
    except RejectedObject as exc:
        mismatch = exc.reason in (RejectReason.CONFLICT, RejectReason.IDENTITY_CONFLICT)
        code = status.STORE_DATASET_MISMATCH if mismatch else status.STORE_CANNOT_UNDERSTAND
        if exc.reason is RejectReason.TOO_LARGE:
            code = status.STORE_OUT_OF_RESOURCES
        return _status(code, exc.reason.value)
    except BlobStoreError:
        log.error("C-STORE from %s failed: blob store error", session.device.ae_title)
        return _status(status.STORE_OUT_OF_RESOURCES, "storage unavailable")
    return status.SUCCESS
