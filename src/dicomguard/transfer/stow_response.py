"""Reading a STOW-RS response: the Store Instances Response Module (PS3.18 10.5.3, Table 10.5.3-2) in DICOM JSON
(PS3.18 Annex F), into one outcome per SOP Instance UID.

Status codes (PS3.18 Table 10.5.3-1): 200 every instance stored; 202 some stored,
some failed or stored with a warning; 409 none stored. The body lists stored
instances in the ReferencedSOPSequence (0008,1199), each possibly with a
WarningReason (0008,1196), and refused ones in the FailedSOPSequence
(0008,1198), each with a FailureReason (0008,1197).

Security property: the peer's body is untrusted input. It is bounded before
it is read (:data:`MAX_RESPONSE_BYTES`), parsed strictly (a structure that is
not a response module raises :class:`ResponseNotUnderstood`), and an instance
is reported stored only if the peer names it in the ReferencedSOPSequence and
in no FailedSOPSequence item: a failure always wins over a success for the
same UID, and an instance the peer does not mention is not stored
(:meth:`StowOutcome.missing`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dicomguard.transfer.errors import ResponseNotUnderstood

MAX_RESPONSE_BYTES = 32 * 1024 * 1024
"""Largest response body read (10 000 parts of ~300 bytes each fit in 3 MB)."""

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
OTHER_FAILURES_SEQUENCE = "0008119A"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
RETRIEVE_URL = "00081190"

_JSON_TYPES = ("application/dicom+json", "application/json")

# FailureReason and WarningReason values (PS3.18 10.5.3; PS3.4 Annex B.2.3; PS3.7 Annex C).
_REASONS = {
    0x0110: "processing failure",
    0x0111: "duplicate SOP instance",
    0x0112: "no such SOP instance",
    0x0117: "invalid object instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
    0xC122: "transfer syntax not supported",
}
_FAMILIES = ((0xA700, 0xA7FF, "out of resources"), (0xA900, 0xA9FF, "data set does not match SOP class"),
             (0xC000, 0xCFFF, "cannot understand"))


def describe_reason(code: int) -> str:
    """A short English name for a FailureReason or WarningReason code, e.g. ``0xC000 cannot understand``."""
    name = _REASONS.get(code)
    if name is None:
        name = next((n for lo, hi, n in _FAMILIES if lo <= code <= hi), "unknown reason")
    return f"0x{code:04X} {name}"


class InstanceStatus(StrEnum):
    STORED = "stored"
    WARNING = "warning"
    """Stored, with a WarningReason (e.g. coercion of data elements): a success for the queue."""
    FAILED = "failed"


@dataclass(frozen=True)
class InstanceOutcome:
    """What the peer said about one instance."""

    sop_instance_uid: str
    """Empty if the peer could not tell which instance a failure concerns (e.g. an unreadable part)."""
    sop_class_uid: str
    status: InstanceStatus
    reason: int | None = None
    """FailureReason of a failed instance, WarningReason of a stored one with a warning."""
    retrieve_url: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not InstanceStatus.FAILED

    @property
    def retryable(self) -> bool:
        """Always False: a per-instance failure is the peer's decision about that object (PS3.18 10.5.3),
        re-sending the same bytes gets the same answer."""
        return False


@dataclass(frozen=True)
class StowOutcome:
    """The peer's answer to one STOW-RS request that it understood (HTTP 200, 202 or 409)."""

    http_status: int
    parts_sent: int
    """DICOM parts sent (the provenance part not counted)."""
    provenance_sent: bool
    instances: Mapping[str, InstanceOutcome]
    """One outcome per SOP Instance UID that the peer named."""
    unattributed: tuple[InstanceOutcome, ...] = ()
    """Failures the peer reported without a SOP Instance UID (OtherFailuresSequence, unreadable parts)."""

    @property
    def stored(self) -> list[str]:
        """UIDs stored, with or without a warning."""
        return [uid for uid, o in self.instances.items() if o.ok]

    @property
    def failed(self) -> dict[str, InstanceOutcome]:
        return {uid: o for uid, o in self.instances.items() if not o.ok}

    @property
    def warnings(self) -> dict[str, InstanceOutcome]:
        return {uid: o for uid, o in self.instances.items() if o.status is InstanceStatus.WARNING}

    def missing(self, expected: Iterable[str]) -> list[str]:
        """The UIDs of ``expected`` (what the caller sent) that the peer did not name at all: not stored."""
        return [uid for uid in expected if uid not in self.instances]

    def all_stored(self, expected: Iterable[str]) -> bool:
        """Every expected instance stored (possibly with a warning) and no failure reported at all."""
        want = list(expected)
        return not self.unattributed and not self.missing(want) and all(self.instances[u].ok for u in want)


def _value(item: Mapping[str, Any], tag: str) -> Any:
    attr = item.get(tag)
    if attr is None:
        return None
    if not isinstance(attr, dict):
        raise ResponseNotUnderstood(f"attribute {tag} is not a DICOM JSON attribute object")
    values = attr.get("Value")
    if values is None:
        return None
    if not isinstance(values, list):
        raise ResponseNotUnderstood(f"attribute {tag} has a Value that is not an array")
    return values[0] if values else None


def _text(item: Mapping[str, Any], tag: str) -> str:
    v = _value(item, tag)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ResponseNotUnderstood(f"attribute {tag} is not a string")
    return v.strip()


def _code(item: Mapping[str, Any], tag: str) -> int | None:
    v = _value(item, tag)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFF:
        raise ResponseNotUnderstood(f"attribute {tag} is not an unsigned short")
    return v


def _items(body: Mapping[str, Any], tag: str) -> list[Mapping[str, Any]]:
    attr = body.get(tag)
    if attr is None:
        return []
    if not isinstance(attr, dict) or attr.get("vr", "SQ") != "SQ":
        raise ResponseNotUnderstood(f"attribute {tag} is not a sequence")
    items = attr.get("Value") or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ResponseNotUnderstood(f"sequence {tag} does not hold items")
    return items


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_response(status: int, content_type: str | None, body: bytes, *, parts_sent: int, provenance_sent: bool) -> StowOutcome:
    """The outcome of a 200/202/409 response; raises :class:`ResponseNotUnderstood` for anything else."""
    if _media_type(content_type) not in _JSON_TYPES:
        raise ResponseNotUnderstood(f"HTTP {status} response is not DICOM JSON", status=status)
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise ResponseNotUnderstood(f"HTTP {status} response is not valid JSON", status=status) from None
    if isinstance(doc, list) and len(doc) == 1:  # some servers wrap the one response dataset in an array
        doc = doc[0]
    if not isinstance(doc, dict):
        raise ResponseNotUnderstood(f"HTTP {status} response is not a DICOM JSON dataset", status=status)
    try:
        instances, unattributed = _outcomes(doc)
    except ResponseNotUnderstood as exc:
        exc.status = status
        raise
    return StowOutcome(status, parts_sent, provenance_sent, instances, tuple(unattributed))


def _outcomes(doc: Mapping[str, Any]) -> tuple[dict[str, InstanceOutcome], list[InstanceOutcome]]:
    """Per-UID outcomes and the failures without a UID, from a response module."""
    instances: dict[str, InstanceOutcome] = {}
    unattributed: list[InstanceOutcome] = []
    for item in _items(doc, REFERENCED_SOP_SEQUENCE):
        uid = _text(item, REFERENCED_SOP_INSTANCE_UID)
        warning = _code(item, WARNING_REASON)
        outcome = InstanceOutcome(uid, _text(item, REFERENCED_SOP_CLASS_UID),
                                  InstanceStatus.WARNING if warning is not None else InstanceStatus.STORED,
                                  warning, _text(item, RETRIEVE_URL) or None)
        if not uid:
            raise ResponseNotUnderstood("a stored instance has no ReferencedSOPInstanceUID")
        if uid not in instances:
            instances[uid] = outcome
    failures = [(item, True) for item in _items(doc, FAILED_SOP_SEQUENCE)]
    failures += [(item, False) for item in _items(doc, OTHER_FAILURES_SEQUENCE)]
    for item, per_instance in failures:
        reason = _code(item, FAILURE_REASON)
        uid = _text(item, REFERENCED_SOP_INSTANCE_UID) if per_instance else ""
        outcome = InstanceOutcome(uid, _text(item, REFERENCED_SOP_CLASS_UID), InstanceStatus.FAILED,
                                  reason if reason is not None else 0x0110)
        if uid:
            instances[uid] = outcome  # a failure wins over a success for the same UID
        else:
            unattributed.append(outcome)
    return instances, unattributed
