"""Native pixel data as a writable array of frames, and back, bit for bit.

Pixel cleaning edits stored values in place, so only encodings whose stored
values can be written back exactly are accepted: the native (uncompressed)
transfer syntaxes of PS3.5 section 8 (little and big endian, implicit and
explicit VR, and deflated, whose pixel data is native once read), and RLE
Lossless (PS3.5 Annex G), decoded and re-encoded losslessly by pydicom. Other
encapsulated syntaxes that pydicom decodes here (JPEG Baseline/Extended and JPEG
2000 through Pillow) are decoded once and released *native* (Explicit VR Little
Endian): re-encoding a lossy image would change every pixel again, so the output
is larger instead, and Lossy Image Compression stays "01". What does not decode
(MPEG, HEVC, JPEG-LS without its codec...) is refused, naming the syntax.

Supported pixel descriptions (PS3.3 C.7.6.3): 8 or 16 bits allocated,
unsigned or signed; MONOCHROME1, MONOCHROME2 (1 sample), RGB and YBR_FULL
(3 samples, PlanarConfiguration 0 or 1). The array view is always
(frames, rows, columns, samples); for PlanarConfiguration 1 it is a strided view
of the colour-by-plane buffer, so writes land in the right bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, RLELossless

from dicomguard.deid.errors import DeidRefused
from dicomguard.deid.ocr import luminance8

_MONO = ("MONOCHROME1", "MONOCHROME2")
_LOSSLESS = frozenset(UID(u) for u in (
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.5"))
"""Encapsulated syntaxes that are lossless only (JPEG Lossless, JPEG-LS Lossless, JPEG 2000 / HTJ2K Lossless, RLE,
PS3.5 A.4): every other one may be lossy, and the decoded image is marked as having been lossy compressed."""
_COLOUR = ("RGB", "YBR_FULL")


@dataclass
class NativeFrames:
    """Writable frames over a private copy of the pixel data; :meth:`store` writes them back."""

    pixels: np.ndarray
    """(frames, rows, columns, samples), a view into ``_buffer``."""
    black: tuple[int, ...]
    """Stored value, per sample, that displays as black: what blanked pixels are set to."""
    photometric: str
    low: float
    high: float
    """Range of stored values, for mapping brightness to 8 bits for OCR."""
    _buffer: bytearray
    _tail: bytes
    _reencode: UID | None

    @property
    def frames(self) -> int:
        return int(self.pixels.shape[0])

    def luminance(self, image: np.ndarray) -> np.ndarray:
        """8-bit displayed brightness of one (rows, columns, samples) image of these frames, for OCR.

        The brightest channel for RGB (coloured text counts as bright), Y for
        YBR_FULL, the stored range stretched to 0..255 for monochrome, inverted
        for MONOCHROME1 (where low values display bright).
        """
        if self.photometric == "RGB":
            lum = luminance8(image, self.low, self.high)
        else:
            lum = luminance8(image[..., 0], self.low, self.high)
        return 255 - lum if self.photometric == "MONOCHROME1" else lum

    def store(self, ds: Dataset) -> None:
        """Write the (edited) frames back into ``ds.PixelData``, re-encoding RLE Lossless if it was."""
        ds.PixelData = bytes(self._buffer) + self._tail
        if self._reencode is not None:
            ds.compress(self._reencode, generate_instance_uid=False)


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else None


def open_frames(ds: Dataset) -> NativeFrames:
    """The pixel data of ``ds`` as :class:`NativeFrames`; raises :class:`DeidRefused` for what cannot be edited.

    A dataset without a transfer syntax (built in memory) is taken as native
    little endian when its pixel data has exactly the native length.
    """
    ts = _transfer_syntax(ds)
    reencode: UID | None = None
    if ts is not None and ts.is_encapsulated:
        try:
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:  # pydicom raises several types for corrupt data or a missing codec
            raise DeidRefused(f"cannot clean pixel data encoded as {ts.name} ({ts}): it does not decode here") from exc
        if ts == RLELossless:
            reencode = RLELossless
        elif ts not in _LOSSLESS:
            # Decoded once and released native: cleaning adds no second loss, and the header keeps saying the
            # image was lossy compressed (PS3.3 C.7.6.1.1.5), as every later viewer must know.
            ds.LossyImageCompression = "01"
        ts = ExplicitVRLittleEndian

    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 0) or 0)
    bits_stored = int(ds.get("BitsStored", bits) or bits)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    planar = int(ds.get("PlanarConfiguration", 0) or 0)
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise DeidRefused("pixel data without usable Rows, Columns or NumberOfFrames")
    if bits not in (8, 16):
        raise DeidRefused(f"cannot clean pixel data with BitsAllocated {bits}")
    if not 1 <= bits_stored <= bits:
        raise DeidRefused(f"BitsStored {bits_stored} does not fit BitsAllocated {bits}")
    if not ((samples == 1 and photometric in _MONO) or (samples == 3 and photometric in _COLOUR)):
        raise DeidRefused(f"cannot clean PhotometricInterpretation {photometric or '(none)'} "
                          f"with SamplesPerPixel {samples}")
    _refuse_embedded_overlays(ds)

    big_endian = ts == ExplicitVRBigEndian
    dtype = np.dtype(("i" if signed else "u") + str(bits // 8)).newbyteorder(">" if big_endian else "<")
    expected = frames * rows * cols * samples * dtype.itemsize
    data = ds.PixelData
    if not isinstance(data, bytes | bytearray) or len(data) < expected:
        raise DeidRefused("pixel data shorter than Rows x Columns x frames x samples describe")
    if ts is None and len(data) > expected + 1:
        raise DeidRefused("pixel data of unknown transfer syntax and unexpected length")
    buffer = bytearray(data[:expected])
    flat = np.frombuffer(buffer, dtype=dtype)
    if samples == 3 and planar == 1:
        pixels = flat.reshape(frames, samples, rows, cols).transpose(0, 2, 3, 1)
    else:
        pixels = flat.reshape(frames, rows, cols, samples)

    max_value = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    min_value = -(1 << (bits_stored - 1)) if signed else 0
    if photometric == "MONOCHROME1":
        black: tuple[int, ...] = (max_value,)
    elif photometric == "YBR_FULL":
        black = (0, 1 << (bits_stored - 1), 1 << (bits_stored - 1))
    elif samples == 3:
        black = (0, 0, 0)
    else:
        black = (min_value,)
    if bits == 8 and not signed:
        low, high = 0.0, 255.0
    else:
        low, high = float(pixels.min()), float(pixels.max())
    return NativeFrames(pixels, black, photometric, low, high, buffer, bytes(data[expected:]), reencode)


def _refuse_embedded_overlays(ds: Dataset) -> None:
    """Overlays stored in the unused high bits of the pixel data (retired, PS3.3 2004 C.9.2) are refused.

    They can hold burned-in text that the stored values we read do not show.
    Separate overlay planes (60xx,3000) are graphics, handled by the header
    profile, not here.
    """
    for group in range(0x6000, 0x6020, 2):
        position = ds.get((group, 0x0102))
        allocated = ds.get((group, 0x0100))
        if position is None or allocated is None:
            continue
        try:
            embedded = int(allocated.value) != 1 or int(position.value) != 0
        except (TypeError, ValueError):
            embedded = True
        if embedded and (group, 0x3000) not in ds:
            raise DeidRefused("overlay embedded in the high bits of the pixel data")
