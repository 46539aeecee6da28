"""Words and their boxes in images, read by the Tesseract OCR engine.

Tesseract is called as a program (the ``tesseract`` command of Debian's
``tesseract-ocr`` with the ``tesseract-ocr-eng`` model), not through a Python
binding: pytesseract would add a dependency that itself only runs the same
command through temporary files, and bindings to libtesseract need a compiler
at install time. The image goes in on stdin as binary PGM (no encoding cost, no
temporary file) and the words come back on stdout as TSV. Nothing is ever
downloaded: the model is the one the Debian package installed.

Several images are read in one run by stacking them, separated by blank rows
(:func:`read_words`): one process start and one model load per cleaning pass
instead of one per image.

Pre-processing for small overlay fonts: luminance (the brightest channel, so
coloured text counts as bright), upscaled 2x, then thresholded into black ink
on white paper at one or more levels (Tesseract reads dark text on a light
background best; its own inversion attempt is turned off since we already
invert, which also saves time).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from dicomguard.deid.errors import DeidRefused

UPSCALE = 2
"""Overlay fonts on echo carts are 10 to 20 px high; Tesseract reads best with a cap height of 20 px or more."""

GAP = 48
"""Blank rows between stacked images (in upscaled pixels): wide enough that no word or line spans two images."""

MAX_PAGE_ROWS = 24000
"""Height of the stacked page handed to one Tesseract run."""

TIMEOUT_S = 120.0

_PAGE_SEGMENTATION = "11"
"""Sparse text: find as much text as possible in no particular order (overlays are scattered labels, not pages)."""


@dataclass(frozen=True)
class Word:
    """One word read in image ``image``; box in that image's own pixels (x1, y1 exclusive)."""

    image: int
    text: str
    conf: float
    x0: int
    y0: int
    x1: int
    y1: int
    line: tuple[int, int, int]
    """(block, paragraph, line) numbers from Tesseract: words with the same value are on one text line."""


def tesseract_binary() -> str | None:
    """Path of the ``tesseract`` program, or ``None`` when it is not installed."""
    return shutil.which("tesseract")


def luminance8(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """8-bit brightness of (rows, cols) or (rows, cols, samples) pixels, ``low``..``high`` mapped to 0..255."""
    if pixels.ndim == 3:
        lum = np.maximum(np.maximum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])
    else:
        lum = pixels
    if lum.dtype == np.uint8 and low == 0 and high == 255:
        return lum
    span = max(high - low, 1.0)
    scaled = (lum.astype(np.float32) - np.float32(low)) * np.float32(255.0 / span)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def binarize(lum: np.ndarray, level: int, scale: int = UPSCALE) -> np.ndarray:
    """Black ink (0) where ``lum >= level``, white paper (255) elsewhere, upscaled ``scale`` times.

    Upscaling is bilinear before the threshold, so strokes stay smooth instead of
    turning into 2x2 staircases.
    """
    if scale != 1:
        lum = np.asarray(Image.fromarray(lum).resize((lum.shape[1] * scale, lum.shape[0] * scale),
                                                     Image.Resampling.BILINEAR))
    return np.where(lum >= level, np.uint8(0), np.uint8(255))


def _pgm(page: np.ndarray) -> bytes:
    rows, cols = page.shape
    return b"P5\n%d %d\n255\n" % (cols, rows) + np.ascontiguousarray(page, dtype=np.uint8).tobytes()


def read_words(images: Sequence[np.ndarray], scale: int = UPSCALE) -> list[Word]:
    """Words in each of ``images`` (binarized pages from :func:`binarize`), in as few Tesseract runs as fit.

    Boxes are returned in the coordinates of the original, not upscaled, image
    (divided by ``scale``, rounded outwards); ``Word.image`` indexes ``images``.
    Raises :class:`DeidRefused` when Tesseract is missing or fails: without OCR
    nothing can be called clean.
    """
    binary = tesseract_binary()
    if binary is None:
        raise DeidRefused("OCR engine not installed (Debian packages tesseract-ocr, tesseract-ocr-eng)")
    words: list[Word] = []
    start = 0
    while start < len(images):
        # Stack images up to MAX_PAGE_ROWS (Leptonica and Tesseract refuse pages over 32767 pixels high).
        end, rows = start + 1, images[start].shape[0]
        while end < len(images) and rows + GAP + images[end].shape[0] <= MAX_PAGE_ROWS:
            rows += GAP + images[end].shape[0]
            end += 1
        words += [Word(w.image + start, w.text, w.conf, w.x0, w.y0, w.x1, w.y1, w.line)
                  for w in _read_page(binary, images[start:end], scale)]
        start = end
    return words


def _read_page(binary: str, images: Sequence[np.ndarray], scale: int) -> list[Word]:
    width = max(img.shape[1] for img in images)
    offsets: list[int] = []
    parts: list[np.ndarray] = []
    y = 0
    for img in images:
        if parts:
            parts.append(np.full((GAP, width), 255, np.uint8))
            y += GAP
        offsets.append(y)
        if img.shape[1] < width:
            img = np.pad(img, ((0, 0), (0, width - img.shape[1])), constant_values=255)
        parts.append(img)
        y += img.shape[0]
    page = np.concatenate(parts, axis=0)
    # One thread per run: objects are cleaned in parallel processes, where OpenMP threads only contend.
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        result = subprocess.run(
            [binary, "stdin", "stdout", "--oem", "1", "--psm", _PAGE_SEGMENTATION, "-l", "eng",
             "-c", "tessedit_do_invert=0", "tsv"],
            input=_pgm(page), capture_output=True, timeout=TIMEOUT_S, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DeidRefused("OCR timed out") from exc
    if result.returncode != 0:
        raise DeidRefused(f"OCR failed (tesseract exit status {result.returncode})")
    return _parse_tsv(result.stdout.decode("utf-8", "replace"), offsets, [img.shape[0] for img in images], scale)


def _parse_tsv(tsv: str, offsets: list[int], heights: list[int], scale: int) -> list[Word]:
    words: list[Word] = []
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not cols[11].strip():
            continue
        left, top, w, h = (int(v) for v in cols[6:10])
        # The image whose band holds the word's top edge; the gaps are wider than any glyph.
        index = max(i for i, off in enumerate(offsets) if off <= top) if top >= 0 else 0
        top -= offsets[index]
        bottom = min(top + h, heights[index])
        words.append(Word(
            image=index, text=cols[11].strip(), conf=float(cols[10]),
            x0=left // scale, y0=max(top, 0) // scale, x1=-(-(left + w) // scale), y1=-(-bottom // scale),
            line=(int(cols[2]), int(cols[3]), int(cols[4]))))
    return words
