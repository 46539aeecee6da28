"""Exception hierarchy: one base per trust boundary (see docs/architecture.md).

Callers catch :class:`DicomGuardError`; tests check the subclass. Messages never
contain PHI: they name objects by UID or by a reason code, never by patient name
or ID.
"""

from __future__ import annotations

from enum import StrEnum


class DicomGuardError(Exception):
    """Base of every error raised on purpose by dicomguard."""


class ConfigurationError(DicomGuardError):
    """The home, the configuration file or the environment is not usable."""


class HomeExistsError(ConfigurationError):
    """``init`` refuses to overwrite an existing home."""


class UnsealError(DicomGuardError):
    """The key-encryption key could not be unsealed.

    Deliberately opaque (like Fernet's ``InvalidToken``): a wrong passphrase, a
    corrupted sealed file and a sealed file from another home look the same.
    """


class RejectReason(StrEnum):
    """Why an object was refused at ingest. Stable codes for scripts."""

    NOT_DICOM = "not-dicom"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    TOO_LARGE = "too-large"
    ELEMENT_TOO_LARGE = "element-too-large"
    TOO_MANY_ELEMENTS = "too-many-elements"
    TOO_DEEP = "sequence-too-deep"
    MISSING_UID = "missing-uid"
    INVALID_UID = "invalid-uid"
    META_MISMATCH = "meta-mismatch"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported-transfer-syntax"
    CONFLICT = "conflict"
    PATIENT_ERASED = "patient-erased"
    IDENTITY_CONFLICT = "identity-conflict"
    """The object's study (or series) is stored under another patient (or study): a UID belongs to one owner."""
    STUDY_MISMATCH = "study-mismatch"
    """The object belongs to another study than the one the request named (STOW-RS ``/studies/{study}``)."""


class RejectedObject(DicomGuardError):
    """An object was refused at ingest; nothing of it was stored."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class IntegrityError(DicomGuardError):
    """Stored data does not match what was recorded at ingest.

    Raised instead of returning data: a tampered object is never served as good.
    """

    def __init__(self, kind: str, uid: str, detail: str = "") -> None:
        super().__init__(f"integrity failure ({kind}) for {uid}" + (f": {detail}" if detail else ""))
        self.kind = kind
        self.uid = uid


class NotFoundError(DicomGuardError):
    """No such object, or the caller may not know it exists."""


class ErasedError(NotFoundError):
    """The object belonged to a crypto-shredded patient and can never be read again."""


class InvalidContinuation(DicomGuardError):
    """A search continuation that does not open for this principal and search, or whose study is gone (search again)."""


class SearchTooBroad(DicomGuardError):
    """A search would read more candidate rows than one request may (``limits.max_search_candidates``).

    Raised before any match is returned: a partial answer would pass for the whole one. The candidates are what
    the blind indexes and clear columns left to decrypt and decide, so the bound is on a request's work (CPU and
    memory), whatever the principal may see; narrowing the search (a Patient ID, a longer name prefix or suffix, a
    date range) or a smaller ``offset`` gets an answer.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"the search would examine more than {limit} candidate records: narrow it (a Patient ID, "
                         "a longer name prefix or suffix, a date range) or ask for an earlier page")
        self.limit = limit
