"""Synthetic images with burned-in PHI for the pixel-cleaning tests and benchmark.

Three objects, each generated from a seeded RNG (same pixels on every run):

* :func:`echo_cine`: an Ultrasound Multi-frame echo cine, 60 frames of 800x600
  RGB (PlanarConfiguration 0, explicit VR little endian), a moving speckle fan,
  and a static two-line banner at the top of every frame with the patient's
  name, ID, birth date, the institution and the study date; a GE Vivid E95
  signature and a SequenceOfUltrasoundRegions that covers the fan. Extra text
  can be burned into chosen frames (``inject``) to play non-static overlays.
* :func:`unknown_us`: one 640x480 RGB ultrasound frame from an unknown device,
  no region sequence, text in the bottom corners: only OCR can find it.
* :func:`ct_slice`: a 512x512 MONOCHROME2 16-bit CT slice with no text at all.

The text is rendered with DejaVu Sans (Debian ``fonts-dejavu-core``) at 18 px,
white or light gray on black as echo carts draw it. ``*_TOKENS`` are the strings
planted in the pixels: after cleaning, none may be readable in any frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

FONT_PATH = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
FONT_PX = 18

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"

PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "EC58213377"
BIRTH_DATE = "19610417"
STUDY_DATE = "20240305"
INSTITUTION = "ST QUIXOTE HEART CENTRE"

ECHO_BANNER = (
    "DOE, JANE    ID: EC58213377    DOB: 17/04/1961",
    "QUIXOTE CENTRE    05-Mar-2024  10:23:45    Adult TTE",
)
ECHO_TOKENS = ("DOE", "JANE", "EC58213377", "17/04/1961", "QUIXOTE", "05-Mar-2024")
"""What the echo banner plants: every one must be unreadable after cleaning."""

UNKNOWN_TEXT = ("DOE, JANE", "ID EC58213377  2024-03-05")
UNKNOWN_TOKENS = ("DOE", "JANE", "EC58213377", "2024-03-05")

INJECTED_TEXT = "JANE DOE EC58213377"
INJECTED_TOKENS = ("JANE", "DOE", "EC58213377")

ECHO_ROWS, ECHO_COLS, ECHO_FRAMES = 600, 800, 60
APEX = (400, 70)  # (x, y) of the fan's apex
FAN_RADIUS = 500
FAN_HALF_ANGLE = np.deg2rad(38)
SECTOR_BOX = (
    int(APEX[0] - FAN_RADIUS * np.sin(FAN_HALF_ANGLE)), APEX[1],
    int(APEX[0] + FAN_RADIUS * np.sin(FAN_HALF_ANGLE)) + 1, APEX[1] + FAN_RADIUS + 1,
)
"""(x0, y0, x1, y1), x1 and y1 exclusive: the region box of the echo cine's SequenceOfUltrasoundRegions."""


@dataclass(frozen=True)
class Planted:
    """Where generated text lies: (frame or None for every frame, x0, y0, x1, y1, text)."""

    boxes: tuple[tuple[int | None, int, int, int, int, str], ...]


def identifying_values() -> tuple[str, ...]:
    """The header values the engine would hand to ``clean_pixels`` for these objects."""
    return (PATIENT_NAME, PATIENT_ID, BIRTH_DATE, STUDY_DATE, INSTITUTION)


def _font(size: int = FONT_PX) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_PATH), size)


def _draw_text(rgb: np.ndarray, xy: tuple[int, int], text: str, fill: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """Render ``text`` into ``rgb`` (rows, cols, 3) in place; returns its box (x0, y0, x1, y1)."""
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    draw.text(xy, text, font=_font(), fill=fill)
    rgb[...] = np.asarray(img)
    x0, y0, x1, y1 = draw.textbbox(xy, text, font=_font())
    return int(x0), int(y0), int(x1), int(y1)


def _fan_mask(rows: int, cols: int, apex: tuple[int, int], radius: int, half_angle: float) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:cols]
    dx, dy = xx - apex[0], yy - apex[1]
    r = np.hypot(dx, dy)
    theta = np.arctan2(dx, np.maximum(dy, 1e-6))
    return (dy > 0) & (r <= radius) & (np.abs(theta) <= half_angle)


def _speckle_frames(rng: np.random.Generator, n: int, rows: int, cols: int, mask: np.ndarray,
                    apex: tuple[int, int]) -> np.ndarray:
    """Gray speckle (Rayleigh) in the fan with a bright wall that moves with the 'heartbeat'."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    depth = np.hypot(xx - apex[0], yy - apex[1])
    attenuation = np.clip(1.0 - depth / (1.4 * max(rows, cols)), 0.3, 1.0)
    out = np.zeros((n, rows, cols), dtype=np.uint8)
    base = rng.rayleigh(38.0, (rows + 40, cols))
    for i in range(n):
        phase = np.sin(2 * np.pi * i / 30.0)
        shift = round(8 * phase)
        field = base[20 + shift:20 + shift + rows] * 0.6 + rng.rayleigh(38.0, (rows, cols)) * 0.4
        wall_y = apex[1] + 230 + 25 * phase
        wall = 120.0 * np.exp(-(((yy - wall_y) / 14.0) ** 2)) * (np.abs(xx - apex[0]) < 170)
        img = (field + wall) * attenuation
        out[i] = np.where(mask, np.clip(img, 0, 235), 0).astype(np.uint8)
    return out


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _base(sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    sop_uid = generate_uid()
    ds.file_meta = _file_meta(sop_class, sop_uid)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.StudyDate = STUDY_DATE
    ds.InstitutionName = INSTITUTION
    return ds


def _rgb_image(ds: Dataset, frames: np.ndarray) -> None:
    n, rows, cols, _ = frames.shape
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if ds.SOPClassUID == US_MULTIFRAME:
        ds.NumberOfFrames = n
        ds.FrameTime = 1000.0 / 50
    ds.PixelData = np.ascontiguousarray(frames).tobytes()


def _us_region(box: tuple[int, int, int, int]) -> Dataset:
    """One 2D tissue region (PS3.3 C.8.5.5.1) in centimetres."""
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = box[0], box[1]
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = box[2] - 1, box[3] - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.032
    region.ReferencePixelX0 = APEX[0] - box[0]
    region.ReferencePixelY0 = 0
    return region


def echo_frames(frames: int = ECHO_FRAMES, seed: int = 7,
                inject: dict[int, tuple[int, int]] | None = None) -> tuple[np.ndarray, Planted]:
    """The echo cine's pixels, (frames, 600, 800, 3) uint8, and where the text lies.

    ``inject`` maps a frame index to the (x, y) where :data:`INJECTED_TEXT` is
    burned into that frame only (inside the fan if (x, y) is inside it).
    """
    rng = np.random.default_rng(seed)
    mask = _fan_mask(ECHO_ROWS, ECHO_COLS, APEX, FAN_RADIUS, FAN_HALF_ANGLE)
    gray = _speckle_frames(rng, frames, ECHO_ROWS, ECHO_COLS, mask, APEX)
    out = np.repeat(gray[..., None], 3, axis=3)
    # A slight warm tint, as echo carts display tissue.
    out[..., 2] = (out[..., 2].astype(np.uint16) * 9 // 10).astype(np.uint8)

    overlay = np.zeros((ECHO_ROWS, ECHO_COLS, 3), dtype=np.uint8)
    boxes: list[tuple[int | None, int, int, int, int, str]] = []
    for i, line in enumerate(ECHO_BANNER):
        boxes.append((None, *_draw_text(overlay, (12, 8 + 24 * i), line, (235, 235, 235)), line))
    # Non-identifying static labels drawn by the cart next to the fan (depth scale, acoustic output).
    for depth_cm, y in ((5, 200), (10, 330), (15, 460)):
        _draw_text(overlay, (720, y), str(depth_cm), (200, 200, 120))
    _draw_text(overlay, (640, 70), "TIS 0.7  MI 1.3", (200, 200, 120))
    drawn = overlay.any(axis=2)
    out[:, drawn] = overlay[drawn]

    for frame, xy in (inject or {}).items():
        box = _draw_text(out[frame], xy, INJECTED_TEXT, (250, 250, 250))
        boxes.append((frame, *box, INJECTED_TEXT))
    return out, Planted(tuple(boxes))


def echo_cine(frames: int = ECHO_FRAMES, seed: int = 7,
              inject: dict[int, tuple[int, int]] | None = None) -> tuple[Dataset, Planted]:
    """The echo cine as a dataset (see the module docstring)."""
    pixels, planted = echo_frames(frames, seed, inject)
    ds = _base(US_MULTIFRAME, "US")
    ds.Manufacturer = "GE Vingmed Ultrasound"
    ds.ManufacturerModelName = "Vivid E95"
    ds.BurnedInAnnotation = "YES"
    ds.SequenceOfUltrasoundRegions = Sequence([_us_region(SECTOR_BOX)])
    _rgb_image(ds, pixels)
    return ds, planted


def unknown_us(seed: int = 11) -> tuple[Dataset, Planted]:
    """One ultrasound frame from an unknown device, text in the bottom corners, no region sequence."""
    rng = np.random.default_rng(seed)
    rows, cols, apex = 480, 640, (320, 40)
    mask = _fan_mask(rows, cols, apex, 380, np.deg2rad(35))
    gray = _speckle_frames(rng, 1, rows, cols, mask, apex)[0]
    rgb = np.repeat(gray[..., None], 3, axis=2)
    boxes: list[tuple[int | None, int, int, int, int, str]] = [
        (None, *_draw_text(rgb, (10, rows - 50), UNKNOWN_TEXT[0], (230, 230, 230)), UNKNOWN_TEXT[0]),
        (None, *_draw_text(rgb, (cols - 260, rows - 28), UNKNOWN_TEXT[1], (230, 230, 230)), UNKNOWN_TEXT[1]),
    ]
    ds = _base(US_IMAGE, "US")
    ds.Manufacturer = "ACME Sonics"
    ds.ManufacturerModelName = "SonoThing 3000"
    ds.BurnedInAnnotation = "YES"
    _rgb_image(ds, rgb[None])
    return ds, Planted(tuple(boxes))


def ct_slice(seed: int = 3) -> Dataset:
    """A 512x512 CT slice (12 bits stored in 16, MONOCHROME2): body, bones, noise, no text."""
    rng = np.random.default_rng(seed)
    size = 512
    yy, xx = np.mgrid[0:size, 0:size]
    hu = np.full((size, size), -1000.0)
    body = ((xx - 256) / 210.0) ** 2 + ((yy - 256) / 160.0) ** 2 <= 1
    hu[body] = 40
    lungs = (((np.abs(xx - 256) - 90) / 60.0) ** 2 + ((yy - 240) / 90.0) ** 2) <= 1
    hu[lungs] = -850
    spine = ((xx - 256) / 22.0) ** 2 + ((yy - 370) / 22.0) ** 2 <= 1
    hu[spine] = 700
    hu += rng.normal(0, 12, hu.shape)
    stored = np.clip(hu + 1024, 0, 4095).astype("<u2")
    ds = _base(CT_IMAGE, "CT")
    ds.Manufacturer = "ACME Medical"
    ds.ManufacturerModelName = "Tomo 64"
    ds.BurnedInAnnotation = "NO"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = stored.tobytes()
    return ds
