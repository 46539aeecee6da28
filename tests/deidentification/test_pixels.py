"""Pixel cleaning (PS3.15 E.3.1 Clean Pixel Data Option): burned-in text gone, everything else bit-identical.

The proof that text is gone is an independent reading: Tesseract run by the test
itself on every output frame, with its own pre-processing (plain inverted
grayscale and one threshold the cleaner does not use), not the cleaner's OCR.
A precondition test shows that this reading does find every planted token in
the input, so an empty reading of the output means something.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from dicomguard.deid import pixels as pixels_module
from dicomguard.deid.errors import DeidRefused
from dicomguard.deid.frames import open_frames
from dicomguard.deid.ocr import Word
from dicomguard.deid.phi_text import IdentifyingText
from dicomguard.deid.pixels import PixelReport, RegionSource, clean_pixels
from dicomguard.deid.signatures import outside_us_regions
from tests.deidentification import burned_in

MIDDLE = burned_in.ECHO_FRAMES // 2
IN_REGION = (300, 300)
"""Where injected text lands inside the fan (on the bright 'heart wall', the hardest place to read it)."""


@pytest.fixture(scope="module")
def tesseract() -> str:
    """The ``tesseract`` program. Skipped when absent; under CI (``CI`` set) that is a failure:
    scripts/test.sh installs it (Debian tesseract-ocr, tesseract-ocr-eng, fonts-dejavu-core)."""
    path = shutil.which("tesseract")
    if path is None or not burned_in.FONT_PATH.exists():
        reason = "tesseract (Debian tesseract-ocr, tesseract-ocr-eng) or DejaVu fonts (fonts-dejavu-core) not installed"
        if os.environ.get("CI"):
            pytest.fail(reason + " under CI")
        pytest.skip(reason)
    return path


# -- the test's own reading -------------------------------------------------------------------------------------------

_FOLD = str.maketrans({"0": "O", "1": "I", "L": "I", "5": "S", "8": "B"})


def _fold(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper()).translate(_FOLD)


def _close(a: str, b: str) -> bool:
    """Edit distance at most 1."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) <= 1
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def read_text(tesseract: str, frame: np.ndarray) -> list[str]:
    """Words Tesseract reads in an RGB frame: inverted grayscale and a 176 threshold, both 2x, sparse text."""
    lum = frame.max(axis=2) if frame.ndim == 3 else frame
    big = np.asarray(Image.fromarray(lum).resize((lum.shape[1] * 2, lum.shape[0] * 2), Image.Resampling.BICUBIC))
    page = np.concatenate([255 - big, np.full((60, big.shape[1]), 255, np.uint8),
                           np.where(big >= 176, 0, 255).astype(np.uint8)])
    pgm = b"P5\n%d %d\n255\n" % (page.shape[1], page.shape[0]) + page.tobytes()
    out = subprocess.run([tesseract, "stdin", "stdout", "--psm", "11"], input=pgm, capture_output=True, check=True,
                         env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    return out.stdout.decode("utf-8", "replace").split()


def readable_tokens(words: list[str], tokens: tuple[str, ...]) -> set[str]:
    """The tokens a reader would recognise in ``words``: a whole word (or two adjacent words, for a token OCR
    split), inside a word for tokens of 4 characters or more, or off by one character for 5 or more.

    Not a substring of all the text run together: speckle read as text is hundreds of short nonsense words, and
    any three letters turn up in them somewhere."""
    folded = [_fold(w) for w in words if _fold(w)]
    pieces = folded + [a + b for a, b in itertools.pairwise(folded)]
    found = set()
    for token in tokens:
        t = _fold(token)
        if any(p == t or (len(t) >= 4 and t in p) or (len(t) >= 5 and _close(p, t)) for p in pieces):
            found.add(token)
    return found


# -- helpers ----------------------------------------------------------------------------------------------------------

def rgb_frames(ds) -> np.ndarray:  # type: ignore[no-untyped-def]
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return np.frombuffer(ds.PixelData, np.uint8)[: n * ds.Rows * ds.Columns * 3].reshape(n, ds.Rows, ds.Columns, 3)


def blanked_mask(report: PixelReport, rows: int, cols: int) -> np.ndarray:
    mask = np.zeros((rows, cols), bool)
    for r in report.regions:
        mask[r.y0:r.y1, r.x0:r.x1] = True
    return mask


def assert_rest_identical(before: np.ndarray, after: np.ndarray, report: PixelReport) -> None:
    """Pixels outside the reported rectangles are bit-identical; inside they are black."""
    mask = blanked_mask(report, before.shape[1], before.shape[2])
    assert np.array_equal(before[:, ~mask], after[:, ~mask])
    assert not after[:, mask].any()


def overlaps(report: PixelReport, box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    return any(r.source == RegionSource.OCR and r.x0 < x1 and x0 < r.x1 and r.y0 < y1 and y0 < r.y1
               for r in report.regions)


# -- reading the input: the test's reader sees what was planted ------------------------------------------------------

def test_planted_text_is_readable_in_the_input(tesseract: str) -> None:
    ds, _ = burned_in.echo_cine(frames=4, inject={2: IN_REGION})
    frames = rgb_frames(ds)
    assert readable_tokens(read_text(tesseract, frames[0]), burned_in.ECHO_TOKENS) == set(burned_in.ECHO_TOKENS)
    assert readable_tokens(read_text(tesseract, frames[2]), burned_in.INJECTED_TOKENS) == set(burned_in.INJECTED_TOKENS)
    single, _ = burned_in.unknown_us()
    assert readable_tokens(read_text(tesseract, rgb_frames(single)[0]), burned_in.UNKNOWN_TOKENS) == set(
        burned_in.UNKNOWN_TOKENS)


# -- the echo cine ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("device", ["known", "unknown"])
def test_echo_cine_every_frame_clean_and_the_rest_untouched(tesseract: str, device: str) -> None:
    """Static banner plus text inside the fan in the middle frame only: cleaned (or refused naming that frame);
    after cleaning no frame, read one by one, shows any planted token. ``unknown``: no device rule and no
    region sequence, so OCR alone has to find the banner too."""
    ds, _ = burned_in.echo_cine(inject={MIDDLE: IN_REGION})
    if device == "unknown":
        ds.Manufacturer, ds.ManufacturerModelName = "ACME Sonics", "SonoThing 3000"
        del ds.SequenceOfUltrasoundRegions
    before = rgb_frames(ds).copy()
    try:
        report = clean_pixels(ds, burned_in.identifying_values())
    except DeidRefused as exc:
        assert exc.frame == MIDDLE
        return
    after = rgb_frames(ds)
    assert report.frames == burned_in.ECHO_FRAMES
    assert report.signature_regions >= (1 if device == "known" else 0) and report.ocr_regions >= 1
    assert ds.BurnedInAnnotation == "NO"
    assert_rest_identical(before, after, report)
    tokens = burned_in.ECHO_TOKENS + burned_in.INJECTED_TOKENS
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        readings = list(pool.map(lambda frame: readable_tokens(read_text(tesseract, frame), tokens), after))
    assert {i: found for i, found in enumerate(readings) if found} == {}


def test_echo_cine_known_regions_and_report(tesseract: str) -> None:
    ds, planted = burned_in.echo_cine(frames=12)
    before = rgb_frames(ds).copy()
    report = clean_pixels(ds, burned_in.identifying_values())
    rules = {r.rule for r in report.regions}
    assert "ge-vivid-800x600-top" in rules and "outside-us-regions" in rules
    assert report.ocr_regions == 0  # nothing identifying left for OCR once the banner is blanked
    assert report.composite_checked and {0, 6, 11} <= set(report.frames_checked)
    assert_rest_identical(before, rgb_frames(ds), report)
    # The fan (inside the region) is untouched: the planted banner was the only change.
    x0, y0, x1, y1 = burned_in.SECTOR_BOX
    assert np.array_equal(before[:, 60:, :, :][:, y0 - 60:y1 - 60, x0:x1], rgb_frames(ds)[:, y0:y1, x0:x1])
    assert all(box[3] <= 60 for frame, *box, _ in planted.boxes if frame is None)


def test_text_in_one_frame_off_the_fixed_sample_is_found(tesseract: str) -> None:
    """Non-static text in a frame that is neither first, middle nor last: the frame sampling picks it up."""
    frame = 7
    ds, planted = burned_in.echo_cine(frames=30, inject={frame: (250, 400)})
    before = rgb_frames(ds).copy()
    report = clean_pixels(ds, burned_in.identifying_values())
    assert frame in report.frames_checked
    box = next(tuple(b[1:5]) for b in planted.boxes if b[0] == frame)
    assert overlaps(report, box)
    after = rgb_frames(ds)
    assert readable_tokens(read_text(tesseract, after[frame]), burned_in.INJECTED_TOKENS) == set()
    assert_rest_identical(before, after, report)


def test_text_left_readable_is_refused_naming_the_frame(tesseract: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """If blanking what OCR found fails (here: it blanks nothing), the residual check refuses; nothing passes."""
    monkeypatch.setattr(pixels_module, "_found_rects", lambda *args: [])
    ds, _ = burned_in.echo_cine(frames=9, inject={4: IN_REGION})
    with pytest.raises(DeidRefused) as refused:
        clean_pixels(ds, burned_in.identifying_values())
    assert refused.value.frame == 4
    assert "(frame 4)" in str(refused.value)


# -- single frames ---------------------------------------------------------------------------------------------------

def test_unknown_device_single_frame_found_by_ocr_alone(tesseract: str) -> None:
    ds, planted = burned_in.unknown_us()
    before = rgb_frames(ds).copy()
    report = clean_pixels(ds, burned_in.identifying_values())
    assert report.frames == 1 and report.signature_regions == 0 and report.ocr_regions >= 2
    assert report.identifying_found >= 4 and report.identifying_removed == report.identifying_found
    for _, *box, _ in planted.boxes:
        assert overlaps(report, tuple(box))  # type: ignore[arg-type]
    after = rgb_frames(ds)
    assert readable_tokens(read_text(tesseract, after[0]), burned_in.UNKNOWN_TOKENS) == set()
    assert_rest_identical(before, after, report)


def test_ct_slice_without_text_is_bit_identical(tesseract: str) -> None:
    ds = burned_in.ct_slice()
    before = ds.PixelData
    report = clean_pixels(ds, burned_in.identifying_values())
    assert ds.PixelData == before
    assert report.regions == () and report.identifying_found == 0


# -- encodings -------------------------------------------------------------------------------------------------------

def test_compressed_transfer_syntax_is_refused_by_name() -> None:
    ds, _ = burned_in.echo_cine(frames=2)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8fake jpeg\xff\xd9", b"\xff\xd8fake jpeg\xff\xd9"])
    with pytest.raises(DeidRefused) as refused:
        clean_pixels(ds, burned_in.identifying_values())
    assert "JPEG Baseline" in refused.value.reason and JPEGBaseline8Bit in refused.value.reason
    assert refused.value.frame is None


def test_jpeg_echo_cine_is_decoded_cleaned_and_released_native(tesseract: str) -> None:
    """Echo carts send JPEG Baseline: decoded once (Pillow), cleaned, released uncompressed and still marked lossy."""
    import io

    from PIL import Image
    from pydicom.uid import ExplicitVRLittleEndian

    ds, _ = burned_in.echo_cine(frames=4)
    frames = rgb_frames(ds).copy()
    encoded = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame, "RGB").save(buf, "JPEG", quality=95)
        encoded.append(buf.getvalue())
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression = "01"
    clean_pixels(ds, burned_in.identifying_values())
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and ds.LossyImageCompression == "01"
    assert ds.PhotometricInterpretation == "RGB" and ds.BurnedInAnnotation == "NO"
    after = rgb_frames(ds)
    assert {i for i, frame in enumerate(after) if readable_tokens(read_text(tesseract, frame), burned_in.ECHO_TOKENS)} == set()


@pytest.fixture
def no_ocr(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """OCR replaced by a reader that sees no words (counts its runs): for encoding tests without tesseract."""
    calls: list[int] = []

    def read_words(images: list[np.ndarray], scale: int = 2) -> list[Word]:
        calls.append(len(images))
        return []

    monkeypatch.setattr(pixels_module.ocr, "read_words", read_words)
    return calls


def _us_single(samples: int, photometric: str, bits: int, planar: int = 0, signed: bool = False):  # type: ignore[no-untyped-def]
    """A small single-frame US object with a region box and random values, in the given encoding."""
    ds, _ = burned_in.unknown_us()
    rows, cols = 40, 50
    rng = np.random.default_rng(5)
    dtype = np.dtype(("i" if signed else "u") + str(bits // 8)).newbyteorder("<")
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, (samples, rows, cols) if planar else (rows, cols, samples),
                          dtype=dtype, endpoint=True)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = int(signed)
    if samples == 3:
        ds.PlanarConfiguration = planar
    elif "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.PixelData = values.tobytes()
    region = copy.deepcopy(burned_in._us_region((10, 5, 40, 35)))
    ds.SequenceOfUltrasoundRegions = [region]
    return ds, values


@pytest.mark.parametrize(("samples", "photometric", "bits", "planar", "signed", "black"), [
    (3, "RGB", 8, 0, False, (0, 0, 0)),
    (3, "RGB", 8, 1, False, (0, 0, 0)),
    (3, "YBR_FULL", 8, 0, False, (0, 128, 128)),
    (1, "MONOCHROME2", 16, 0, False, (0,)),
    (1, "MONOCHROME2", 16, 0, True, (-32768,)),
    (1, "MONOCHROME1", 16, 0, False, (65535,)),
    (1, "MONOCHROME1", 8, 0, False, (255,)),
])
def test_encodings_blank_outside_regions_only(no_ocr: list[int], samples: int, photometric: str, bits: int,
                                              planar: int, signed: bool, black: tuple[int, ...]) -> None:
    ds, values = _us_single(samples, photometric, bits, planar, signed)
    clean_pixels(ds, ())
    out = np.frombuffer(ds.PixelData, values.dtype).reshape(values.shape)
    if planar:
        out, values = out.transpose(1, 2, 0), values.transpose(1, 2, 0)
    out = out.reshape(40, 50, samples)
    values = values.reshape(40, 50, samples)
    inside = np.zeros((40, 50), bool)
    inside[5:35, 10:40] = True  # the region box (10, 5, 40, 35), exclusive ends
    assert np.array_equal(out[inside], values[inside])
    assert (out[~inside] == np.array(black, dtype=values.dtype)).all()
    assert no_ocr  # OCR was asked to read


def test_rle_lossless_is_decoded_cleaned_and_reencoded(no_ocr: list[int]) -> None:
    ds, values = _us_single(3, "RGB", 8)
    ds.compress(RLELossless, generate_instance_uid=False)
    clean_pixels(ds, ())
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    out = ds.pixel_array
    inside = np.zeros((40, 50), bool)
    inside[5:35, 10:40] = True
    assert np.array_equal(out[inside], values[inside]) and not out[~inside].any()


def test_round_trip_without_changes_is_bit_identical() -> None:
    ds, _ = _us_single(3, "RGB", 8, planar=1)
    before = ds.PixelData
    open_frames(ds).store(ds)
    assert ds.PixelData == before


@pytest.mark.parametrize("change", ["bits", "palette", "short", "overlay"])
def test_unsupported_pixel_descriptions_are_refused(change: str) -> None:
    ds, _ = _us_single(1, "MONOCHROME2", 16)
    if change == "bits":
        ds.BitsAllocated = 32
    elif change == "palette":
        ds.PhotometricInterpretation = "PALETTE COLOR"
    elif change == "short":
        ds.PixelData = ds.PixelData[:-10]
    else:
        ds.add_new((0x6000, 0x0100), "US", 16)
        ds.add_new((0x6000, 0x0102), "US", 15)
    with pytest.raises(DeidRefused):
        clean_pixels(ds, ())


# -- pieces ----------------------------------------------------------------------------------------------------------

def _line(*texts: str, conf: float = 90.0) -> list[Word]:
    return [Word(0, t, conf, 10 * i, 0, 10 * i + 8, 10, (1, 1, 1)) for i, t in enumerate(texts)]


@pytest.mark.parametrize(("line", "expected"), [
    (("DOE,", "JANE", "Adult", "TTE"), [True, True, False, False]),
    (("D0E,JANE",), [True]),
    (("JANF",), [False]),  # tokens under 5 characters must match exactly (after folding): JANF is not JANE
    (("ID:", "EC58213377"), [False, True]),
    (("ID:", "EC582I3377"), [False, True]),
    (("DOB:", "17/04/1961"), [False, True]),
    (("2024-03-05",), [True]),
    (("05-Mar-2024",), [True]),
    (("5", "March", "2024", "HR", "72"), [True, True, True, False, False]),
    (("Mar", "5,", "2024"), [True, True, True]),
    (("20240305",), [True]),
    (("10:23:45",), [True]),
    (("TIS", "0.7", "MI", "1.3", "52Hz", "17cm"), [False] * 6),
])
def test_identifying_words(line: tuple[str, ...], expected: list[bool]) -> None:
    matcher = IdentifyingText(burned_in.identifying_values())
    assert matcher.identifying(_line(*line)) == expected


def test_outside_us_regions_is_the_exact_complement() -> None:
    ds, _ = burned_in.unknown_us()
    ds.SequenceOfUltrasoundRegions = [burned_in._us_region((10, 20, 300, 200)), burned_in._us_region((250, 150, 600, 400))]
    rows, cols = 480, 640
    covered = np.zeros((rows, cols), np.int32)
    for r in outside_us_regions(ds, rows, cols):
        covered[r.y0:r.y1, r.x0:r.x1] += 1
    inside = np.zeros((rows, cols), bool)
    inside[20:200, 10:300] = True
    inside[150:400, 250:600] = True
    assert (covered[~inside] == 1).all() and not covered[inside].any()
