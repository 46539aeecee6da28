"""Removing an object's own identifying values from free text (PS3.15 E.3.3, E.3.4, E.3.5).

The clean options keep text (descriptions, SR ``TEXT`` items, annotation text) that
the basic profile would remove, on condition that identifying information is
removed from it. dicomguard cleans by *the object's own identifying values*: the
names, IDs, dates, accession numbers and institution strings found in its header
before de-identification (:func:`identifying_values`), in the spellings people and
devices use (``Last^First``, ``First Last``, ``Last, First``; ``20240305``,
``2024-03-05``, ``05.03.2024``, ``03/05/2024``, ``05-Mar-2024``). Every occurrence,
in any letter case, between word boundaries, becomes ``[removed]``.

What this does not do, stated plainly: it cannot find identifying text that is not
a value of the header (a relative's name, a phone number typed only into a
comment), nor a misspelt name. That is why the basic profile, without the clean
options, removes such text altogether, and why the research preset is for
releases under a data-use agreement rather than for publication.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

REPLACEMENT: Final = "[removed]"
_MIN_LENGTH: Final = 3
"""Shorter values (e.g. a Study ID of "1") would erase ordinary numbers and words from findings."""
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def name_variants(value: str) -> list[str]:
    """Spellings of a DICOM person name (PS3.5 6.2 PN: ``family^given^middle^prefix^suffix``)."""
    out: list[str] = []
    for group in value.split("="):  # alphabetic, ideographic, phonetic representations
        parts = [p.strip() for p in group.split("^")]
        family, given, middle = (parts + ["", "", ""])[:3]
        if not (family or given):
            continue
        out.append(group.strip().rstrip("^"))
        names = [n for n in (given, middle, family) if n]
        out += [" ".join(names), " ".join(n for n in (given, family) if n), f"{family}, {given}".strip(", ")]
        out += [" ".join(n for n in (family, given, middle) if n), " ".join(n for n in (family, given) if n)]
        out.append(f"{family}^{given}".strip("^"))
        out += [p for p in (family, given, middle) if len(p) >= _MIN_LENGTH]
    return out


def date_variants(value: str) -> list[str]:
    """Spellings of a DA value (or the date part of a DT) as dates are typed in text."""
    try:
        d = dt.date(int(value[0:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return [value] if len(value) >= _MIN_LENGTH else []
    y, m, day, mon = f"{d.year:04d}", f"{d.month:02d}", f"{d.day:02d}", _MONTHS[d.month - 1]
    return [
        f"{y}{m}{day}", f"{y}-{m}-{day}", f"{y}/{m}/{day}", f"{y}.{m}.{day}", f"{day}.{m}.{y}", f"{day}/{m}/{y}",
        f"{m}/{day}/{y}", f"{day}-{m}-{y}", f"{m}-{day}-{y}", f"{day}-{mon}-{y}", f"{day} {mon} {y}",
        f"{mon} {day}, {y}", f"{d.day} {mon} {y}",
    ]


@lru_cache(maxsize=4096)
def expand(kind: str, value: str) -> tuple[str, ...]:
    """The spellings of one identifying value; ``kind`` is ``name``, ``date`` or ``text``.

    Memoized: the slices of a series repeat the same names, IDs and dates thousands of times.
    """
    value = value.strip(" \x00")
    if not value:
        return ()
    if kind == "name":
        found = name_variants(value)
    elif kind == "date":
        found = date_variants(value[:8])
    else:
        found = [value]
    return tuple(v for v in found if len(v) >= _MIN_LENGTH)


def ordered(values: Iterable[str]) -> tuple[str, ...]:
    """Distinct values, longest first (so ``Doe, John`` is replaced before ``Doe``), then alphabetical."""
    return _ordered(frozenset(values))


@lru_cache(maxsize=64)
def _ordered(values: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(values, key=lambda v: (-len(v), v)))


class Scrubber:
    """Replaces identifying values in text; built once per distinct value set (see :func:`scrubber_for`)."""

    def __init__(self, values: tuple[str, ...]) -> None:
        self.values = values
        self._ascii = all(v.isascii() for v in values)
        if values:
            alternatives = "|".join(re.escape(v) for v in values)
            self._text: re.Pattern[str] | None = re.compile(
                rf"(?<![0-9A-Za-z])(?:{alternatives})(?![0-9A-Za-z])", re.IGNORECASE
            )
            encoded: set[bytes] = set()
            for v in values:
                for codec in ("utf-8", "latin-1"):
                    try:
                        encoded.add(v.encode(codec))
                    except UnicodeEncodeError:
                        pass
            byte_alternatives = b"|".join(re.escape(v) for v in sorted(encoded, key=len, reverse=True))
            # No boundaries here: this is only the quick "could there be a hit?" test on encoded bytes.
            self._bytes: re.Pattern[bytes] | None = re.compile(byte_alternatives, re.IGNORECASE)
        else:
            self._text = self._bytes = None

    def may_contain(self, raw: bytes) -> bool:
        """Cheap pre-test on encoded bytes (single-byte and UTF-8 character sets); False means "certainly not".

        Case folding of bytes is ASCII only, so with a non-ASCII identifying value the
        answer is always True and the caller decodes and scrubs the text itself.
        """
        if self._bytes is None:
            return False
        return not self._ascii or self._bytes.search(raw) is not None

    def scrub(self, text: str) -> str:
        """``text`` with every identifying value replaced by ``[removed]``."""
        if self._text is None:
            return text
        return self._text.sub(REPLACEMENT, text)


@lru_cache(maxsize=64)
def scrubber_for(values: tuple[str, ...]) -> Scrubber:
    """Compiled scrubbers are shared: the slices of one series carry the same identifying values."""
    return Scrubber(values)
