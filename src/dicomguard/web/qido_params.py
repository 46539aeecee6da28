"""QIDO-RS query parameters (PS3.18 8.3.4, 10.6.1.2): parsed and validated before anything is matched.

Every parameter is either a known query parameter (``limit``, ``offset``,
``fuzzymatching``, ``includefield``, and for study searches ``continuation``, the archive's own
extension: the opaque position a previous page's ``Link: rel="next"`` named) or a DICOM attribute the archive can match
at the requested level; anything else is refused with :class:`QueryError`
(400). Values are checked against the shape of their VR (UID, DA, TM, IS, CS
or text without control characters, backslashes or excessive length), so an
injection string is either a harmless literal or a 400, never an error deeper
in. Error messages name the parameter, never echo its value (it may be PHI).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum

from dicomguard.core.attributes import is_valid_uid
from dicomguard.web.dicomjson import resolve_attribute

MAX_LIMIT = 1000
"""Largest page a response holds; more results are announced by a Warning header (PS3.18 8.3.4.4)."""
MAX_OFFSET = 10_000_000
MAX_TEXT = 128
MAX_UIDS = 1000


class QueryError(ValueError):
    """A QIDO request the archive refuses to interpret (HTTP 400)."""


class Level(StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


class Kind(StrEnum):
    UID_LIST = "uid"
    DATE = "date"
    TIME = "time"
    PERSON = "pn"
    TEXT = "text"
    CODE_LIST = "cs"
    INTEGER = "int"


@dataclass(frozen=True)
class MatchKey:
    level: Level
    kind: Kind


# Matching keys supported by level (PS3.18 Table 10.6.1-5, -6, -7 required keys, plus a few useful ones).
MATCH_KEYS: dict[str, MatchKey] = {
    "PatientID": MatchKey(Level.STUDY, Kind.TEXT),
    "PatientName": MatchKey(Level.STUDY, Kind.PERSON),
    "PatientBirthDate": MatchKey(Level.STUDY, Kind.DATE),
    "StudyInstanceUID": MatchKey(Level.STUDY, Kind.UID_LIST),
    "AccessionNumber": MatchKey(Level.STUDY, Kind.TEXT),
    "StudyDate": MatchKey(Level.STUDY, Kind.DATE),
    "StudyTime": MatchKey(Level.STUDY, Kind.TIME),
    "ModalitiesInStudy": MatchKey(Level.STUDY, Kind.CODE_LIST),
    "StudyDescription": MatchKey(Level.STUDY, Kind.TEXT),
    "ReferringPhysicianName": MatchKey(Level.STUDY, Kind.PERSON),
    "StudyID": MatchKey(Level.STUDY, Kind.TEXT),
    "Modality": MatchKey(Level.SERIES, Kind.CODE_LIST),
    "SeriesInstanceUID": MatchKey(Level.SERIES, Kind.UID_LIST),
    "SeriesNumber": MatchKey(Level.SERIES, Kind.INTEGER),
    "SeriesDescription": MatchKey(Level.SERIES, Kind.TEXT),
    "SeriesDate": MatchKey(Level.SERIES, Kind.DATE),
    "SOPInstanceUID": MatchKey(Level.INSTANCE, Kind.UID_LIST),
    "SOPClassUID": MatchKey(Level.INSTANCE, Kind.UID_LIST),
    "InstanceNumber": MatchKey(Level.INSTANCE, Kind.INTEGER),
}

_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
# re.ASCII: DA, TM and IS values are ASCII digits (PS3.5 6.2); \d alone also matches Arabic-Indic, fullwidth ... digits.
_DATE = re.compile(r"^\d{8}$", re.ASCII)
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$", re.ASCII)
_INTEGER = re.compile(r"^[+-]?\d{1,10}$", re.ASCII)
_CODE = re.compile(r"^[A-Z0-9 _*?]{1,16}$")
_CONTINUATION = re.compile(r"^[A-Za-z0-9_=-]+$", re.ASCII)
MAX_CONTINUATION = 512


@dataclass
class QidoQuery:
    """A validated QIDO request: match values (by keyword), attributes asked for, paging."""

    matches: dict[str, str] = field(default_factory=dict)
    returns: set[str] = field(default_factory=set)
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False
    continuation: str | None = None
    """An opaque token from a previous page's ``Link: rel="next"`` (study searches only)."""

    def value(self, keyword: str) -> str | None:
        return self.matches.get(keyword)

    def search_key(self) -> str:
        """What decides which studies match, in one canonical form (a continuation is bound to it): the match keys
        and fuzzy matching, not the attributes returned nor the paging."""
        return json.dumps([sorted(self.matches.items()), self.fuzzy], separators=(",", ":"))


def _range(value: str, one: re.Pattern[str], name: str) -> str:
    lo, sep, hi = value.partition("-")
    if not sep:
        if not one.match(value):
            raise QueryError(f"{name} is not a valid value")
        return value
    if (not lo and not hi) or (lo and not one.match(lo)) or (hi and not one.match(hi)) or "-" in hi:
        raise QueryError(f"{name} is not a valid range")
    return value


def _uid_list(value: str, name: str) -> str:
    uids = [u.strip() for u in re.split(r"[,\\]", value)]
    if len(uids) > MAX_UIDS or not all(is_valid_uid(u) for u in uids):
        raise QueryError(f"{name} must be a UID or a comma-separated list of UIDs")
    return "\\".join(uids)


def validate_value(keyword: str, kind: Kind, value: str) -> str:
    """The value in the form the matcher takes (UID lists backslash-separated); raises QueryError."""
    if kind is Kind.UID_LIST:
        return _uid_list(value, keyword)
    if len(value) > MAX_TEXT or _FORBIDDEN_CHARS.search(value):
        raise QueryError(f"{keyword} holds characters or a length that no {keyword} value can have")
    if kind is Kind.DATE:
        return _range(value, _DATE, keyword)
    if kind is Kind.TIME:
        return _range(value, _TIME, keyword)
    if kind is Kind.INTEGER:
        if not _INTEGER.match(value):
            raise QueryError(f"{keyword} must be an integer")
        return value
    if kind is Kind.CODE_LIST:
        codes = value.split(",")
        if not all(_CODE.match(c) for c in codes):
            raise QueryError(f"{keyword} must be one or more codes (A-Z, 0-9, space, _, * and ?)")
        return value
    return value


def _integer_param(name: str, value: str, upper: int) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 9:  # "²".isdigit() is True and int("²") fails
        raise QueryError(f"{name} must be a non-negative integer")
    n = int(value)
    if n > upper:
        raise QueryError(f"{name} must be at most {upper}")
    return n


def parse_query(items: list[tuple[str, str]], levels: set[Level]) -> QidoQuery:
    """Validate QIDO query parameters for a resource whose results carry attributes of ``levels``."""
    q = QidoQuery()
    seen: set[str] = set()
    for name, value in items:
        if name == "continuation":
            if name in seen:
                raise QueryError("continuation is given more than once")
            seen.add(name)
            if levels != {Level.STUDY}:
                raise QueryError("continuation is supported for study searches only")
            if not (0 < len(value) <= MAX_CONTINUATION and _CONTINUATION.match(value)):
                raise QueryError("continuation is not a token this archive issued")
            q.continuation = value
            continue
        if name in ("limit", "offset", "fuzzymatching"):
            if name in seen:
                raise QueryError(f"{name} is given more than once")
            seen.add(name)
            if name == "limit":
                q.limit = _integer_param(name, value, 10**9)
            elif name == "offset":
                q.offset = _integer_param(name, value, MAX_OFFSET)
            else:
                if value not in ("true", "false"):
                    raise QueryError("fuzzymatching must be true or false")
                q.fuzzy = value == "true"
            continue
        if name == "includefield":
            for item in value.split(","):
                item = item.strip()
                if item == "all":
                    q.include_all = True
                    continue
                keyword = resolve_attribute(item) if len(item) <= 64 else None
                if keyword is None:
                    raise QueryError("includefield names an unknown attribute")
                q.returns.add(keyword)
            continue
        keyword = resolve_attribute(name) if len(name) <= 64 else None
        if keyword is None:
            raise QueryError("unknown query parameter" + (f" {name!r}" if name.isidentifier() and len(name) <= 64 else ""))
        key = MATCH_KEYS.get(keyword)
        if key is None or key.level not in levels:
            raise QueryError(f"matching on {keyword} is not supported for this resource")
        if keyword in q.matches or keyword in seen:
            raise QueryError(f"{keyword} is given more than once")
        seen.add(keyword)
        q.returns.add(keyword)
        if value == "":
            continue  # universal matching: only asks for the attribute (PS3.4 C.2.2.2.3)
        q.matches[keyword] = validate_value(keyword, key.kind, value)
    if q.continuation is not None and q.offset:
        raise QueryError("continuation and offset cannot be combined: the continuation is the position")
    return q
