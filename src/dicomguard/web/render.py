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

Bounded by configuration (security property): one frame is decoded, from the
verified bytes (inflated once, by verification), and only if its decoded size
is within ``limits.max_inflated_bytes``. The output is at most
``limits.max_rendered_size`` columns and rows: a larger viewport is refused
(400), a larger frame is scaled down to fit. The frame is downscaled first, by
the mean of k x k blocks, and everything after the decoder (Modality LUT,
window, palette, 8-bit conversion) runs on tiles of at most
:data:`TILE_PIXELS` pixels, so no full-frame floating-point copy is made and
the work is one pass over the frame (two when the window comes from min/max).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomguard.config import LimitSettings
from dicomguard.core.retrieve import RetrievedObject
from dicomguard.errors import NotFoundError
from dicomguard.web.media import is_encapsulated
from dicomguard.web.pixels import frame_count, has_pixel_data, pixel_file, pixel_value
from dicomguard.web.qido_params import QueryError

JPEG = "image/jpeg"
PNG = "image/png"
RENDERED_TYPES = [JPEG, PNG]
TILE_PIXELS = 1 << 20
"""Source pixels transformed at a time (at most 8 MiB of float64 per tile and channel)."""
DEFLATED = "1.2.840.10008.1.2.1.99"


class RenderUnavailable(RuntimeError):
    """The server cannot decode this object's pixel data (no codec for its transfer syntax, or unusual layout)."""


class RenderTooLarge(RenderUnavailable):
    """The frame's decoded size is over ``limits.max_inflated_bytes``: it is not decoded."""


@dataclass(frozen=True)
class RenderOptions:
    quality: int = 90
    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None


def parse_render_options(items: list[tuple[str, str]], max_size: int) -> RenderOptions:
    """The query parameters of a rendered request; QueryError (400) names what is wrong.

    ``max_size`` (``limits.max_rendered_size``) bounds each side of the viewport.
    """
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
            if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 9 and 0 < int(p) <= max_size for p in parts):
                raise QueryError(f"viewport is columns,rows (1 to {max_size}, limits.max_rendered_size)")
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


def _to_8bit(rgb: np.ndarray, bits: int) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    shift = max(bits - 8, 0)
    return np.clip(rgb.astype(np.uint32) >> shift, 0, 255).astype(np.uint8)


def _tiles(frame: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of the frame, at most :data:`TILE_PIXELS` pixels each (views, not copies)."""
    step = max(1, TILE_PIXELS // max(frame.shape[1], 1))
    for r0 in range(0, frame.shape[0], step):
        yield r0, frame[r0 : r0 + step]


def _downscaled(frame: np.ndarray, k: int, display: Callable[[np.ndarray], np.ndarray], channels: int) -> np.ndarray:
    """``display`` (tile -> 8-bit values, ``channels`` per pixel) applied to the frame, k x k blocks averaged, as uint8.

    ``display`` only ever sees tiles (:func:`_tiles`); the accumulator holds one
    output band. Edge pixels that do not fill a block (fewer than k) are dropped.
    """
    rows, cols = frame.shape[0] // k, frame.shape[1] // k
    extra = (channels,) if channels > 1 else ()
    out = np.empty((rows, cols, *extra), np.uint8)
    if k == 1:
        for r0, tile in _tiles(frame):
            out[r0 : r0 + len(tile)] = display(tile)
        return out
    band = max(1, TILE_PIXELS // (k * k * max(cols, 1)))  # output rows per accumulator
    step = max(1, TILE_PIXELS // (k * cols))  # source rows per tile
    for o0 in range(0, rows, band):
        o1 = min(rows, o0 + band)
        acc = np.zeros((o1 - o0, cols, *extra), np.float64)
        for r0 in range(o0 * k, o1 * k, step):
            tile = display(frame[r0 : min(o1 * k, r0 + step), : cols * k])
            sums = tile.reshape(len(tile), cols, k, *extra).sum(axis=2, dtype=np.float64)
            np.add.at(acc, np.arange(r0, r0 + len(tile)) // k - o0, sums)
        out[o0:o1] = np.clip(np.rint(acc / (k * k)), 0, 255)
    return out


def _gray_display(ds: Dataset, frame: np.ndarray, opts: RenderOptions) -> Callable[[np.ndarray], np.ndarray]:
    """Modality LUT then VOI window (PS3.3 C.11.1, C.11.2), per tile, to 8-bit values."""

    def values(tile: np.ndarray) -> np.ndarray:
        out = np.asarray(apply_modality_lut(tile, ds))
        return out if out.dtype.kind == "f" else out.astype(np.float32)

    if opts.window is not None:
        center, width, function = opts.window
    else:
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        function = str(ds.get("VOILUTFunction", "LINEAR")).lower().replace("_", "-")
        if center is None or width is None or width <= 0:
            lo, hi = math.inf, -math.inf
            for _, tile in _tiles(frame):
                v = values(tile)
                lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
            center, width, function = (lo + hi) / 2.0, max(hi - lo, 1.0) + 1.0, "linear"
    invert = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"

    def display(tile: np.ndarray) -> np.ndarray:
        gray = _window(values(tile), center, width, function)
        return 255 - gray if invert else gray

    return display


def _decode(obj: RetrievedObject, ds: Dataset, index: int, limit: int) -> np.ndarray:
    """One frame, decoded from the verified bytes; RenderTooLarge over ``limit`` bytes, RenderUnavailable if not decodable."""
    try:
        opts = as_pixel_options(ds)
        rows, cols = int(opts["rows"]), int(opts["columns"])
        samples, bits = int(opts.get("samples_per_pixel", 1)), int(opts["bits_allocated"])
    except (KeyError, TypeError, ValueError):
        raise RenderUnavailable("image pixel module incomplete") from None
    if rows * cols * samples * max(1, (bits + 7) // 8) > limit:
        raise RenderTooLarge(f"decoded frame over {limit} bytes")
    syntax = ExplicitVRLittleEndian if obj.transfer_syntax == DEFLATED else UID(obj.transfer_syntax)
    source = pixel_file(obj) if is_encapsulated(obj.transfer_syntax) else pixel_value(obj)
    try:
        frame, _ = get_decoder(syntax).as_array(source, index=index, transfer_syntax_uid=syntax, pixel_keyword="PixelData", **opts)
    except Exception as exc:  # noqa: BLE001 - codec errors vary by plugin; their text never reaches the client
        raise RenderUnavailable(type(exc).__name__) from None
    return frame


def render(obj: RetrievedObject, ds: Dataset, frame_number: int, media_type: str, opts: RenderOptions, limits: LimitSettings) -> bytes:
    """One frame (1-based) of a verified object as ``media_type``, within ``limits`` (see the module docstring).

    ``ds`` is its header (:func:`dicomguard.web.pixels.read_header`). NotFoundError
    if the frame is out of range, RenderTooLarge / RenderUnavailable if it is not decoded.
    """
    if not has_pixel_data(obj):
        raise NotFoundError("the object has no pixel data")
    n = frame_count(ds)
    if not 1 <= frame_number <= n:
        raise NotFoundError("frame number out of range")
    frame = _decode(obj, ds, frame_number - 1, limits.max_inflated_bytes)
    photometric = str(ds.get("PhotometricInterpretation", ""))
    display: Callable[[np.ndarray], np.ndarray]
    channels = 3
    if photometric.startswith("MONOCHROME") and frame.ndim == 2:
        display, channels = _gray_display(ds, frame, opts), 1
    elif photometric == "PALETTE COLOR" and frame.ndim == 2:
        bits = 16 if frame.dtype != np.uint8 else 8
        display = lambda tile: _to_8bit(apply_color_lut(tile, ds), bits)
    elif frame.ndim == 3 and frame.shape[-1] == 3:
        bits = int(ds.get("BitsStored", 8))
        display = lambda tile: _to_8bit(tile, bits)
    else:
        raise RenderUnavailable(f"photometric interpretation {photometric or 'missing'}")
    size = opts.viewport or (limits.max_rendered_size, limits.max_rendered_size)
    # downscale first: k x k blocks, k the largest whole factor that keeps the image at least the size it fits in
    k = max(1, min(max(frame.shape[1] // size[0], frame.shape[0] // size[1]), frame.shape[0], frame.shape[1]))
    image = Image.fromarray(_downscaled(frame, k, display, channels))
    del frame
    image.thumbnail(size)
    out = io.BytesIO()
    if media_type == JPEG:
        image.save(out, format="JPEG", quality=opts.quality)
    else:
        image.save(out, format="PNG")
    return out.getvalue()
