"""The studies a principal might be permitted to query: a predicate over study access attributes (ADR 0019).

A :class:`StudyScope` is what the policies leave of a search before any study is
looked at: "department CARDIOLOGY, or a patient under a break-glass grant, and
not labelled vip". The index narrows its candidates with it in SQL
(``core.query.scope_condition``), so rows outside it are never decrypted,
decided or counted against a search's candidate budget (ADR 0017).

It only *narrows*: every candidate inside it is still decided by the policy
engine, one study at a time (NIST SP 800-207 tenet 3). A scope that is too wide
costs time, never access; one that is too narrow would hide studies the
principal may see, so whatever the engine cannot translate exactly widens the
scope (:data:`EVERYTHING`), and only exact translations may be negated.

The attributes are those of the Cedar ``Study`` entity (``policy/schema.cedarschema``),
with the same values ``policy.engine.resource_entity`` gives them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomguard.core.access import StudyAccess

SCALAR_ATTRIBUTES = frozenset({"uid", "patient", "department", "site", "referring_token"})
"""String attributes of a study; ``""`` stands for none (NULL in the index)."""
SET_ATTRIBUTES = frozenset({"labels", "modalities"})


@dataclass(frozen=True)
class Everything:
    """No narrowing: any study may be permitted."""


@dataclass(frozen=True)
class Nothing:
    """No study can be permitted: the search need not read the index."""


@dataclass(frozen=True)
class AttributeIn:
    """The study's ``attribute`` (one of :data:`SCALAR_ATTRIBUTES`) is one of ``values``."""

    attribute: str
    values: frozenset[str]


@dataclass(frozen=True)
class SetHolds:
    """The study's set ``attribute`` (``labels`` or ``modalities``) holds every one of ``values`` (``every``) or any."""

    attribute: str
    values: frozenset[str]
    every: bool


@dataclass(frozen=True)
class StoredWithin:
    """The study was first stored between ``since`` and ``until`` (whole seconds since the epoch, both inclusive,
    as Cedar's ``stored_at``); ``None``: unbounded."""

    since: int | None = None
    until: int | None = None


@dataclass(frozen=True)
class AllOf:
    parts: tuple[StudyScope, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[StudyScope, ...]


@dataclass(frozen=True)
class Not:
    part: StudyScope


StudyScope = Everything | Nothing | AttributeIn | SetHolds | StoredWithin | AllOf | AnyOf | Not

EVERYTHING = Everything()
NOTHING = Nothing()


def all_of(*parts: StudyScope) -> StudyScope:
    """The conjunction, simplified: :data:`NOTHING` absorbs, :data:`EVERYTHING` drops out."""
    return _flattened(parts, AllOf, absorbing=NOTHING, neutral=EVERYTHING)


def any_of(*parts: StudyScope) -> StudyScope:
    """The disjunction, simplified: :data:`EVERYTHING` absorbs, :data:`NOTHING` drops out."""
    return _flattened(parts, AnyOf, absorbing=EVERYTHING, neutral=NOTHING)


def _flattened(parts: tuple[StudyScope, ...], kind: type[AllOf] | type[AnyOf], absorbing: StudyScope,
               neutral: StudyScope) -> StudyScope:
    kept: list[StudyScope] = []
    for p in parts:
        if p == absorbing:
            return absorbing
        if isinstance(p, kind):
            kept.extend(p.parts)
        elif p != neutral:
            kept.append(p)
    if not kept:
        return neutral
    return kept[0] if len(kept) == 1 else kind(tuple(kept))


def not_(part: StudyScope) -> StudyScope:
    if isinstance(part, Everything):
        return NOTHING
    if isinstance(part, Nothing):
        return EVERYTHING
    if isinstance(part, Not):
        return part.part
    return Not(part)


def admits(scope: StudyScope, uid: str, patient_ref: str, access: StudyAccess) -> bool:
    """Whether one study lies in ``scope``: the meaning ``core.query.scope_condition`` gives it in SQL."""
    match scope:
        case Everything():
            return True
        case Nothing():
            return False
        case AttributeIn(attribute, values):
            return _scalar(attribute, uid, patient_ref, access) in values
        case SetHolds(attribute, values, every):
            held = access.labels if attribute == "labels" else access.modalities
            return values <= held if every else bool(values & held)
        case StoredWithin(since, until):
            stored = int(access.stored_at.timestamp())
            return (since is None or stored >= since) and (until is None or stored <= until)
        case AllOf(parts):
            return all(admits(p, uid, patient_ref, access) for p in parts)
        case AnyOf(parts):
            return any(admits(p, uid, patient_ref, access) for p in parts)
        case Not(part):
            return not admits(part, uid, patient_ref, access)
    raise TypeError(f"not a study scope: {scope!r}")


def _scalar(attribute: str, uid: str, patient_ref: str, access: StudyAccess) -> str:
    return {"uid": uid, "patient": patient_ref, "department": access.department, "site": access.site,
            "referring_token": access.referring_token}[attribute]

