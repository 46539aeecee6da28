"""Attribute matching of DICOM queries (PS3.4 C.2.2.2).

Single value, universal (empty), wildcard (``*`` and ``?``), range (``A-B``,
``A-``, ``-B`` for DA/TM/DT) and UID list (backslash-separated) matching.
Person names match case-insensitively (PS3.4 C.2.2.2.1 allows it; most
archives do it, and clinicians expect it).
"""

from __future__ import annotations

import re
from functools import lru_cache


def has_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def literal_prefix(pattern: str) -> str:
    """The part of a wildcard pattern before its first wildcard."""
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=len(pattern))
    return pattern[:cut]


def literal_suffix(pattern: str) -> str:
    """The part of a wildcard pattern after its last wildcard."""
    cut = max(pattern.rfind("*"), pattern.rfind("?"))
    return pattern[cut + 1:]


@lru_cache(maxsize=1024)
def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL)


def match_value(pattern: str | None, value: str, *, person_name: bool = False) -> bool:
    """Single-value, universal or wildcard matching (PS3.4 C.2.2.2.1, .3, .4).

    Person names are compared in ``str.upper`` form on both sides, wildcards included: the very form their blind
    indexes are computed from (:func:`dicomguard.crypto.blind_index.normalize`), so narrowing candidates by a prefix
    or suffix index can never drop a name this match keeps (a case-insensitive regex would, e.g. for U+212A KELVIN
    SIGN, which matches ``k`` but is its own upper case).
    """
    if pattern is None or pattern == "" or pattern == "*":
        return True
    value = value.strip(" \x00")
    pattern = pattern.strip(" \x00")
    if person_name:
        value, pattern = value.rstrip("^=").upper(), pattern.rstrip("^=").upper()
    if has_wildcard(pattern):
        return _wildcard_regex(pattern).fullmatch(value) is not None
    return value == pattern


def match_range(pattern: str | None, value: str) -> bool:
    """Range matching of DA, TM and DT values (PS3.4 C.2.2.2.5); a single value matches exactly."""
    if not pattern:
        return True
    value = value.strip()
    if "-" not in pattern:
        return value == pattern.strip()
    lo, _, hi = pattern.partition("-")
    lo, hi = lo.strip(), hi.strip()
    if not value:
        return False
    return (not lo or value >= lo) and (not hi or value[: len(hi)] <= hi)


def uid_list(pattern: str | None) -> list[str]:
    """The UIDs a List of UID key names (PS3.4 C.2.2.2.2), in order; none for an absent or universal key."""
    return [u.strip() for u in pattern.split("\\") if u.strip()] if pattern else []


def match_uid_list(pattern: str | None, value: str) -> bool:
    """List of UID matching (PS3.4 C.2.2.2.2)."""
    if not pattern:
        return True
    return value in {p.strip() for p in pattern.split("\\")}
