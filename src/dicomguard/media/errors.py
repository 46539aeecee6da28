"""The one error of the media package: an object cannot be put on the medium.

Raised before any byte of the offending object is emitted, so a caller that
stops the stream on it never sends a partial member. The message names the
object by its position in the stream and, when known, its SOP Instance UID;
never by a value that could identify the patient.
"""

from __future__ import annotations

from dicomguard.errors import DicomGuardError


class MediaError(DicomGuardError):
    """An object could not be written to a PS3.10 medium (``reason`` holds no PHI)."""

    def __init__(self, reason: str, *, index: int | None = None, sop_instance_uid: str | None = None) -> None:
        where = [f"object {index}"] if index is not None else []
        if sop_instance_uid:
            where.append(sop_instance_uid)
        super().__init__(f"{' '.join(where)}: {reason}" if where else reason)
        self.reason = reason
        self.index = index
        self.sop_instance_uid = sop_instance_uid
