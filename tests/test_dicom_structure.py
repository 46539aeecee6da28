"""The strict structure walk never crashes on hostile bytes: it accepts or refuses with a reason."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread

from dicomguard.config import LimitSettings
from dicomguard.core.dicom_structure import indexed_structure, walk_part10
from dicomguard.core.hashing import digest_object
from dicomguard.errors import RejectedObject
from tests.conftest import pydicom_test_file
from tests.dicom_factory import ALICE, ct_series

LIMITS = LimitSettings()
SAMPLES = [ct_series(ALICE, n=1, size=16)[0]] + [
    pydicom_test_file(n).read_bytes() for n in ("JPEG2000.dcm", "MR_small_implicit.dcm", "liver_1frame.dcm")
]


def test_pixel_range_is_where_pydicom_finds_pixel_data() -> None:
    for data in SAMPLES:
        s = walk_part10(data, LIMITS)
        ds = dcmread(io.BytesIO(data))
        assert s.pixel_range is not None
        assert bytes(s.dataset[s.pixel_range[0] : s.pixel_range[1]]) == ds.PixelData


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=st.sampled_from(SAMPLES), cut=st.integers(0, 100_000), flips=st.lists(st.tuples(st.integers(0, 100_000), st.integers(1, 255)), max_size=4))
def test_mutated_files_are_accepted_or_refused_never_crash(sample: bytes, cut: int, flips) -> None:
    data = bytearray(sample[: max(132, cut % (len(sample) + 1))])
    for where, mask in flips:
        data[where % len(data)] ^= mask
    try:
        s = walk_part10(bytes(data), LIMITS)
    except RejectedObject:
        return
    # accepted: every range lies inside the object and hashing works
    if s.pixel_range:
        assert 0 <= s.pixel_range[0] <= s.pixel_range[1] <= len(s.dataset)
    digest_object(bytes(data), s)


def test_header_and_pixel_digests_are_independent() -> None:
    data = SAMPLES[0]
    s = walk_part10(data, LIMITS)
    base = digest_object(data, s)
    p0, _ = s.pixel_range
    changed_pixel = bytearray(data)
    changed_pixel[s.dataset_offset + p0 + 3] ^= 1
    d = digest_object(bytes(changed_pixel), s)
    assert d.pixel_sha256 != base.pixel_sha256 and d.header_sha256 == base.header_sha256
    changed_header = bytearray(data)
    at = data.index(ALICE.patient_id.encode())
    changed_header[at] ^= 1
    d = digest_object(bytes(changed_header), s)
    assert d.header_sha256 != base.header_sha256 and d.pixel_sha256 == base.pixel_sha256
    preamble = bytearray(data)
    preamble[5] ^= 1  # the preamble is not content
    assert digest_object(bytes(preamble), s) == base


LAYOUT_SAMPLES = SAMPLES + [
    pydicom_test_file(n).read_bytes() for n in ("MR_small_bigendian.dcm", "SC_rgb_rle_2frame.dcm", "rtplan.dcm", "CT_small.dcm")
]
"""Explicit and implicit VR, big endian, encapsulated (JPEG 2000, RLE), an object without pixels."""


def test_the_indexed_layout_rebuilds_the_walks_structure() -> None:
    """What ingest records (data set offset, Pixel Data range) gives a verified read the walk's map back: same
    data set bytes, pixel range and tag, VR encoding, and so the same digests."""
    for data in LAYOUT_SAMPLES:
        walked = walk_part10(data, LIMITS)
        indexed = indexed_structure(data, walked.transfer_syntax, walked.dataset_offset, walked.pixel_range)
        assert indexed is not None
        assert (indexed.dataset_offset, indexed.pixel_range, indexed.pixel_tag, indexed.implicit_vr, bytes(indexed.dataset)) == (
            walked.dataset_offset, walked.pixel_range, walked.pixel_tag, walked.implicit_vr, bytes(walked.dataset))
        assert digest_object(data, indexed) == digest_object(data, walked)


def test_a_layout_that_does_not_fit_the_object_is_walked_instead() -> None:
    data = SAMPLES[0]
    s = walk_part10(data, LIMITS)
    p0, p1 = s.pixel_range
    for offset, pixels in ((None, s.pixel_range), (len(data) + 1, s.pixel_range), (10, s.pixel_range),
                           (s.dataset_offset, (p0 + 2, p1)), (s.dataset_offset, (p0, len(s.dataset) + 1)),
                           (s.dataset_offset, (p1, p0)), (s.dataset_offset, (4, 8))):
        assert indexed_structure(data, s.transfer_syntax, offset, pixels) is None, (offset, pixels)
    deflated = pydicom_test_file("image_dfl.dcm").read_bytes()
    d = walk_part10(deflated, LIMITS)
    assert indexed_structure(deflated, d.transfer_syntax, d.dataset_offset, d.pixel_range) is None  # inflated: always walked
