"""Where devices burn text, known before reading a pixel: device rules and ultrasound regions.

PS3.15 E.3.1 (Clean Pixel Data Option) requires burned-in identifying text to
be removed and leaves the method open. Like the device-signature script of
RSNA's CTP pixel anonymizer, we first blank regions known per device model and
screen size, since OCR alone misses text. Two sources of rectangles, both
applied to every frame:

* :data:`DEVICE_RULES`: manufacturer, model and screen size to banner
  rectangles. These are our own starting rules for ultrasound and echo carts
  (the patient banner along the top of the screen), with plausible heights, not
  measured on the devices: they are to be refined from real objects of each
  model. A rule with a size matches only that size; a rule without one gives
  the banner as a fraction of the image height and applies to any size.
* :func:`outside_us_regions`: for ultrasound objects carrying a Sequence of
  Ultrasound Regions (0018,6011), everything outside the union of the region
  boxes (RegionLocationMinX0/MinY0/MaxX1/MaxY1, PS3.3 C.8.5.5.1) is blanked:
  the calibration says where the image is, and the text lives outside it.

Both over-blank rather than under-blank; OCR (``deid.ocr``) then looks for what
they missed.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from pydicom.dataset import Dataset


@dataclass(frozen=True)
class Rect:
    """A rectangle of pixels, ``x1`` and ``y1`` exclusive, named after the rule that produced it."""

    x0: int
    y0: int
    x1: int
    y1: int
    rule: str

    def clip(self, rows: int, cols: int) -> Rect | None:
        """This rectangle inside a ``rows`` x ``cols`` image, or ``None`` when nothing of it is inside."""
        x0, y0 = max(self.x0, 0), max(self.y0, 0)
        x1, y1 = min(self.x1, cols), min(self.y1, rows)
        if x0 >= x1 or y0 >= y1:
            return None
        return Rect(x0, y0, x1, y1, self.rule)


@dataclass(frozen=True)
class DeviceRule:
    """Banner bands of one device family.

    ``top`` and ``bottom`` are heights of full-width bands: whole pixels when
    ``size`` (Rows, Columns) is given, else a fraction of Rows.
    """

    name: str
    manufacturer: re.Pattern[str]
    model: re.Pattern[str]
    size: tuple[int, int] | None
    top: float
    bottom: float = 0

    def matches(self, manufacturer: str, model: str, rows: int, cols: int) -> bool:
        return (bool(self.manufacturer.search(manufacturer)) and bool(self.model.search(model))
                and (self.size is None or self.size == (rows, cols)))

    def rects(self, rows: int, cols: int) -> list[Rect]:
        scale = 1.0 if self.size is not None else float(rows)
        out = []
        if self.top:
            out.append(Rect(0, 0, cols, round(self.top * scale), self.name))
        if self.bottom:
            out.append(Rect(0, rows - round(self.bottom * scale), cols, rows, self.name))
        return [r for r in (x.clip(rows, cols) for x in out) if r is not None]


def _ci(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_GE = _ci(r"\bGE\b|GENERAL ELECTRIC")
_VIVID = _ci(r"VIVID\s*(E95|E90|E9|E80|S70|S60|T9|T8|IQ)\b")
_PHILIPS = _ci(r"\bPHILIPS\b")
_EPIQ = _ci(r"\b(EPIQ|AFFINITI)\b")
_SIEMENS = _ci(r"\bSIEMENS\b")
_ACUSON = _ci(r"\bACUSON\b|\bSC2000\b|\bSEQUOIA\b")

DEVICE_RULES: tuple[DeviceRule, ...] = (
    # Sized rules first: the first matching rule wins. Heights are our estimates, see the module docstring.
    DeviceRule("ge-vivid-800x600-top", _GE, _VIVID, (600, 800), top=60),
    DeviceRule("ge-vivid-1016x708-top", _GE, _VIVID, (708, 1016), top=70),
    DeviceRule("philips-epiq-1024x768-top", _PHILIPS, _EPIQ, (768, 1024), top=72),
    DeviceRule("siemens-acuson-1024x768-top", _SIEMENS, _ACUSON, (768, 1024), top=64),
    DeviceRule("ge-vivid-top", _GE, _VIVID, None, top=0.10),
    DeviceRule("philips-epiq-top", _PHILIPS, _EPIQ, None, top=0.095),
    DeviceRule("siemens-acuson-top", _SIEMENS, _ACUSON, None, top=0.085),
)


def device_rects(ds: Dataset, rows: int, cols: int) -> list[Rect]:
    """Banner rectangles of the first :data:`DEVICE_RULES` entry matching the object's device, if any."""
    manufacturer = str(ds.get("Manufacturer", "") or "")
    model = str(ds.get("ManufacturerModelName", "") or "")
    for rule in DEVICE_RULES:
        if rule.matches(manufacturer, model, rows, cols):
            return rule.rects(rows, cols)
    return []


def _int(item: Dataset, keyword: str) -> int | None:
    value = item.get(keyword)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def us_region_boxes(ds: Dataset, rows: int, cols: int) -> list[Rect]:
    """The boxes of the Sequence of Ultrasound Regions, clipped to the image; unusable items are left out."""
    boxes: list[Rect] = []
    for item in ds.get("SequenceOfUltrasoundRegions", None) or ():
        x0, y0 = _int(item, "RegionLocationMinX0"), _int(item, "RegionLocationMinY0")
        x1, y1 = _int(item, "RegionLocationMaxX1"), _int(item, "RegionLocationMaxY1")
        if None in (x0, y0, x1, y1):
            continue
        assert x0 is not None and y0 is not None and x1 is not None and y1 is not None
        # Max coordinates are inclusive in PS3.3 C.8.5.5.1.
        box = Rect(x0, y0, x1 + 1, y1 + 1, "us-region").clip(rows, cols)
        if box is not None:
            boxes.append(box)
    return boxes


def outside_us_regions(ds: Dataset, rows: int, cols: int) -> list[Rect]:
    """Rectangles covering everything outside the union of the ultrasound region boxes.

    Empty when the object is not ultrasound or has no usable region. The
    complement is cut into horizontal bands (between consecutive box edges) and,
    within each band, the runs of columns no box covers.
    """
    if str(ds.get("Modality", "") or "").upper() != "US":
        return []
    boxes = us_region_boxes(ds, rows, cols)
    if not boxes:
        return []
    edges = sorted({0, rows, *(b.y0 for b in boxes), *(b.y1 for b in boxes)})
    out: list[Rect] = []
    for top, bottom in itertools.pairwise(edges):
        covering = sorted((b.x0, b.x1) for b in boxes if b.y0 <= top and b.y1 >= bottom)
        x = 0
        for x0, x1 in covering:
            if x0 > x:
                out.append(Rect(x, top, x0, bottom, "outside-us-regions"))
            x = max(x, x1)
        if x < cols:
            out.append(Rect(x, top, cols, bottom, "outside-us-regions"))
    return out
