"""A received C-STORE data set becomes the Part 10 file pynetdicom would make of it, byte for byte (PS3.10 7.1)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from dicomguard.dimse.part10 import file_meta_information

_UIDS = st.from_regex(r"[12](\.[1-9][0-9]{0,6}){1,8}", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(sop_class=_UIDS, instance=_UIDS, syntax=st.sampled_from(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50",
                                                                  "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.201"]))
def test_file_meta_information_is_pynetdicoms_byte_for_byte(sop_class: str, instance: str, syntax: str) -> None:
    expected = encode_file_meta(create_file_meta(sop_class_uid=sop_class, sop_instance_uid=instance, transfer_syntax=syntax))
    assert file_meta_information(sop_class, instance, syntax) == expected
