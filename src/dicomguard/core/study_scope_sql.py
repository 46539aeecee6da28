"""A :class:`~dicomguard.core.study_scope.StudyScope` as a SQL condition on ``studies`` (ADR 0019).

The condition admits exactly the rows :func:`dicomguard.core.study_scope.admits`
admits. Every leaf is two-valued (never SQL NULL), so ``NOT`` keeps its meaning
over columns that may be NULL: a study without a department is "not in
CARDIOLOGY", as it is to Cedar, not "unknown". Positive leaves on
``department``, ``uid``, ``patient_ref`` and ``referring_token`` stay usable by
their indexes (``ix_studies_department_created_at_uid`` keeps a department's
studies one range scan in storage order).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, literal, not_, or_, true

from dicomguard.core.study_scope import (
    AllOf,
    AnyOf,
    AttributeIn,
    Everything,
    Not,
    Nothing,
    SetHolds,
    StoredWithin,
    StudyScope,
)
from dicomguard.index.models import Series, Study

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COLUMNS: dict[str, Any] = {"uid": Study.uid, "patient": Study.patient_ref, "department": Study.department, "site": Study.site,
                            "referring_token": Study.referring_token}


def scope_condition(scope: StudyScope) -> ColumnElement[bool]:
    """The rows of ``studies`` inside ``scope``."""
    match scope:
        case Everything():
            return true()
        case Nothing():
            return false()
        case AttributeIn(attribute, values):
            return _attribute_in(attribute, values)
        case SetHolds("labels", values, every):
            # labels are stored comma-joined (",a,b," framed so that each label is matched whole, never a substring)
            framed = literal(",") + func.coalesce(Study.labels, "") + literal(",")
            held = [framed.contains(f",{v},", autoescape=True) if v and "," not in v else false() for v in sorted(values)]
            return _joined(held, every)
        case SetHolds("modalities", values, every):
            # a study's modalities are those of its series (core.query.IndexQuery.study_access), empty ones left out
            def has(wanted: list[str]) -> ColumnElement[bool]:
                return exists().where(Series.study_uid == Study.uid, Series.modality.in_(wanted)) if wanted else false()
            wanted = sorted(v for v in values if v)
            if every:
                return and_(true(), *(has([v]) for v in sorted(values))) if all(values) else false()
            return has(wanted)
        case StoredWithin(since, until):
            parts = []
            if since is not None:
                parts.append(Study.created_at >= _EPOCH + timedelta(seconds=since))
            if until is not None:
                parts.append(Study.created_at < _EPOCH + timedelta(seconds=until + 1))  # whole seconds, as Cedar's stored_at
            return and_(true(), *parts)
        case AllOf(parts):
            return and_(*(scope_condition(p) for p in parts))
        case AnyOf(parts):
            return or_(*(scope_condition(p) for p in parts))
        case Not(part):
            return not_(scope_condition(part))
    raise TypeError(f"no SQL for the study scope {scope!r}")


def _joined(parts: list[ColumnElement[bool]], every: bool) -> ColumnElement[bool]:
    if not parts:
        return true() if every else false()
    return and_(*parts) if every else or_(*parts)


def _attribute_in(attribute: str, values: frozenset[str]) -> ColumnElement[bool]:
    column = _COLUMNS[attribute]
    if attribute == "referring_token":
        # Cedar sees the blind index as lower-case hex; a value that is not such hex names no stored token
        wanted: list[Any] = sorted(bytes.fromhex(v) for v in values if v and _is_hex(v))
    else:
        wanted = sorted(v for v in values if v)
    present = and_(column.is_not(None), column.in_(wanted)) if wanted else false()
    if "" in values and attribute in ("department", "site", "referring_token"):
        # "" is how Cedar sees none: NULL or empty in the index
        empty = literal(b"") if attribute == "referring_token" else literal("")
        return or_(column.is_(None), column == empty, present)
    return present


def _is_hex(value: str) -> bool:
    return len(value) % 2 == 0 and all(c in "0123456789abcdef" for c in value)
