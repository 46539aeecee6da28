"""DICOM JSON model (PS3.18 Annex F) for responses: attributes, datasets, bulk data references.

Values are emitted exactly as the index or the verified object holds them.
Large binary values are never inlined from stored objects: they are replaced
by a ``BulkDataURI`` (PS3.18 F.2.6) that the client fetches through WADO-RS,
so a metadata response stays small and every byte of pixel data is delivered
through the same authorized, audited retrieve path.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr_element
from pydicom.tag import Tag

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]
BULK_THRESHOLD = 1024
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_INLINE_ALL = 2**62


def tag_hex(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


@functools.cache
def _tag_and_vr(keyword: str) -> tuple[str, str]:
    """A dictionary keyword's tag (8 hex digits) and VR: looked up once per keyword (the archive's own, a bounded set),
    not once per attribute of every answer."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return f"{tag:08X}", dictionary_VR(tag)


def attribute(keyword: str, *values: Any) -> tuple[str, JsonObject]:
    """``(tag, {"vr": ..., "Value": [...]})`` for a dictionary keyword; empty values give no ``Value``."""
    tag, vr = _tag_and_vr(keyword)
    vals = [v for v in values if v is not None and v != ""]
    if vr == "PN":
        vals = [{"Alphabetic": str(v)} for v in vals]
    elif vr in ("US", "UL", "SS", "SL", "IS"):
        vals = [int(v) for v in vals]
    obj: JsonObject = {"vr": vr}
    if vals:
        obj["Value"] = vals
    return tag, obj


def resolve_attribute(identifier: str) -> str | None:
    """A keyword or an 8-hex-digit tag (PS3.18 8.3.4.1 attributeID) -> the dictionary keyword; None if unknown."""
    if len(identifier) == 8 and all(c in "0123456789abcdefABCDEF" for c in identifier):
        return keyword_for_tag(Tag(int(identifier, 16))) or None
    if identifier.isidentifier() and tag_for_keyword(identifier) is not None:
        return identifier
    return None


def _deferred_binary_vr(ds: Dataset, tag: int) -> str | None:
    """The VR of a binary value over :data:`BULK_THRESHOLD` that is still unread (deferred); None otherwise.

    Lets a reader that defers large values (``read_header``) answer BulkDataURI
    without ever reading, hence copying, the value (e.g. Pixel Data).
    """
    raw = ds.get_item(tag, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.value is not None or raw.length <= BULK_THRESHOLD:
        return None
    elem = convert_raw_data_element(raw, encoding=None, ds=ds)
    if "or" in elem.VR:  # PS3.5 6.2.2 ambiguous VR (implicit VR data sets): resolved from the data set
        elem = correct_ambiguous_vr_element(elem, ds, raw.is_little_endian)
    return elem.VR if elem.VR in _BINARY_VRS else None


def dataset_to_json(ds: Dataset, bulk_uri: Callable[[int], str]) -> JsonObject:
    """Top-level binary values above :data:`BULK_THRESHOLD` become BulkDataURI references; the rest is inlined.

    File meta information (group 0002) is not part of the dataset and is not
    returned (PS3.18 F.2). An element whose stored value cannot be converted is
    returned with its VR and no value rather than failing the whole response.
    A binary value the reader deferred is referenced without being read.
    """
    out: JsonObject = {}
    for tag in list(ds.keys()):
        key = f"{int(tag):08X}"
        deferred_vr = _deferred_binary_vr(ds, tag)
        if deferred_vr is not None:
            out[key] = {"vr": deferred_vr, "BulkDataURI": bulk_uri(int(tag))}
            continue
        try:
            elem = ds[tag]
        except Exception:  # noqa: BLE001 - as below: never log values (PHI)
            log.debug("element %s not readable", key)
            out[key] = {"vr": getattr(ds.get_item(tag, keep_deferred=True), "VR", None) or "UN"}
            continue
        vr = elem.VR
        try:
            if isinstance(elem.value, (bytes, bytearray)) and len(elem.value) > BULK_THRESHOLD:
                out[key] = {"vr": vr, "BulkDataURI": bulk_uri(int(elem.tag))}
            else:
                out[key] = elem.to_json_dict(None, _INLINE_ALL)
        except Exception:  # noqa: BLE001 - one malformed value must not hide the rest; never log values (PHI)
            log.debug("element %s not convertible to DICOM JSON", key)
            out[key] = {"vr": vr}
    return out
