"""Header de-identification: PS3.15 Annex E, Basic Application Level Confidentiality Profile and all options.

:meth:`Deidentifier.deidentify` returns a *new* data set; the input is never
modified. The guarantees, each enforced in one place:

* **Every attribute is decided.** Table E.1-1 (:mod:`~dicomguard.deid.profile_table`)
  and the options decide the attributes it lists, in the top-level data set and in
  every sequence item at any depth (PS3.15 E.1.1: "whether contained in the main
  dataset or embedded in an Item of a Sequence"). A standard attribute it does not
  list is kept only if it is on our keep list (:mod:`~dicomguard.deid.safe_attributes`),
  otherwise removed (default deny). Private attributes are removed unless the
  Retain Safe Private option keeps a listed one, and never from a block that holds
  an identifying value. File meta information is rebuilt (E.1.1 step 7).
* **Consistent, unlinkable replacements.** UIDs, the patient ID and name, and the
  date shift are keyed hashes of the originals (:mod:`~dicomguard.deid.pseudonyms`):
  references between objects survive, and another project key gives unrelated values.
* **Fail closed.** An object that cannot be released clean raises
  :class:`DeidRefused`: burned-in annotation without the Clean Pixel Data option
  (E.3.1), a pixel cleaner that fails, a malformed element, sequences nested beyond
  :data:`MAX_DEPTH`. Reasons name tags and options, never values.
* **Pixels (E.3.1).** Under Clean Pixel Data the pixel cleaner is called on the
  de-identified data set of every object that has pixel data, with the identifying
  values of the *original* header in the spellings text uses (names both ways round,
  IDs, dates in common formats): it blanks what it finds or raises DeidRefused.
  These values, like ``source_patient_id``, are PHI and stay in memory.
* **Provenance.** Patient Identity Removed, De-identification Method (and its code
  sequence, CID 7050) and Longitudinal Temporal Information Modified are set
  (:mod:`~dicomguard.deid.provenance`).

Speed: the resolved action of each tag is a dict lookup; unchanged elements are
copied as the raw bytes pydicom read, so neither pixel data nor most of the header
is decoded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomguard.deid import provenance, scrub
from dicomguard.deid.actions import PATIENT_ID, Act, Plan, describe, vr_of
from dicomguard.deid.codec import read_object, write_object
from dicomguard.deid.errors import DeidRefused
from dicomguard.deid.options import Option
from dicomguard.deid.pseudonyms import Pseudonymizer
from dicomguard.deid.safe_attributes import SAFE_PRIVATE
from dicomguard.deid.structured import keep_content_item

__all__ = [
    "DeidKeys",
    "DeidOutcome",
    "DeidRefused",
    "Deidentifier",
    "PixelCleaner",
    "read_object",
    "write_object",
]

PixelCleaner = Callable[[Dataset, tuple[str, ...]], object]
"""Cleans burned-in text from a de-identified data set's pixel data in place, or raises DeidRefused."""

MAX_DEPTH: Final = 16
"""Deeper sequence nesting than any standard IOD uses is refused rather than walked."""
KEY_BYTES: Final = 32
IMPLEMENTATION_CLASS_UID: Final = "2.25.140302060885726345099455604826086859937"
IMPLEMENTATION_VERSION_NAME: Final = "DICOMGUARD_DEID1"

_PIXEL_TAGS: Final = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_BURNED_IN: Final = 0x00280301
_MODALITY: Final = 0x00080060
_SOP_CLASS: Final = 0x00080016
_SOP_INSTANCE: Final = 0x00080018
_CHARSET: Final = 0x00080005
_TRANSFER_SYNTAX: Final = 0x00020010
_MEDIA_SOP_CLASS: Final = 0x00020002
_RISKY_SOP_CLASSES: Final = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image
        "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image (retired)
        "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image (retired)
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
    }
)
"""Image classes whose pixels routinely carry burned-in patient text (echo screens, screenshots)."""
_RISKY_MODALITIES: Final = frozenset({"US", "IVUS"})
_RAW_CODECS: Final = {
    "": "latin-1",
    "ISO_IR 6": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO 2022 IR 6": "latin-1",
    "ISO_IR 192": "utf-8",
}
"""Character sets whose text is decoded straight from the raw bytes (and searched before decoding)."""

_DUMMY_TEXT: Final = "ANONYMIZED"
_DUMMY: Final[dict[str, Any]] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "DS": "0",
    "IS": "0",
    "UR": "urn:dicomguard:removed",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "AT": 0,
}
_MAX_LENGTH: Final = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240, "CS": 16, "PN": 64 * 5}


@dataclass(frozen=True)
class DeidKeys:
    """The secret of one project. ``key`` is 32 bytes, derived by the caller (HKDF) per project."""

    project: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.project:
            raise ValueError("a de-identification project needs a name")
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"a de-identification key is {KEY_BYTES} bytes")


@dataclass
class DeidOutcome:
    """The result of one de-identification.

    ``source_patient_id`` and ``identifying_values`` are PHI from the original
    object: callers keep them in memory (to clean pixels, to record the mapping
    inside the encrypted archive) and never log or export them.
    """

    dataset: Dataset
    source_patient_id: str
    pseudonym_patient_id: str
    identifying_values: tuple[str, ...]
    notes: list[str] = field(default_factory=list)
    pixel_report: object = None
    """What the pixel cleaner returned (its report), when it ran."""


class _Object:
    """Per-object state of one de-identification run."""

    __slots__ = (
        "codec",
        "day_shift",
        "dropped_items",
        "encodings",
        "found",
        "notes",
        "patient_id",
        "pending",
        "private_blocks",
        "removed",
        "scrubber",
    )

    def __init__(self, patient_id: str, day_shift: int, charset: str) -> None:
        self.patient_id = patient_id
        self.encodings = convert_encodings(charset.split("\\") if charset else default_encoding)
        """Python codecs of the object's Specific Character Set, inherited by every sequence item."""
        self.day_shift = day_shift
        self.codec = _RAW_CODECS.get(charset)
        """Python codec of the character set when identifying values can be found in raw bytes, else None."""
        self.found: list[str] = []
        """Spellings of the identifying values met so far (see :mod:`dicomguard.deid.scrub`)."""
        self.pending: list[tuple[Dataset, Dataset, DataElement | RawDataElement, str]] = []
        """Text to scrub once every identifying value is known: (output, source, element, VR)."""
        self.private_blocks: list[tuple[Dataset, list[DataElement | RawDataElement]]] = []
        self.scrubber = scrub.Scrubber(())
        self.removed = 0
        self.dropped_items = 0
        self.notes: list[str] = []


class Deidentifier:
    """De-identifies objects for one project under one option set. Reusable and thread-safe."""

    def __init__(
        self,
        options: frozenset[Option],
        keys: DeidKeys,
        pixel_cleaner: PixelCleaner | None = None,
    ) -> None:
        self.options = frozenset(options)
        self._plan = Plan(self.options)
        self._pseudonyms = Pseudonymizer(keys.key, keys.project)
        self._provenance = provenance.Provenance(self.options)
        self._pixel_cleaner = pixel_cleaner
        self._clean_pixels = Option.CLEAN_PIXEL_DATA in self.options

    # -- public API -------------------------------------------------------------------------------------------

    def deidentify(self, ds: Dataset) -> DeidOutcome:
        """A de-identified copy of ``ds``; raises :class:`DeidRefused` if it cannot be released clean."""
        if self._clean_pixels and self._pixel_cleaner is None:
            raise DeidRefused("pixel cleaning requested but no pixel cleaner configured")
        has_pixels = any(tag in ds for tag in _PIXEL_TAGS)
        if has_pixels and not self._clean_pixels:
            _check_burned_in(ds)
        if _SOP_INSTANCE not in ds:
            raise DeidRefused("DICOM object without SOP Instance UID")
        patient_id = _first_string(ds, PATIENT_ID)
        charset = "\\".join(_strings(ds.get_item(_CHARSET))).upper()
        obj = _Object(patient_id, self._pseudonyms.day_shift(patient_id), charset)

        # 1. One walk over every attribute at every depth: each is decided by the resolved table, and the
        #    identifying values of the original header are gathered on the way, before anything is dropped.
        new = self._clean(ds, obj, clean_mode=False, depth=0)

        # 2. Free text kept by a clean option is scrubbed once all identifying values are known.
        values = scrub.ordered(obj.found)
        obj.scrubber = scrub.scrubber_for(values)
        self._finish(obj)

        # 3. Provenance and fresh file meta information.
        self._provenance.record(new)
        new.file_meta = _file_meta(ds, new)

        # 4. Burned-in text, by the pixel cleaner, on the already de-identified data set.
        pixel_report: object = None
        if has_pixels and self._clean_pixels:
            assert self._pixel_cleaner is not None
            try:
                pixel_report = self._pixel_cleaner(new, values)
            except DeidRefused:
                raise
            except Exception as exc:  # noqa: BLE001 - a cleaner that fails in any way leaves pixels unclean
                raise DeidRefused(f"pixel cleaning failed ({type(exc).__name__})") from None
            new.BurnedInAnnotation = "NO"
            obj.notes.append("pixel data cleaned (clean-pixel-data)")

        notes = obj.notes
        if obj.removed:
            notes.insert(0, f"{obj.removed} attributes removed")
        if obj.dropped_items:
            notes.append(f"{obj.dropped_items} structured content items removed (person names, identities)")
        return DeidOutcome(new, patient_id, self._pseudonyms.patient_id(patient_id), values, notes, pixel_report)

    def deidentify_bytes(self, data: bytes) -> tuple[bytes, DeidOutcome]:
        """Read Part 10 bytes, de-identify, write Part 10 bytes; every failure is a :class:`DeidRefused`."""
        outcome = self.deidentify(read_object(data))
        return write_object(outcome.dataset), outcome

    # -- the data set walk ------------------------------------------------------------------------------------

    def _clean(self, src: Dataset, obj: _Object, clean_mode: bool, depth: int) -> Dataset:
        """The cleaned copy of one data set (the top level or a sequence item)."""
        if depth > MAX_DEPTH:
            raise DeidRefused(f"sequences nested deeper than {MAX_DEPTH} levels")
        plan = self._plan
        cache = plan.cache
        # Built as a plain dict and handed to Dataset(): elements are placed as read, without the
        # per-element checks of Dataset.__setitem__, and raw elements stay undecoded.
        elements: dict[BaseTag, DataElement | RawDataElement] = {}
        privates: list[DataElement | RawDataElement] = []
        to_scrub: list[tuple[DataElement | RawDataElement, str]] = []
        tag: BaseTag | None = None
        try:
            for elem in src.elements():
                tag = elem.tag
                if tag & 0x10000:
                    privates.append(elem)
                    continue
                entry = cache.get(tag)
                if entry is None:
                    entry = plan.entry(tag)
                act, kind = entry
                if kind is not None:
                    self._gather(src, elem, kind, obj)
                if act is Act.KEEP:
                    elements[tag] = elem if elem.is_raw else _detach(elem)
                elif act is Act.REMOVE:
                    obj.removed += 1
                    if elem.VR == "SQ" or (elem.VR is None and vr_of(tag) == "SQ"):
                        self._gather_items(src[tag].value, obj, depth + 1)
                elif act is Act.SCRUB or (act is Act.TEXT_IN_CLEAN and clean_mode):
                    elements[tag] = elem if elem.is_raw else _detach(elem)  # replaced in _finish if needed
                    to_scrub.append((elem, _element_vr(elem)))
                else:
                    new = self._apply(act, src, elem, obj, clean_mode, depth)
                    if new is None:
                        obj.removed += 1
                    else:
                        elements[tag] = new
            tag = None
        except DeidRefused:
            raise
        except Exception as exc:  # noqa: BLE001 - malformed values raise many types; the object is refused
            where = describe(tag) if tag is not None else "an attribute"
            raise DeidRefused(f"cannot de-identify attribute {where} ({type(exc).__name__})") from None
        out = Dataset(elements, parent_encoding=obj.encodings)
        implicit, little = src.original_encoding
        out.set_original_encoding(implicit, little, src.original_character_set)
        obj.pending += [(out, src, elem, vr) for elem, vr in to_scrub]
        if privates:
            obj.private_blocks.append((out, privates))
        return out

    def _apply(
        self, act: Act, src: Dataset, elem: DataElement | RawDataElement, obj: _Object, clean_mode: bool, depth: int
    ) -> DataElement | RawDataElement | None:
        tag = elem.tag
        vr = _element_vr(elem)
        if act is Act.UID:
            return DataElement(tag, "UI", [self._uid(v) for v in _strings(elem)] or None)
        if act is Act.SHIFT:
            shifted = [_shift(v, obj.day_shift, vr) for v in _strings(elem)]
            return DataElement(tag, vr, shifted or None)
        if act in (Act.RECURSE, Act.RECURSE_CLEAN, Act.CONTENT):
            items = []
            inner_clean = clean_mode or act is not Act.RECURSE
            for item in src[tag].value or ():
                if act is Act.CONTENT and not keep_content_item(item, self.options):
                    obj.dropped_items += 1
                    self._gather_items([item], obj, depth + 1)  # its names are still scrubbed from other text
                    continue
                items.append(self._clean(item, obj, inner_clean, depth + 1))
            return DataElement(tag, "SQ", Sequence(items))
        if vr == "SQ":
            # Emptied, dummied or dropped: its items' identifying values are still needed elsewhere.
            self._gather_items(src[tag].value, obj, depth + 1)
        if act is Act.EMPTY:
            return DataElement(tag, vr, Sequence() if vr == "SQ" else None)
        if act is Act.DUMMY:
            return DataElement(tag, vr, _dummy(vr))
        if act is Act.PSEUDO_ID:
            return DataElement(tag, "LO", self._pseudonyms.patient_id(_first_string_of(elem)))
        if act is Act.PSEUDO_NAME:
            return DataElement(tag, "PN", self._pseudonyms.patient_name(obj.patient_id))
        if act is Act.AE_TOKEN:
            return DataElement(tag, "AE", [self._pseudonyms.ae_title(v) for v in _strings(elem)] or None)
        if act is Act.DUMMY_CODE:
            item = Dataset()
            item.CodeValue = "REMOVED"
            item.CodingSchemeDesignator = "99DICOMGUARD"
            item.CodeMeaning = "removed by de-identification"
            return DataElement(tag, "SQ", Sequence([item]))
        return None  # Act.TEXT_IN_CLEAN outside a cleaned structure, and anything unforeseen: default deny

    def _uid(self, value: str) -> str:
        if not value or value.startswith("1.2.840.10008."):
            return value  # a standard class, transfer syntax or well-known instance: not an identifier
        return self._pseudonyms.uid(value)

    # -- identifying values -----------------------------------------------------------------------------------

    def _gather(self, src: Dataset, elem: DataElement | RawDataElement, kind: str, obj: _Object) -> None:
        raw = elem.value if elem.is_raw else None
        if isinstance(raw, bytes) and obj.codec is not None:
            text = raw.decode(obj.codec, "replace").strip(" \x00")
            values = [v.strip(" \x00") for v in text.split("\\")] if text else []
        else:
            values = _strings(src[elem.tag])
        for value in values:
            obj.found += scrub.expand(kind, value)

    def _gather_items(self, items: Iterable[Dataset] | None, obj: _Object, depth: int) -> None:
        """Identifying values of items that are not kept (removed sequences, dropped SR content items)."""
        if depth > MAX_DEPTH:
            raise DeidRefused(f"sequences nested deeper than {MAX_DEPTH} levels")
        plan = self._plan
        for item in items or ():
            for elem in item.elements():
                tag = elem.tag
                if tag & 0x10000:
                    continue
                if elem.VR == "SQ" or (elem.VR is None and vr_of(tag) == "SQ"):
                    self._gather_items(item[tag].value, obj, depth + 1)
                    continue
                kind = plan.entry(tag)[1]
                if kind is not None:
                    self._gather(item, elem, kind, obj)

    # -- after the walk: scrubbing and private blocks -----------------------------------------------------------

    def _finish(self, obj: _Object) -> None:
        tag: BaseTag | None = None
        try:
            for out, src, elem, vr in obj.pending:
                tag = elem.tag
                cleaned = self._scrub(src, elem, vr, obj)
                if cleaned is not elem:
                    out[tag] = cleaned
            tag = None
            for out, privates in obj.private_blocks:
                self._privates(privates, out, obj)
        except DeidRefused:
            raise
        except Exception as exc:  # noqa: BLE001 - malformed values raise many types; the object is refused
            where = describe(tag) if tag is not None else "a private block"
            raise DeidRefused(f"cannot de-identify attribute {where} ({type(exc).__name__})") from None

    def _scrub(
        self, src: Dataset, elem: DataElement | RawDataElement, vr: str, obj: _Object
    ) -> DataElement | RawDataElement:
        """``elem`` itself when nothing identifying is in it, else a scrubbed copy (PS3.15 E.3.3-E.3.5)."""
        scrubber = obj.scrubber
        if not scrubber.values:
            return elem
        if elem.is_raw and obj.codec is not None:
            raw = elem.value
            if not raw or not scrubber.may_contain(raw):
                return elem
        value = src[elem.tag].value
        if value is None or value == "":
            return elem
        values = [str(v) for v in value] if isinstance(value, MultiValue | list) else [str(value)]
        cleaned = [scrubber.scrub(v) for v in values]
        if cleaned == values:
            return elem
        if vr == "CS":
            return DataElement(elem.tag, vr, None)  # a code string cannot hold "[removed]": empty it
        limit = _MAX_LENGTH.get(vr)
        if limit is not None:
            cleaned = [v[:limit] for v in cleaned]
        return DataElement(elem.tag, vr, cleaned if len(cleaned) > 1 else cleaned[0])

    def _privates(self, elems: list[DataElement | RawDataElement], out: Dataset, obj: _Object) -> None:
        """PS3.15 E.3.10: listed safe elements of blocks that hold no identifying value; all else removed."""
        if self._plan.private_action is not Act.PRIVATE:
            obj.removed += len(elems)
            return
        creators: dict[tuple[int, int], DataElement | RawDataElement] = {}
        blocks: dict[tuple[int, int], list[DataElement | RawDataElement]] = {}
        for elem in elems:
            group, element = elem.tag >> 16, elem.tag & 0xFFFF
            if 0x10 <= element <= 0xFF:
                creators[(group, element)] = elem
            elif element >= 0x1000:
                blocks.setdefault((group, element >> 8), []).append(elem)
        kept = 0
        for (group, block), members in sorted(blocks.items()):
            creator_elem = creators.get((group, block))
            if creator_elem is None:
                continue
            creator = _first_string_of(creator_elem)
            safe = [e for e in members if (creator, group, e.tag & 0xFF) in SAFE_PRIVATE]
            if not safe:
                continue
            # A block that holds an identifying value anywhere is not trusted, whatever its creator claims.
            if any(_identifying_bytes(e, obj) for e in members):
                obj.notes.append(f"private block ({group:04X},{block:04X}) removed: it holds an identifying value")
                continue
            out[creator_elem.tag] = creator_elem if creator_elem.is_raw else _detach(creator_elem)
            for e in safe:
                out[e.tag] = e if e.is_raw else _detach(e)
            kept += len(safe)
        obj.removed += len(elems) - kept


# -- helpers --------------------------------------------------------------------------------------------------------


def _identifying_bytes(elem: DataElement | RawDataElement, obj: _Object) -> bool:
    value = elem.value
    if value is None:
        return False
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
    if obj.patient_id and obj.patient_id.encode("utf-8", "replace") in raw:
        return True
    if not obj.scrubber.may_contain(raw):
        return False
    text = raw.decode("latin-1")
    return obj.scrubber.scrub(text) != text


def _check_burned_in(ds: Dataset) -> None:
    """PS3.15 E.3.1: without the Clean Pixel Data option, burned-in text must not be there at all."""
    burned = _first_string(ds, _BURNED_IN).upper()
    if burned == "YES":
        raise DeidRefused(
            "the image has burned-in annotation (Burned In Annotation = YES); de-identify it with the "
            "clean-pixel-data option"
        )
    if burned == "NO":
        return
    sop_class = _first_string(ds, _SOP_CLASS)
    modality = _first_string(ds, _MODALITY).upper()
    if sop_class in _RISKY_SOP_CLASSES or modality in _RISKY_MODALITIES:
        raise DeidRefused(
            "burned-in annotation is unknown for an ultrasound or secondary capture image; de-identify it "
            "with the clean-pixel-data option"
        )


def _file_meta(src: Dataset, new: Dataset) -> FileMetaDataset:
    old = getattr(src, "file_meta", None)
    syntax = old.get(_TRANSFER_SYNTAX) if old is not None else None
    if syntax is None:
        implicit, _little = src.original_encoding
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    else:
        syntax = syntax.value
    sop_class = _first_string(new, _SOP_CLASS) or (_first_string(old, _MEDIA_SOP_CLASS) if old is not None else "")
    # Only what PS3.10 7.1 requires and the de-identifier's own identity (PS3.15 E.1.1 step 7): source,
    # sending and receiving AE titles and private meta elements of the original are not carried over.
    return FileMetaDataset(
        {
            BaseTag(0x00020002): DataElement(0x00020002, "UI", sop_class),
            BaseTag(0x00020003): DataElement(0x00020003, "UI", _first_string(new, _SOP_INSTANCE)),
            BaseTag(_TRANSFER_SYNTAX): DataElement(_TRANSFER_SYNTAX, "UI", syntax),
            BaseTag(0x00020012): DataElement(0x00020012, "UI", IMPLEMENTATION_CLASS_UID),
            BaseTag(0x00020013): DataElement(0x00020013, "SH", IMPLEMENTATION_VERSION_NAME),
        }
    )


def _element_vr(elem: DataElement | RawDataElement) -> str:
    vr = elem.VR
    if vr and vr != "UN" and " or " not in vr:
        return vr
    return vr_of(elem.tag)


def _strings(elem: DataElement | RawDataElement | None) -> list[str]:
    """The values of an element with a single-byte character repertoire (UI, DA, DT, TM, CS, AE...) or any text."""
    if elem is None:
        return []
    value = elem.value
    if value is None:
        return []
    if isinstance(value, bytes):
        text = value.decode("latin-1").strip(" \x00")
        return [v.strip(" \x00") for v in text.split("\\")] if text else []
    if isinstance(value, MultiValue | list | tuple):
        return [str(v).strip(" \x00") for v in value]
    text = str(value).strip(" \x00")
    return [text] if text else []


def _first_string_of(elem: DataElement | RawDataElement) -> str:
    values = _strings(elem)
    return values[0] if values else ""


def _first_string(ds: Dataset, tag: int) -> str:
    """The first value of a string attribute; ASCII raw values are read without decoding the element."""
    elem = ds.get_item(tag)
    if elem is None:
        return ""
    if elem.is_raw and not (isinstance(elem.value, bytes) and elem.value.isascii()):
        elem = ds[tag]
    return _first_string_of(elem)


def _detach(elem: DataElement) -> DataElement:
    """A copy whose mutable value is not shared with the input data set (which must stay unmodified)."""
    value = elem.value
    if isinstance(value, MultiValue | list):
        value = list(value)
    return DataElement(elem.tag, elem.VR, value, is_undefined_length=elem.is_undefined_length)


def _dummy(vr: str) -> Any:
    if vr in _DUMMY:
        return _DUMMY[vr]
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return b"\x00\x00"
    return _DUMMY_TEXT


def _shift(value: str, days: int, vr: str) -> str:
    """Move a DA or the date part of a DT back by ``days``; keep the time and offset of a DT (PS3.15 E.3.6)."""
    digits = len(value) - len(value.lstrip("0123456789"))
    if vr == "DA" and (digits != 8 or len(value) != 8):
        return ""  # DA is exactly YYYYMMDD (PS3.5 6.2); anything else cannot be shifted, so it is not kept
    precision = 8 if digits >= 8 else 6 if digits >= 6 else 4 if digits >= 4 else 0
    if precision == 0:
        return ""
    year = int(value[0:4])
    month = int(value[4:6]) if precision >= 6 else 1
    day = int(value[6:8]) if precision >= 8 else 1
    try:
        shifted = dt.date(year, month, day) - dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return ""  # not a real date: it cannot be shifted, so it is not kept
    text = f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}"[:precision]
    return text + value[precision:] if vr == "DT" else text

