"""Burned-in text removal: the Clean Pixel Data Option of PS3.15 E.3.1.

Guarantee: when :func:`clean_pixels` returns, OCR reads no identifying text
(``deid.phi_text``) in the cleaned static overlay of the object nor in any frame
it sampled, and every pixel outside the reported rectangles is bit-identical to
the input. Otherwise it raises :class:`DeidRefused` and the caller must not
release the object. It does not promise that frames it did not read are free of
text that appears only in them (see step 3).

The pass, step by step:

1. Open the pixel data as frames (``deid.frames``): native encodings and RLE
   Lossless only; anything else is refused.
2. Blank what is known before reading: the device's banner (``deid.signatures``
   device rules) and, for ultrasound, everything outside the Sequence of
   Ultrasound Regions. Applied to every frame.
3. Choose what to read. Echo cart overlays are static: the pixels equal in every
   frame form a *composite* (the rest set to black), read once for all frames.
   Text that changes between frames is looked for in a bounded sample: first,
   middle and last frame, plus the frames where a tile of the image suddenly
   holds many more bright sharp edges than it does in the other frames
   (:func:`_sample_frames`). A frame outside the sample whose text is neither
   static nor a sudden change of this kind is not read.
4. Read (OCR, ``deid.ocr``), decide which words are identifying
   (``deid.phi_text``), blank their padded boxes in every frame, and the whole
   text line when the word sits in a top or bottom banner.
5. Residual check: read the cleaned composite and sampled frames again (an image
   whose pixels did not change since its last reading is not read twice: OCR is
   deterministic). Anything identifying left is blanked and read once more; if
   it is still readable then, the object is refused, naming the frame.

Blanking is done with numpy over all frames at once; only OCR is per image.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from pydicom.dataset import Dataset

from dicomguard.deid import ocr
from dicomguard.deid.errors import DeidRefused
from dicomguard.deid.frames import NativeFrames, open_frames
from dicomguard.deid.phi_text import IdentifyingText
from dicomguard.deid.signatures import (
    Rect,
    device_rects,
    outside_us_regions,
    us_region_boxes,
)

__all__ = ["BlankedRegion", "PixelReport", "RegionSource", "clean_pixels"]

COMPOSITE = -1
"""Label of the composite image of static pixels, in place of a frame index."""

STATIC_LEVELS = (96,)
"""Thresholds (of 0..255 brightness) for the composite: its moving content is black, so dim text shows."""
FRAME_LEVELS = (128, 192)
"""Thresholds for whole frames: text over bright tissue needs the high one, dim text the low one."""
SINGLE_FRAME_LEVELS = (96, 160, 224)
"""A single frame has no composite to share the work: read at three levels."""

BANNER_FRACTION = 0.15
"""Top and bottom bands of this share of the rows are banners: an identifying word there blanks its whole line."""

MAX_CLEAN_ROUNDS = 2
"""OCR-driven blanking rounds before the final reading must come back empty."""

CROP_MARGIN = 16
"""Pixels kept around the ink of an image when it is cropped for OCR (Tesseract needs some white margin)."""

TILE = 32
EDGE_STEP = 96
EDGE_BRIGHT = 160
OUTLIER_Z = 6.0
OUTLIER_MIN = 12
"""Frame sampling (:func:`_sample_frames`): a tile of TILE x TILE pixels is sudden text in a frame when its count
of sharp (brightness step >= EDGE_STEP) bright (>= EDGE_BRIGHT) edges, on every second row, exceeds the tile's
median over all frames by OUTLIER_Z robust deviations and by at least OUTLIER_MIN edges."""


class RegionSource(StrEnum):
    """What a blanked rectangle came from."""

    SIGNATURE = "signature"
    """A device rule (manufacturer, model, screen size)."""
    US_REGIONS = "us-regions"
    """Outside the Sequence of Ultrasound Regions."""
    OCR = "ocr"
    """Identifying text read by OCR."""


@dataclass(frozen=True)
class BlankedRegion:
    """A rectangle set to black in every frame (``x1``, ``y1`` exclusive)."""

    source: RegionSource
    rule: str
    x0: int
    y0: int
    x1: int
    y1: int


@dataclass(frozen=True)
class PixelReport:
    """What one :func:`clean_pixels` call did. Contains no PHI (no OCR text)."""

    frames: int
    """Frames processed (all of them were blanked alike)."""
    regions: tuple[BlankedRegion, ...] = ()
    frames_checked: tuple[int, ...] = ()
    """Frames whose cleaned pixels the final (residual) reading covered, besides the composite: the sampled
    frames, or every frame when all frames are identical (the composite is then each of them)."""
    composite_checked: bool = False
    ocr_words: int = 0
    """Words OCR read in the first reading (after known regions were blanked), in all images and thresholds."""
    identifying_found: int = 0
    """Identifying words found, once per place on the screen (however many images or readings showed it)."""
    identifying_removed: int = 0
    """Of those, the ones inside a rectangle blanked because of OCR: all of them when the call returns."""
    ocr_passes: int = 0
    """Readings that had images to read (an image unchanged since its last reading is not read again)."""
    seconds: float = 0.0

    def count(self, source: RegionSource) -> int:
        return sum(1 for r in self.regions if r.source == source)

    @property
    def signature_regions(self) -> int:
        """Rectangles known before reading: device rules and outside the ultrasound regions."""
        return self.count(RegionSource.SIGNATURE) + self.count(RegionSource.US_REGIONS)

    @property
    def ocr_regions(self) -> int:
        return self.count(RegionSource.OCR)


@dataclass(frozen=True)
class _Found:
    label: int
    word: ocr.Word
    """Box in frame coordinates."""
    line: tuple[ocr.Word, ...]


@dataclass
class _Reader:
    """Reads the composite and sampled frames, remembering what each image looked like when last read."""

    frames: NativeFrames
    static: np.ndarray | None
    plan: list[tuple[int, tuple[int, ...]]]
    matcher: IdentifyingText
    scale: int
    cache: dict[tuple[int, int], tuple[tuple[int, int], np.ndarray, list[ocr.Word]]] = field(default_factory=dict)
    passes: int = 0

    def _image(self, label: int) -> np.ndarray:
        if label == COMPOSITE:
            assert self.static is not None
            lum = self.frames.luminance(self.frames.pixels[0])
            return np.where(self.static, lum, np.uint8(0))
        return self.frames.luminance(self.frames.pixels[label])

    def read(self) -> tuple[list[_Found], int]:
        """Identifying words in the current pixels, and how many words were read in all."""
        pending: list[tuple[int, int, tuple[int, int], np.ndarray]] = []
        words: list[tuple[int, ocr.Word]] = []
        for label, levels in self.plan:
            lum = self._image(label)
            for level in levels:
                ink = lum >= level
                rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
                if rows.size == 0:
                    self.cache[(label, level)] = ((0, 0), np.zeros((0, 0), np.uint8), [])
                    continue
                y0, y1 = max(int(rows[0]) - CROP_MARGIN, 0), min(int(rows[-1]) + 1 + CROP_MARGIN, lum.shape[0])
                x0, x1 = max(int(cols[0]) - CROP_MARGIN, 0), min(int(cols[-1]) + 1 + CROP_MARGIN, lum.shape[1])
                crop = lum[y0:y1, x0:x1]
                cached = self.cache.get((label, level))
                if cached is not None and cached[0] == (x0, y0) and np.array_equal(cached[1], crop):
                    words += [(label, w) for w in cached[2]]
                    continue
                pending.append((label, level, (x0, y0), crop))
        if pending:
            self.passes += 1
            read = ocr.read_words([ocr.binarize(crop, level, self.scale) for _, level, _, crop in pending], self.scale)
            per_image: list[list[ocr.Word]] = [[] for _ in pending]
            for w in read:
                label, level, (x0, y0), crop = pending[w.image]
                per_image[w.image].append(ocr.Word(w.image, w.text, w.conf, w.x0 + x0, w.y0 + y0, w.x1 + x0,
                                                   w.y1 + y0, w.line))
            for (label, level, offset, crop), image_words in zip(pending, per_image):
                self.cache[(label, level)] = (offset, crop.copy(), image_words)
                words += [(label, w) for w in image_words]
        return self._identifying(words), len(words)

    def _identifying(self, words: list[tuple[int, ocr.Word]]) -> list[_Found]:
        lines: dict[tuple[int, int, tuple[int, int, int]], list[ocr.Word]] = {}
        for label, w in words:
            lines.setdefault((label, w.image, w.line), []).append(w)
        found: list[_Found] = []
        for (label, _, _), line in lines.items():
            line.sort(key=lambda w: w.x0)
            for w, hit in zip(line, self.matcher.identifying(line)):
                if hit:
                    found.append(_Found(label, w, tuple(line)))
        return found


def _found_rects(found: list[_Found], rows: int, cols: int, image_boxes: list[Rect]) -> list[Rect]:
    """Padded word boxes; whole lines, across the image, for words in a top or bottom banner.

    A word inside an ultrasound region box (``image_boxes``) is in the image,
    not in a banner, however low or high it sits.
    """
    rects: list[Rect] = []
    for f in found:
        w = f.word
        pad = max(3, math.ceil(0.3 * (w.y1 - w.y0)))
        rects.append(Rect(w.x0 - pad, w.y0 - pad, w.x1 + pad, w.y1 + pad, "ocr-word"))
        cx, cy = (w.x0 + w.x1) / 2, (w.y0 + w.y1) / 2
        in_image = any(b.x0 <= cx < b.x1 and b.y0 <= cy < b.y1 for b in image_boxes)
        if not in_image and (cy < BANNER_FRACTION * rows or cy > (1 - BANNER_FRACTION) * rows):
            top, bottom = min(x.y0 for x in f.line), max(x.y1 for x in f.line)
            rects.append(Rect(0, top - pad, cols, bottom + pad, "ocr-banner-line"))
    clipped = list(dict.fromkeys(r for r in (x.clip(rows, cols) for x in rects) if r is not None))
    # A rectangle inside another one blanks nothing more (the same word read at two thresholds).
    return [r for r in clipped if not any(o is not r and o.x0 <= r.x0 and o.y0 <= r.y0 and o.x1 >= r.x1
                                          and o.y1 >= r.y1 and (o.x0, o.y0, o.x1, o.y1) != (r.x0, r.y0, r.x1, r.y1)
                                          for o in clipped)]


def _centre_in(w: ocr.Word, r: Rect | ocr.Word) -> bool:
    return r.x0 <= (w.x0 + w.x1) / 2 < r.x1 and r.y0 <= (w.y0 + w.y1) / 2 < r.y1


def _distinct(found: list[_Found]) -> list[_Found]:
    """One entry per word on the screen: the same word read at several thresholds, in several images (composite,
    sampled frames) or again after cleaning counts once."""
    out: list[_Found] = []
    for f in found:
        if not any(_centre_in(f.word, o.word) for o in out):
            out.append(f)
    return out


def _blank(frames: NativeFrames, rects: list[Rect]) -> None:
    """Set every rectangle to black in every frame at once."""
    black = np.asarray(frames.black).astype(frames.pixels.dtype)
    for r in rects:
        frames.pixels[:, r.y0:r.y1, r.x0:r.x1, :] = black


def _static_mask(pixels: np.ndarray) -> np.ndarray:
    """(rows, columns) True where a pixel has the same value, every sample, in every frame."""
    first = pixels[0]
    changed = np.zeros(first.shape, dtype=bool)
    for frame in pixels[1:]:
        changed |= frame != first
    return ~changed.any(axis=2)


def _edge_counts(frames: NativeFrames) -> np.ndarray:
    """(frames, tile rows, tile columns): sharp bright horizontal steps per tile, on every second row."""
    n, rows, cols, _ = frames.pixels.shape
    tr, tc = rows // TILE, (cols - 1) // TILE
    counts = np.zeros((n, tr, tc), np.int32)
    if tr == 0 or tc == 0:
        return counts
    for i in range(n):
        lum = frames.luminance(frames.pixels[i, :tr * TILE:2, :tc * TILE + 1]).astype(np.int16)
        left, right = lum[:, :-1], lum[:, 1:]
        edges = (np.abs(right - left) >= EDGE_STEP) & (np.maximum(left, right) >= EDGE_BRIGHT)
        counts[i] = edges.reshape(tr, TILE // 2, tc, TILE).sum(axis=(1, 3))
    return counts


def _sample_frames(frames: NativeFrames) -> list[int]:
    """First, middle and last frame, plus frames covering every sudden-text event (see the constants)."""
    n = frames.frames
    chosen = {0, n // 2, n - 1}
    if n < 4:
        return sorted(set(range(n)))
    counts = _edge_counts(frames)
    median = np.median(counts, axis=0)
    spread = 1.4826 * np.median(np.abs(counts - median), axis=0)
    outlier = (counts - median) > np.maximum(OUTLIER_Z * spread, OUTLIER_MIN)
    # An event is one tile flagged over consecutive frames (one label shown for a while): any of its frames shows it.
    events: list[set[int]] = []
    for ty, tx in zip(*np.nonzero(outlier.any(axis=0))):
        run: set[int] = set()
        for i in [*np.flatnonzero(outlier[:, ty, tx]), -2]:
            if run and i != max(run) + 1:
                events.append(run)
                run = set()
            if i >= 0:
                run.add(int(i))
    open_events = [e for e in events if not e & chosen]
    while open_events:
        best = max(range(n), key=lambda i: sum(i in e for e in open_events))
        chosen.add(best)
        open_events = [e for e in open_events if best not in e]
    return sorted(chosen)


def clean_pixels(ds: Dataset, identifying_values: tuple[str, ...]) -> PixelReport:
    """Blank burned-in identifying text in ``ds``'s pixel data, in place (PS3.15 E.3.1).

    ``identifying_values`` are the object's identifying header values (names,
    IDs, dates, institution) as the header engine found them; dates and ID-like
    strings are removed even when not listed. On success ``ds.PixelData`` holds
    the cleaned frames and BurnedInAnnotation (0028,0301) is "NO". Raises
    :class:`DeidRefused` (``ds`` then possibly half cleaned: discard it) when the
    encoding cannot be edited, OCR is unavailable, or text is still readable.
    """
    started = time.perf_counter()
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise DeidRefused("cannot clean float pixel data")
    if "PixelData" not in ds:
        return PixelReport(frames=0, seconds=time.perf_counter() - started)

    # 1. Frames.
    frames = open_frames(ds)
    n, rows, cols, _ = frames.pixels.shape

    # 2. Known regions, before reading: fewer pixels for OCR to read.
    regions: list[BlankedRegion] = []
    known = [(RegionSource.SIGNATURE, r) for r in device_rects(ds, rows, cols)]
    known += [(RegionSource.US_REGIONS, r) for r in outside_us_regions(ds, rows, cols)]
    image_boxes = us_region_boxes(ds, rows, cols) if any(s == RegionSource.US_REGIONS for s, _ in known) else []
    _blank(frames, [r for _, r in known])
    regions += [BlankedRegion(source, r.rule, r.x0, r.y0, r.x1, r.y1) for source, r in known]

    # 3. What to read.
    matcher = IdentifyingText(identifying_values)
    scale = ocr.UPSCALE if max(rows, cols) <= 1600 else 1
    if n == 1:
        static = None
        plan: list[tuple[int, tuple[int, ...]]] = [(0, SINGLE_FRAME_LEVELS)]
        sampled = [0]
    else:
        static = _static_mask(frames.pixels)
        sampled = _sample_frames(frames)
        if static.all():
            plan = [(COMPOSITE, tuple(sorted({*STATIC_LEVELS, *FRAME_LEVELS})))]
        else:
            plan = [(COMPOSITE, STATIC_LEVELS), *((i, FRAME_LEVELS) for i in sampled)]
    reader = _Reader(frames, static, plan, matcher, scale)

    # 4 and 5. Read, blank, read again until nothing identifying is left, or refuse.
    found, words_read = reader.read()
    all_found = list(found)
    rounds = 0
    ocr_rects: list[Rect] = []
    while found:
        if rounds == MAX_CLEAN_ROUNDS:
            first = min(found, key=lambda f: max(f.label, 0))
            raise DeidRefused("identifying text still readable after cleaning", frame=max(first.label, 0))
        rounds += 1
        rects = _found_rects(found, rows, cols, image_boxes)
        _blank(frames, rects)
        ocr_rects += rects
        found, _ = reader.read()
        all_found += found

    regions += [BlankedRegion(RegionSource.OCR, r.rule, r.x0, r.y0, r.x1, r.y1) for r in ocr_rects]
    frames.store(ds)
    ds.BurnedInAnnotation = "NO"
    distinct = _distinct(all_found)
    removed = sum(1 for f in distinct if any(_centre_in(f.word, r) for r in ocr_rects))
    return PixelReport(
        frames=n, regions=tuple(regions),
        frames_checked=tuple(range(n)) if static is not None and static.all() else tuple(sampled),
        composite_checked=n > 1, ocr_words=words_read, identifying_found=len(distinct),
        identifying_removed=removed, ocr_passes=reader.passes, seconds=time.perf_counter() - started)
