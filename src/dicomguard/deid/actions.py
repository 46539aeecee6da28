"""Table E.1-1 resolved for one option set: one concrete action per tag (PS3.15 E.1.1, E.3).

:class:`Plan` turns the profile table (:mod:`dicomguard.deid.profile_table`), the
option set and our keep lists (:mod:`dicomguard.deid.safe_attributes`) into a dict
from tag to :class:`Act`, computed once per :class:`~dicomguard.deid.engine.Deidentifier`
so the per-element cost of de-identification is one dict lookup.

How the codes are resolved, rule by rule:

1. *Options first.* "A requirement for an Option, when implemented, overrides any
   requirement for the underlying Profile" (PS3.15 E.1.1). When several selected
   options speak about one attribute, ``K`` wins over ``C``: the user asked to keep it.
2. *Combined codes.* The engine does not know each attribute's Type in each IOD, so it
   takes the choice that keeps the object conformant whatever that Type is, without
   keeping the original value: ``X/Z`` -> ``Z``; ``X/D``, ``Z/D``, ``X/Z/D`` -> ``D``;
   ``X/Z/U*`` -> keep the sequence and replace the UIDs inside (``U``). For sequences,
   ``D`` means "keep the items, each cleaned by these same rules", except where the
   items themselves would identify (:data:`_SEQUENCE_OVERRIDES`).
3. ``K`` on a sequence keeps it and cleans its items recursively (PS3.15 E.1.1:
   "cleaned for sequences").
4. ``C`` depends on where it comes from: under Retain Longitudinal Modified Dates it
   shifts dates (times are kept: the shift is whole days); elsewhere it scrubs text of
   the object's identifying values, replaces AE titles by keyed tokens and cleans
   sequences item by item. Binary values (OB, UN, overlays, curves) cannot be cleaned
   and fall back to the basic profile's action.
5. Patient ID and Patient's Name are replaced by keyed pseudonyms (allowed by ``Z``/``D``:
   "a non-zero length value that may be a dummy value").
6. Attributes outside the table: dates and times follow the date options (Table E.1-1
   note 4); UI values are replaced unless they name a class; keep-list attributes are
   kept (text scrubbed); everything else is removed. Private attributes are decided by
   the engine (:data:`Act.PRIVATE`).
"""

from __future__ import annotations

import enum
from typing import Final

from pydicom.datadict import dictionary_VR
from pydicom.tag import Tag

from dicomguard.deid.options import Option
from dicomguard.deid.profile_table import OPTION_COLUMNS, ROWS
from dicomguard.deid.safe_attributes import CLASS_UID_TAGS, SAFE_TAGS


class Act(enum.IntEnum):
    """What happens to one attribute."""

    KEEP = 0
    """Copy the element unchanged (its raw bytes are written back as read)."""
    REMOVE = 1
    RECURSE = 2
    """Sequence: keep it, clean every item by the same rules."""
    RECURSE_CLEAN = 3
    """Sequence under a clean option: like RECURSE, and free text inside is scrubbed rather than removed."""
    CONTENT = 4
    """SR content tree under Clean Structured Content (:mod:`dicomguard.deid.structured`)."""
    EMPTY = 5
    DUMMY = 6
    UID = 7
    SHIFT = 8
    """Dates and date-times move back by the patient's day shift; times are kept."""
    SCRUB = 9
    """Text kept with the object's identifying values replaced."""
    TEXT_IN_CLEAN = 10
    """Free text that exists only inside cleaned structures: scrubbed there, removed anywhere else."""
    PSEUDO_ID = 11
    PSEUDO_NAME = 12
    AE_TOKEN = 13
    DUMMY_CODE = 14
    """A code sequence that identifies a person: replaced by one dummy code item."""
    PRIVATE = 15


TEXT_VRS: Final = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
DATE_VRS: Final = frozenset({"DA", "DT", "TM"})
_BINARY_VRS: Final = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})

PATIENT_ID: Final = 0x00100020
PATIENT_NAME: Final = 0x00100010
TEXT_VALUE: Final = 0x0040A160
UNFORMATTED_TEXT_VALUE: Final = 0x00700006
CONTENT_SEQUENCE: Final = 0x0040A730
_CONTENT_LIKE: Final = frozenset({CONTENT_SEQUENCE, 0x00400555, 0x00400610})
"""Content Sequence, Acquisition Context Sequence, Specimen Preparation Sequence: SR-style content items."""

_SEQUENCE_OVERRIDES: Final[dict[int, Act]] = {
    # D on a sequence would keep the items; these items *are* the identifying content.
    CONTENT_SEQUENCE: Act.REMOVE,  # the whole report text; removal leaves a valid empty root container
    0x00700001: Act.REMOVE,  # Graphic Annotation Sequence: free text on images
    0x00401101: Act.DUMMY_CODE,  # Person Identification Code Sequence
    0x00080082: Act.EMPTY,  # Institution Code Sequence: the code meaning names the institution
}

_OVERLAY_DATA: Final = 0x3000
_OVERLAY_COMMENTS: Final = 0x4000


def vr_of(tag: int) -> str:
    """The dictionary VR of a tag (the first of ambiguous ones), ``UN`` for unknown tags."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def _parse_tag(text: str) -> int:
    return int(text.replace(",", ""), 16)


class Plan:
    """The resolved action of every tag for one option set."""

    def __init__(self, options: frozenset[Option]) -> None:
        self.options = options
        self._exact: dict[int, Act] = {}
        self._curve = self._overlay_data = self._overlay_comments = self._private = Act.REMOVE
        self.identity_tags: dict[int, str] = {}
        """Tags whose values are identifying and not retained: tag -> ``name``, ``date`` or ``text``."""
        for tag_text, _name, basic, cells in ROWS:
            option_code = self._option_code(cells)
            if tag_text == "gggg,eeee":
                self._private = Act.PRIVATE if option_code == "C" else Act.REMOVE
                continue
            if "x" in tag_text:
                # Curves and overlays are bitmaps or binary arrays: no clean exists for them, they go.
                act = Act.REMOVE
                if tag_text.endswith(",3000"):
                    self._overlay_data = act
                elif tag_text.endswith(",4000"):
                    self._overlay_comments = act
                else:
                    self._curve = act
                continue
            tag = _parse_tag(tag_text)
            vr = vr_of(tag)
            act = self._resolve(tag, vr, basic, option_code, cells)
            self._exact[tag] = act
            self._note_identity(tag, vr, act, cells)
        self.cache: dict[int, tuple[Act, str | None]] = {}
        """``(action, identity kind)`` by tag, filled on first use; read directly on the hot path."""

    def _option_code(self, cells: str) -> str:
        codes = {cells[i] for i, option in enumerate(OPTION_COLUMNS) if option in self.options and cells[i] != "."}
        if "K" in codes:
            return "K"
        return "C" if "C" in codes else ""

    def _resolve(self, tag: int, vr: str, basic: str, option_code: str, cells: str) -> Act:
        if tag == PATIENT_ID:
            return Act.PSEUDO_ID
        if tag == PATIENT_NAME:
            return Act.PSEUDO_NAME
        if option_code == "K":
            return Act.RECURSE if vr == "SQ" else Act.KEEP
        if option_code == "C":
            act = self._clean(tag, vr, cells)
            if act is not None:
                return act
        return self._basic(tag, vr, basic)

    def _clean(self, tag: int, vr: str, cells: str) -> Act | None:
        dates_column = OPTION_COLUMNS.index(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES)
        from_dates = Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options and cells[dates_column] == "C"
        if from_dates and vr in ("DA", "DT"):
            return Act.SHIFT
        if from_dates and vr in ("TM", "SH"):
            # Whole-day shifts leave times of day and the UTC offset valid (PS3.15 E.3.6 note 3).
            return Act.KEEP
        if vr == "SQ":
            return Act.CONTENT if tag in _CONTENT_LIKE else Act.RECURSE_CLEAN
        if vr in TEXT_VRS:
            return Act.SCRUB
        if vr == "AE":
            return Act.AE_TOKEN
        if vr == "CS":
            return Act.SCRUB
        return None  # binary: no clean exists, use the basic profile's action

    def _basic(self, tag: int, vr: str, basic: str) -> Act:
        if vr == "SQ":
            if basic in ("X/Z/U*", "D", "X/D", "Z/D", "X/Z/D"):
                return _SEQUENCE_OVERRIDES.get(tag, Act.RECURSE)
            if basic in ("Z", "X/Z"):
                return Act.EMPTY
            if basic == "K":
                return Act.RECURSE
            return Act.REMOVE
        if basic in ("U", "X/Z/U*") or (vr == "UI" and basic in ("D", "Z/D", "X/D", "X/Z/D")):
            return Act.UID
        if basic in ("D", "X/D", "Z/D", "X/Z/D"):
            return Act.DUMMY
        if basic in ("Z", "X/Z"):
            return Act.EMPTY
        if basic == "K":
            return Act.KEEP
        return Act.REMOVE

    def _note_identity(self, tag: int, vr: str, act: Act, cells: str) -> None:
        if act in (Act.KEEP, Act.RECURSE):
            return  # retained by an option: nothing to scrub it from
        if "C" in cells[OPTION_COLUMNS.index(Option.CLEAN_DESCRIPTORS) :]:
            return  # descriptions are what gets scrubbed, not what is scrubbed for
        if "C" in cells[OPTION_COLUMNS.index(Option.RETAIN_PATIENT_CHARACTERISTICS)]:
            return  # allergies, patient state: clinical text
        if vr == "PN":
            self.identity_tags[tag] = "name"
        elif vr in ("DA", "DT"):
            self.identity_tags[tag] = "date"
        elif vr in ("LO", "SH", "UC", "ST"):
            self.identity_tags[tag] = "text"

    @property
    def private_action(self) -> Act:
        """:data:`Act.PRIVATE` under Retain Safe Private, otherwise :data:`Act.REMOVE`."""
        return self._private

    def identity_kind(self, tag: int, vr: str | None = None) -> str | None:
        """How to spell the value of an identifying attribute (``name``, ``date``, ``text``), or None."""
        kind = self.identity_tags.get(tag)
        if kind is None and (vr or vr_of(tag)) == "PN" and tag not in self._exact:
            return "name"  # any person name outside the table identifies someone too
        return kind

    def action(self, tag: int) -> Act:
        """The action for a tag of a standard (even) group; private tags give :data:`Act.PRIVATE` or REMOVE."""
        return self.entry(tag)[0]

    def entry(self, tag: int) -> tuple[Act, str | None]:
        """The action and the identity kind of a tag, memoized."""
        entry = self.cache.get(tag)
        if entry is None:
            act = self._exact.get(tag)
            entry = (act if act is not None else self._compute(tag), self.identity_kind(tag))
            self.cache[tag] = entry
        return entry

    def _compute(self, tag: int) -> Act:
        group, element = tag >> 16, tag & 0xFFFF
        if group & 1:
            return self._private
        if element == 0:
            return Act.REMOVE  # group lengths are recomputed by the writer
        if group & 0xFF00 == 0x5000:
            return self._curve
        if group & 0xFF00 == 0x6000:
            if element == _OVERLAY_DATA:
                return self._overlay_data
            if element == _OVERLAY_COMMENTS:
                return self._overlay_comments
            return Act.REMOVE  # without its bitmap, an overlay's other attributes are meaningless
        if tag in (TEXT_VALUE, UNFORMATTED_TEXT_VALUE):
            return Act.TEXT_IN_CLEAN
        vr = vr_of(tag)
        if vr in DATE_VRS:
            if Option.RETAIN_LONGITUDINAL_FULL_DATES in self.options:
                return Act.KEEP
            if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.options:
                return Act.SHIFT if vr != "TM" else Act.KEEP
            return Act.REMOVE
        if vr == "UI":
            if tag in CLASS_UID_TAGS or Option.RETAIN_UIDS in self.options:
                return Act.KEEP
            return Act.UID
        if tag in SAFE_TAGS:
            if vr == "SQ":
                return Act.RECURSE
            return Act.SCRUB if vr in TEXT_VRS else Act.KEEP
        return Act.REMOVE


def describe(tag: int) -> str:
    """``(gggg,eeee)`` for notes and refusal reasons: tags, never values."""
    t = Tag(tag)
    return f"({t.group:04X},{t.element:04X})"
