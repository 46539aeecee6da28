"""Study Date searches over the sealed index: a blind index per calendar day, narrowed before anything is decrypted.

The Study Date is sealed with the rest of a study's attributes; the index holds
in clear only its year (``study_year``) and, since ADR 0014, a keyed blind index
of the whole date (``study_date_token``, :class:`BlindField.STUDY_DATE`). A
single date is one token; a range (PS3.4 C.2.2.2.5) of at most
:data:`MAX_RANGE_DAYS` days is the tokens of its days, so a week's search reads
that week's studies only. Candidates are still decrypted and matched exactly
(:func:`dicomguard.core.matching.match_range`), so narrowing must never drop a
study that the exact match would keep; it only ever uses a study's token when its
stored date is itself a calendar date ``YYYYMMDD`` (the only values for which the
string comparison of ``match_range`` and calendar order agree), and every other
study — no date, a malformed one, or stored before the token existed — is narrowed
by its year alone, or not at all when it has none.

Leakage (ADR 0014): a day token shows which studies share a Study Date, as the
accession and patient indexes show which share those values (ADR 0001); it does
not show the date, and the storage time in clear (``created_at``) already tells
roughly when most studies were made.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, or_

from dicomguard.core.attributes import year_of
from dicomguard.crypto.blind_index import BlindField, BlindIndexer
from dicomguard.index.models import Study

MAX_RANGE_DAYS: Final = 366
"""Longest range searched by day tokens; a longer one is narrowed by years (it reads most of its years anyway)."""


def calendar_day(value: str | None) -> date | None:
    """The date of a DA value that is exactly ``YYYYMMDD`` (ASCII digits, a real day), else None."""
    if value is None or len(value) != 8 or not all("0" <= ch <= "9" for ch in value):
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def study_date_token(indexer: BlindIndexer, value: str | None) -> bytes | None:
    """The blind index stored for a study's date, or None when the date is not a calendar date."""
    return indexer.token(BlindField.STUDY_DATE, value) if value is not None and calendar_day(value) is not None else None


def study_date_condition(indexer: BlindIndexer, pattern: str | None) -> ColumnElement[Any] | None:
    """A condition on the ``studies`` table that every study whose Study Date matches ``pattern`` satisfies (None: no
    narrowing). Sound for ``match_range``'s string comparison: a stored value whose first four characters are digits
    and that compares at or above ``lo`` has a year at or above ``lo``'s, likewise for ``hi``; studies without a year
    are always candidates."""
    if not pattern:
        return None
    pattern = pattern.strip()
    if "-" not in pattern:
        year = year_of(pattern)
        if year is None:
            return None
        same_year = or_(Study.study_year.is_(None), Study.study_year == year)
        token = study_date_token(indexer, pattern)
        if token is None:
            return same_year  # an exact value matches only itself: its year is the pattern's first four characters
        return or_(Study.study_date_token == token, and_(Study.study_date_token.is_(None), same_year))
    lo, _, hi = pattern.partition("-")
    lo, hi = lo.strip(), hi.strip()
    y_lo, y_hi = year_of(lo), year_of(hi)
    by_year: list[ColumnElement[Any]] = []
    if y_lo is not None:
        by_year.append(Study.study_year >= y_lo)
    if y_hi is not None:
        by_year.append(Study.study_year <= y_hi)
    years = or_(Study.study_year.is_(None), and_(*by_year)) if by_year else None
    first, last = calendar_day(lo), calendar_day(hi)
    if first is None or last is None or last < first or (last - first).days >= MAX_RANGE_DAYS:
        return years
    days = [(first + timedelta(days=n)).strftime("%Y%m%d") for n in range((last - first).days + 1)]
    tokens = Study.study_date_token.in_([indexer.token(BlindField.STUDY_DATE, d) for d in days])
    legacy = Study.study_date_token.is_(None)
    return or_(tokens, and_(legacy, years) if years is not None else legacy)
