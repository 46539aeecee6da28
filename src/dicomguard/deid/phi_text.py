"""Which OCR words are identifying: the object's own header values, dates and ID-like strings.

A word is identifying when (PS3.15 E.3.1 asks that burned-in identifying
information be removed; what counts is decided here):

* it matches a token of the identifying values the header engine hands over
  (names split into components at ``^``, ``=``, spaces and punctuation; IDs
  also kept whole), compared case-insensitively after folding the characters
  OCR confuses (0/O, 1/I/L, 5/S, 8/B) — equal, containing a token of 3 or more
  characters (OCR merges "DOE,JANE"), a 4+ character piece of a token of 6 or
  more (OCR splits an ID), or within edit distance 1 (2 for 9+ characters) of
  a token of 5 or more;
* it is part of a date in a common format (2024-03-05, 05/03/2024, 03.05.24,
  20240305, 05-Mar-2024, 5 March 2024, Mar 5, 2024), found on the whole text
  line so dates split into several words are caught;
* it looks like an identifier: 6 or more letters and digits with at least one
  digit (MRNs, accession numbers, times such as 10:23:45).

Matching errs towards blanking: a false match costs a few pixels of overlay,
a miss releases PHI. Short or fuzzy matches need some OCR confidence so that
noise read in the image itself does not blank clinical content.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from dicomguard.deid.ocr import Word

_FOLD = str.maketrans({"0": "O", "1": "I", "L": "I", "|": "I", "5": "S", "8": "B"})
_NON_ALNUM = re.compile(r"[^0-9A-Z]+")
_SPLIT = re.compile(r"[\s^=,;:/\\.\-_()'\"]+")

MIN_CONF_FUZZY = 30.0
"""Edit-distance, piece and two-character matches need this confidence (Tesseract's 0..100)."""
MIN_CONF_PATTERN = 40.0
"""ID-like words need this confidence: speckle read as text yields long low-confidence strings."""

_MONTHS = r"(?:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|SEPT|OCT|NOV|DEC)[A-Z]*\.?"
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_MONTH = r"(?:0?[1-9]|1[0-2])"
_YEAR = r"(?:19|20)\d{2}"
_SEP = r"\s?[-/.]\s?"
DATE_PATTERNS: tuple[re.Pattern[str], ...] = tuple(re.compile(p) for p in (
    rf"(?<!\d){_YEAR}{_SEP}{_MONTH}{_SEP}{_DAY}(?!\d)",  # 2024-03-05
    rf"(?<!\d){_DAY}{_SEP}{_MONTH}{_SEP}(?:{_YEAR}|\d{{2}})(?!\d)",  # 05/03/2024, 05.03.24
    rf"(?<!\d){_MONTH}{_SEP}{_DAY}{_SEP}(?:{_YEAR}|\d{{2}})(?!\d)",  # 03/05/2024
    rf"(?<!\d){_YEAR}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)",  # 20240305
    rf"(?<![0-9A-Z]){_DAY}[-\s./]?{_MONTHS}[-\s./,]*(?:{_YEAR}|\d{{2}})(?!\d)",  # 05-Mar-2024, 5 March 2024
    rf"(?<![A-Z]){_MONTHS}\s?{_DAY},?\s?{_YEAR}(?!\d)",  # Mar 5, 2024
))

_DIGIT_LIKE = str.maketrans({"O": "0", "I": "1", "L": "1", "|": "1", "S": "5", "B": "8"})


def _fold(text: str) -> str:
    return _NON_ALNUM.sub("", text.upper()).translate(_FOLD)


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, stopping early once it exceeds ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def _digits_in_context(text: str) -> str:
    """Letters OCR confuses with digits, turned into those digits where they touch a digit or a date separator."""
    chars = list(text)
    for i, ch in enumerate(chars):
        if ch in "OILSB|":
            before = chars[i - 1] if i > 0 else ""
            after = chars[i + 1] if i + 1 < len(chars) else ""
            if before.isdigit() or after.isdigit() or (before in "-/." and before) or (after in "-/." and after):
                chars[i] = ch.translate(_DIGIT_LIKE)
    return "".join(chars)


class IdentifyingText:
    """Decides which words of a text line are identifying, for one object's identifying values."""

    def __init__(self, identifying_values: Iterable[str]) -> None:
        tokens: set[str] = set()
        for value in identifying_values:
            if not value:
                continue
            text = str(value).upper()
            whole = _fold(text)
            if len(whole) >= 3:
                tokens.add(whole)
            for part in _SPLIT.split(text):
                folded = _fold(part)
                if len(folded) >= 2:
                    tokens.add(folded)
        self.tokens = frozenset(tokens)

    def _matches_token(self, word: Word) -> bool:
        w = _fold(word.text)
        if len(w) < 2:
            return False
        for t in self.tokens:
            if w == t:
                if len(t) >= 3 or word.conf >= MIN_CONF_FUZZY:
                    return True
                continue
            if len(t) >= 3 and t in w:
                return True
            if word.conf < MIN_CONF_FUZZY:
                continue
            if len(t) >= 6 and len(w) >= 4 and w in t:
                return True
            if len(t) >= 5 and len(w) >= 4 and _edit_distance(w, t, 2 if len(t) >= 9 else 1) <= (2 if len(t) >= 9 else 1):
                return True
        return False

    @staticmethod
    def _looks_like_id(word: Word) -> bool:
        raw = word.text.strip(".,;:()[]")
        alnum = _NON_ALNUM.sub("", raw.upper())
        return (word.conf >= MIN_CONF_PATTERN and len(alnum) >= 6 and any(c.isdigit() for c in alnum)
                and len(alnum) >= 0.7 * len(raw))

    def identifying(self, line: Sequence[Word]) -> list[bool]:
        """For the words of one text line, in reading order: which are identifying."""
        flags = [self._matches_token(w) or self._looks_like_id(w) for w in line]
        # Dates are searched on the line, since OCR splits "5 March 2024" into three words.
        starts: list[int] = []
        pos = 0
        for w in line:
            starts.append(pos)
            pos += len(w.text) + 1
        text = " ".join(w.text for w in line).upper()
        for candidate in {text, _digits_in_context(text)}:
            for pattern in DATE_PATTERNS:
                for m in pattern.finditer(candidate):
                    for i, start in enumerate(starts):
                        if start < m.end() and start + len(line[i].text) > m.start():
                            flags[i] = True
        return flags
