"""The wildcard blind indexes of a patient row: prefixes and suffixes of its Patient ID and Patient's Name.

A wildcard pattern (PS3.4 C.2.2.2.4) narrows its candidates by the index of its
longer literal end: ``DOE*`` by the prefix ``DOE``, ``*SMITH`` by the suffix
``SMITH`` (ADR 0017). Narrowing must never drop a row the exact match keeps, so
suffix indexes are used only once every live patient row carries them: rows
written since migration 0019 always do, older ones after ``dicomguard index
backfill``, which records completion under :data:`SUFFIX_TOKENS_KEY`.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.orm import Session

from dicomguard.crypto.blind_index import BlindField, BlindIndexer
from dicomguard.index.models import ArchiveMeta

SUFFIX_TOKENS_KEY: Final = "patient_suffix_tokens"
"""``archive_meta`` key whose value is :data:`COMPLETE` once every patient row carries its suffix indexes."""
COMPLETE: Final = "complete"


def wildcard_tokens(ix: BlindIndexer, patient_id: str, name: str) -> list[tuple[BlindField, bytes]]:
    """Every prefix and suffix index a patient row with this Patient ID and name carries."""
    return (
        [(BlindField.PATIENT_ID_PREFIX, t) for t in ix.prefix_tokens(BlindField.PATIENT_ID_PREFIX, patient_id)]
        + [(BlindField.PATIENT_NAME_PREFIX, t) for t in ix.prefix_tokens(BlindField.PATIENT_NAME_PREFIX, name)]
        + suffix_tokens(ix, patient_id, name)
    )


def suffix_tokens(ix: BlindIndexer, patient_id: str, name: str) -> list[tuple[BlindField, bytes]]:
    """The suffix indexes alone (what ``index backfill`` adds to rows written before them)."""
    return (
        [(BlindField.PATIENT_ID_SUFFIX, t) for t in ix.suffix_tokens(BlindField.PATIENT_ID_SUFFIX, patient_id)]
        + [(BlindField.PATIENT_NAME_SUFFIX, t) for t in ix.suffix_tokens(BlindField.PATIENT_NAME_SUFFIX, name)]
    )


def suffix_tokens_complete(s: Session) -> bool:
    """Whether every patient row carries its suffix indexes (so a leading-wildcard search may narrow by them)."""
    row = s.get(ArchiveMeta, SUFFIX_TOKENS_KEY)
    return row is not None and row.value == COMPLETE
