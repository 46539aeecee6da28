"""Cedar residual policies as a :class:`~dicomguard.core.study_scope.StudyScope` (ADR 0019).

Cedar's partial evaluation (``cedarpy.is_authorized_partial``) evaluates every
policy with the principal, the action and the request context known and the
resource unknown. What is left of each policy (its *residual*) is an expression
over ``resource``'s attributes only, in Cedar's JSON form: for a radiologist of
CARDIOLOGY, ``"CARDIOLOGY" == resource.department``.

This module turns those residuals into a study scope that holds *at least* every
study the principal is permitted to query:

* the permits are joined with "or"; a part of a permit that is not one of the
  forms below is read as "true" (a wider scope, never a narrower one);
* a forbid narrows the scope only when all of its residual is translated exactly
  (``not`` of a widened expression could drop permitted studies);
* a residual with a head constraint on the resource, any evaluation error, or an
  unexpected shape widens the scope to everything.

Exact forms: ``true``/``false``, ``&&``, ``||``, ``!``; ``resource is Study``;
``==`` of a string attribute and a string, of ``stored_at`` and a number;
``[...].contains(resource.attr)``; ``resource.labels.contains("x")``;
``containsAny``/``containsAll`` of ``labels``/``modalities`` and a literal set;
comparisons of ``stored_at`` (alone or as ``N - resource.stored_at``) with a
number. Cedar's partial evaluation is an experimental upstream feature; nothing
here decides access (the engine still decides every study), so a change in its
output can cost speed, not confidentiality.
"""

from __future__ import annotations

from typing import Any

from dicomguard.core.study_scope import (
    EVERYTHING,
    NOTHING,
    SCALAR_ATTRIBUTES,
    SET_ATTRIBUTES,
    AttributeIn,
    SetHolds,
    StoredWithin,
    StudyScope,
    all_of,
    any_of,
    not_,
)

_Translated = tuple[StudyScope, bool]
"""A superset of the expression's studies, and whether it is exactly them."""
_WIDE: _Translated = (EVERYTHING, False)


def scope_of_residuals(decision: str, reasons: list[str], errors: list[Any], residuals: dict[str, Any],
                       effects: dict[str, str]) -> StudyScope:
    """The study scope of one partial evaluation: ``decision`` (``Allow``, ``Deny`` or ``NoDecision``), the ids of
    the policies already satisfied (``reasons``), evaluation ``errors``, the residual policies by id, and each loaded
    policy's effect by id (``permit``/``forbid``)."""
    if errors:
        return EVERYTHING
    if decision == "Deny":
        return NOTHING
    if decision == "Allow":
        return EVERYTHING
    if any(effects.get(r) == "permit" for r in reasons):
        permits: list[StudyScope] = [EVERYTHING]
    else:
        permits = []
    forbids: list[StudyScope] = []
    for policy_id, policy in residuals.items():
        effect = effects.get(policy_id)
        if effect not in ("permit", "forbid"):
            return EVERYTHING
        scope, exact = _policy(policy)
        if effect == "permit":
            permits.append(scope)
        elif exact:
            forbids.append(scope)
    return all_of(any_of(*permits), *(not_(f) for f in forbids))


def _policy(policy: Any) -> _Translated:
    if not isinstance(policy, dict):
        return _WIDE
    if any(not isinstance(policy.get(head), dict) or policy[head].get("op") != "All" for head in ("principal", "action", "resource")):
        return _WIDE
    parts: list[_Translated] = []
    for condition in policy.get("conditions") or ():
        if not isinstance(condition, dict):
            return _WIDE
        scope, exact = _expr(condition.get("body"))
        if condition.get("kind") == "when":
            parts.append((scope, exact))
        elif condition.get("kind") == "unless":
            parts.append((not_(scope), True) if exact else _WIDE)
        else:
            return _WIDE
    return all_of(*(s for s, _ in parts)), all(e for _, e in parts)


def _expr(e: Any) -> _Translated:
    """One residual expression (Cedar JSON expression form)."""
    if not isinstance(e, dict) or len(e) != 1:
        return _WIDE
    ((op, arg),) = e.items()
    if op == "Value" and isinstance(arg, bool):
        return (EVERYTHING if arg else NOTHING), True
    if op in ("&&", "||") and isinstance(arg, dict):
        (a, ea), (b, eb) = _expr(arg.get("left")), _expr(arg.get("right"))
        return (all_of(a, b) if op == "&&" else any_of(a, b)), ea and eb
    if op == "!" and isinstance(arg, dict):
        scope, exact = _expr(arg.get("arg"))
        return (not_(scope), True) if exact else _WIDE
    if op == "is" and isinstance(arg, dict) and _is_resource(arg.get("left")) and "in" not in arg:
        return (EVERYTHING if arg.get("entity_type") == "Study" else NOTHING), True
    if op == "==" and isinstance(arg, dict):
        return _equals(arg.get("left"), arg.get("right"))
    if op == "contains" and isinstance(arg, dict):
        return _contains(arg.get("left"), arg.get("right"))
    if op in ("containsAny", "containsAll") and isinstance(arg, dict):
        return _contains_set(op == "containsAll", arg.get("left"), arg.get("right"))
    if op in ("<", "<=", ">", ">=") and isinstance(arg, dict):
        return _compare(op, arg.get("left"), arg.get("right"))
    return _WIDE


def _is_resource(e: Any) -> bool:
    return e == {"unknown": [{"Value": "resource"}]}


def _attribute(e: Any) -> str | None:
    """``resource.<attr>`` → ``attr``."""
    if isinstance(e, dict) and set(e) == {"."}:
        inner = e["."]
        if isinstance(inner, dict) and _is_resource(inner.get("left")) and isinstance(inner.get("attr"), str):
            return str(inner["attr"])
    return None


def _string(e: Any) -> str | None:
    if isinstance(e, dict) and set(e) == {"Value"} and isinstance(e["Value"], str):
        return str(e["Value"])
    return None


def _long(e: Any) -> int | None:
    if isinstance(e, dict) and set(e) == {"Value"} and isinstance(e["Value"], int) and not isinstance(e["Value"], bool):
        return int(e["Value"])
    return None


def _strings(e: Any) -> frozenset[str] | None:
    """A literal set of strings (``["a", "b"]``), else None."""
    if isinstance(e, dict) and set(e) == {"Set"} and isinstance(e["Set"], list):
        values = [_string(v) for v in e["Set"]]
        if all(v is not None for v in values):
            return frozenset(v for v in values if v is not None)
    return None


def _equals(left: Any, right: Any) -> _Translated:
    for attr_side, value_side in ((left, right), (right, left)):
        attr = _attribute(attr_side)
        if attr in SCALAR_ATTRIBUTES and (value := _string(value_side)) is not None:
            return AttributeIn(attr, frozenset({value})), True
        if attr == "stored_at" and (number := _long(value_side)) is not None:
            return StoredWithin(number, number), True
    return _WIDE


def _contains(container: Any, element: Any) -> _Translated:
    attr = _attribute(element)
    values = _strings(container)
    if attr in SCALAR_ATTRIBUTES and values is not None:
        return (AttributeIn(attr, values) if values else NOTHING), True
    attr = _attribute(container)
    value = _string(element)
    if attr in SET_ATTRIBUTES and value is not None:
        return SetHolds(attr, frozenset({value}), every=True), True
    return _WIDE


def _contains_set(every: bool, left: Any, right: Any) -> _Translated:
    attr, values = _attribute(left), _strings(right)
    if attr not in SET_ATTRIBUTES or values is None:
        if every:
            return _WIDE  # literal.containsAll(resource.set): "a subset of the literal", not translated
        attr, values = _attribute(right), _strings(left)  # containsAny is symmetric
    if attr in SET_ATTRIBUTES and values is not None:
        if not values:
            return (EVERYTHING if every else NOTHING), True
        return SetHolds(attr, values, every), True
    return _WIDE


_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _compare(op: str, left: Any, right: Any) -> _Translated:
    """``stored_at`` against a number: ``resource.stored_at <= N``, ``N < resource.stored_at``,
    ``N - resource.stored_at <= K`` (the technologists' recency rule)."""
    number = _long(right)
    if number is None and (number := _long(left)) is not None:
        left, op = right, _FLIPPED[op]
    if number is None:
        return _WIDE
    if _attribute(left) != "stored_at":
        diff = left.get("-") if isinstance(left, dict) and set(left) == {"-"} else None
        if not isinstance(diff, dict) or _attribute(diff.get("right")) != "stored_at" or (base := _long(diff.get("left"))) is None:
            return _WIDE
        # base - stored_at OP number  <=>  stored_at FLIPPED(OP) base - number
        number, op = base - number, _FLIPPED[op]
    if op == "<=":
        return StoredWithin(until=number), True
    if op == "<":
        return StoredWithin(until=number - 1), True
    if op == ">=":
        return StoredWithin(since=number), True
    return StoredWithin(since=number + 1), True
