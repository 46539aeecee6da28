"""Rendered resources (PS3.18 8.3.5, 10.4.1.1.3): one frame of a verified object as JPEG or PNG.

Grayscale pipeline per PS3.3 C.11: Modality LUT (rescale slope/intercept or
LUT), then the VOI window from the ``window`` query parameter, else the first
window in the header, else the frame's min/max; MONOCHROME1 is inverted.
Colour frames are converted to RGB by pydicom (YBR) or through the palette
(PALETTE COLOR). Rendered images carry no DICOM header, hence no PHI beyond
what is burned into the pixels.

Query parameters (PS3.18 Table 8.3.5-1): ``quality`` (1-100, JPEG),
``window=center,width[,linear|linear-exact|sigmoid]`` and
``viewport=columns,rows`` (scaled down to fit, aspect kept). ``annotation``,
``iccprofile`` and ``charset`` are refused with 400 rather than ignored.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

from dicomguard.errors import NotFoundError
from dicomguard.web.pixels import frame_count
from dicomguard.web.qido_params import QueryError

JPEG = "image/jpeg"
PNG = "image/png"
RENDERED_TYPES = [JPEG, PNG]
MAX_VIEWPORT = 8192


class RenderUnavailable(RuntimeError):
    """The server cannot decode this object's pixel data (no codec for its transfer syntax, or unusual layout)."""


@dataclass(frozen=True)
class RenderOptions:
    quality: int = 90
    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None


def parse_render_options(items: list[tuple[str, str]]) -> RenderOptions:
    quality, window, viewport = 90, None, None
    seen: set[str] = set()
    for name, value in items:
        if name in seen:
            raise QueryError(f"{name} is given more than once")
        seen.add(name)
        if name == "quality":
            if not value.isdigit() or not 1 <= int(value) <= 100:
                raise QueryError("quality must be an integer from 1 to 100")
            quality = int(value)
        elif name == "window":
            parts = value.split(",")
            function = parts[2].strip().lower() if len(parts) == 3 else "linear"
            try:
                center, width = float(parts[0]), float(parts[1])
            except (ValueError, IndexError):
                raise QueryError("window is center,width[,function]") from None
            if len(parts) > 3 or function not in ("linear", "linear-exact", "sigmoid") or not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
                raise QueryError("window is center,width[,function] with a positive width")
            window = (center, width, function)
        elif name == "viewport":
            parts = value.split(",")
            if len(parts) != 2 or not all(p.isdigit() and 0 < int(p) <= MAX_VIEWPORT for p in parts):
                raise QueryError(f"viewport is columns,rows (1 to {MAX_VIEWPORT})")
            viewport = (int(parts[0]), int(parts[1]))
        else:
            raise QueryError("unsupported query parameter for a rendered resource")
    return RenderOptions(quality, window, viewport)


def _first(value: object) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str):
            value = next(iter(value))  # type: ignore[call-overload]
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError):
        return None


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """VOI LUT functions of PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT), C.11.2.1.3.1 (SIGMOID), to 0..255."""
    if function == "sigmoid":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "linear-exact":
        out = ((values - center) / width + 0.5) * 255.0
    else:
        if width <= 1:
            return np.where(values <= center - 0.5, 0, 255).astype(np.uint8)
        out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def _grayscale(ds: Dataset, frame: np.ndarray, opts: RenderOptions) -> Image.Image:
    values = np.asarray(apply_modality_lut(frame, ds), dtype=np.float64)
    if opts.window is not None:
        center, width, function = opts.window
    else:
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        function = str(ds.get("VOILUTFunction", "LINEAR")).lower().replace("_", "-")
        if center is None or width is None or width <= 0:
            lo, hi = float(values.min()), float(values.max())
            center, width, function = (lo + hi) / 2.0, max(hi - lo, 1.0) + 1.0, "linear"
    gray = _window(values, center, width, function)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        gray = 255 - gray
    return Image.fromarray(gray)


def _to_8bit(rgb: np.ndarray, bits: int) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    shift = max(bits - 8, 0)
    return np.clip(rgb.astype(np.uint32) >> shift, 0, 255).astype(np.uint8)


def render(ds: Dataset, frame_number: int, media_type: str, opts: RenderOptions) -> bytes:
    """One frame (1-based) as ``media_type``; NotFoundError if out of range, RenderUnavailable if not decodable."""
    if "PixelData" not in ds:
        raise NotFoundError("the object has no pixel data")
    n = frame_count(ds)
    if not 1 <= frame_number <= n:
        raise NotFoundError("frame number out of range")
    try:
        frame = pixel_array(ds, index=frame_number - 1)
    except Exception as exc:  # noqa: BLE001 - codec errors vary by plugin; their text never reaches the client
        raise RenderUnavailable(type(exc).__name__) from None
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric.startswith("MONOCHROME") and frame.ndim == 2:
        image = _grayscale(ds, frame, opts)
    elif photometric == "PALETTE COLOR":
        image = Image.fromarray(_to_8bit(apply_color_lut(frame, ds), 16 if frame.dtype != np.uint8 else 8))
    elif frame.ndim == 3 and frame.shape[-1] == 3:
        image = Image.fromarray(_to_8bit(frame, int(ds.get("BitsStored", 8))))
    else:
        raise RenderUnavailable(f"photometric interpretation {photometric or 'missing'}")
    if opts.viewport is not None:
        image.thumbnail(opts.viewport)
    out = io.BytesIO()
    if media_type == JPEG:
        image.save(out, format="JPEG", quality=opts.quality)
    else:
        image.save(out, format="PNG")
    return out.getvalue()
