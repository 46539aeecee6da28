"""The streaming ZIP writer: readable by zipfile and Info-ZIP, stored members, ZIP64 where a field overflows."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from dicomguard.media import ZipStreamWriter
from dicomguard.media.zip_stream import central_header, dos_time, end_records, local_header

GiB = 1 << 30
WHEN = time.struct_time((2024, 3, 5, 10, 15, 30, 1, 65, -1))


def write(members: dict[str, bytes], **options: object) -> bytes:
    writer = ZipStreamWriter(modified=WHEN, **options)  # type: ignore[arg-type]
    out = bytearray()
    for name, data in members.items():
        for chunk in writer.add(name, data):
            out += chunk
    out += writer.finish()
    assert writer.offset == len(out) + options.get("offset", 0)  # type: ignore[operator]
    return bytes(out)


def test_members_round_trip_stored_without_data_descriptor() -> None:
    members = {"DICOM/A/B": os.urandom(300_000), "EMPTY": b"", "DICOMDIR": os.urandom(1001)}
    data = write(members, chunk_size=4096)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.testzip() is None
        assert {n: z.read(n) for n in z.namelist()} == members
        for info in z.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            assert not info.flag_bits & 0x08  # sizes and CRC in the local header (APPNOTE 4.4.4 bit 3 unset)
            assert info.date_time == (2024, 3, 5, 10, 15, 30)
            assert (info.external_attr >> 16) == 0o100644


def test_member_bytes_are_views_of_the_input_except_a_copied_tail() -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    writer = ZipStreamWriter(chunk_size=1 << 20, tail=1 << 16)
    header, *body = writer.add("X", data)
    assert isinstance(header, bytes) and b"".join(bytes(c) for c in body) == data
    views, last = body[:-1], body[-1]
    assert all(isinstance(v, memoryview) and v.obj is data for v in views)  # zero-copy
    assert isinstance(last, bytes) and len(last) == 1 << 16  # the tail: holding it does not pin ``data``
    assert max(len(c) for c in body) <= 1 << 20


def test_names_are_checked() -> None:
    writer = ZipStreamWriter()
    writer.add("A/B", b"x")
    for bad in ("A/B", "/abs", "../up", "a\\b", "C:/x", ""):
        with pytest.raises(ValueError):
            writer.add(bad, b"x")
    writer.finish()
    with pytest.raises(RuntimeError):
        writer.add("C", b"x")


def test_dos_time() -> None:
    assert dos_time(WHEN) == ((10 << 11) | (15 << 5) | 15, (44 << 9) | (3 << 5) | 5)
    assert dos_time(time.struct_time((1970, 1, 1, 0, 0, 0, 3, 1, 0))) == (0, (1 << 5) | 1)


# -- ZIP64 decisions on fake sizes and offsets (APPNOTE 4.5.3, 4.4.1.4) ----------------------------------------------


def _extra(record: bytes, fixed: int, name: bytes) -> bytes:
    return record[fixed + len(name):]


def test_local_header_switches_to_zip64_for_a_4_gib_member() -> None:
    small = local_header(b"N", 0, 0x1234, 0xFFFFFFFE, (0, 0))
    assert struct.unpack_from("<H", small, 4)[0] == 20 and struct.unpack_from("<II", small, 18) == (0xFFFFFFFE, 0xFFFFFFFE)
    assert _extra(small, 30, b"N") == b""
    big = local_header(b"N", 0, 0x1234, 5 * GiB, (0, 0))
    assert struct.unpack_from("<H", big, 4)[0] == 45
    assert struct.unpack_from("<II", big, 18) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert _extra(big, 30, b"N") == struct.pack("<HHQQ", 1, 16, 5 * GiB, 5 * GiB)  # both sizes, original first


@pytest.mark.parametrize(("size", "offset", "fields"), [
    (100, 0xFFFFFFFE, []),
    (100, 0xFFFFFFFF, ["offset"]),
    (100, 5 * GiB, ["offset"]),
    (5 * GiB, 100, ["size", "size"]),
    (5 * GiB, 6 * GiB, ["size", "size", "offset"]),
])
def test_central_header_moves_only_overflowing_fields(size: int, offset: int, fields: list[str]) -> None:
    record = central_header(b"N", 0, 1, size, offset, (0, 0))
    csize, usize = struct.unpack_from("<II", record, 20)
    stored_offset = struct.unpack_from("<I", record, 42)[0]
    extra = _extra(record, 46, b"N")
    values = {"size": size, "offset": offset}
    if not fields:
        assert extra == b"" and (csize, usize, stored_offset) == (size, size, offset)
        return
    assert extra[:4] == struct.pack("<HH", 1, 8 * len(fields))
    assert list(struct.unpack_from(f"<{len(fields)}Q", extra, 4)) == [values[f] for f in fields]
    assert (csize == 0xFFFFFFFF) == ("size" in fields) and (stored_offset == 0xFFFFFFFF) == ("offset" in fields)
    assert struct.unpack_from("<H", record, 6)[0] == 45


def test_end_records_switch_to_zip64() -> None:
    plain = end_records(3, 1000, 200)
    assert plain[:4] == b"PK\x05\x06" and len(plain) == 22
    for entries, offset, size in [(70_000, 1000, 200), (3, 5 * GiB, 200), (3, 1000, 5 * GiB)]:
        records = end_records(entries, offset, size)
        assert records[:4] == b"PK\x06\x06" and records[56:60] == b"PK\x06\x07" and records[76:80] == b"PK\x05\x06"
        assert struct.unpack_from("<QQQQ", records, 24) == (entries, entries, size, offset)
        assert struct.unpack_from("<Q", records, 64)[0] == offset + size  # the locator points at the ZIP64 end record


def test_members_beyond_4_gib_are_read_back(tmp_path: Path) -> None:
    """A real archive whose members start past 4 GiB: written into a sparse file behind a 4.5 GiB hole."""
    start = 4 * GiB + GiB // 2
    members = {"DICOM/A": os.urandom(70_000), "DICOMDIR": b"directory"}
    data = write(members, offset=start)
    path = tmp_path / "sparse.zip"
    with path.open("wb") as f:
        f.seek(start)
        f.write(data)
    try:
        with zipfile.ZipFile(path) as z:
            assert z.infolist()[0].header_offset == start
            assert {n: z.read(n) for n in z.namelist()} == members
    finally:
        path.unlink()  # 4.5 GiB apparent size: not left for pytest's kept temp folders


def test_more_than_65535_members() -> None:
    members = {f"M{i:06d}": i.to_bytes(3, "little") for i in range(70_000)}
    data = write(members)
    assert b"PK\x06\x06" in data[-200:]
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        assert len(names) == 70_000 and z.read("M069999") == (69_999).to_bytes(3, "little")


def test_crc_and_sizes_match_for_info_zip(tmp_path: Path) -> None:
    """Info-ZIP's ``unzip -t`` is an independent reader (CRC, local vs central headers)."""
    unzip = shutil.which("unzip")
    if unzip is None:
        if os.environ.get("CI"):
            pytest.fail("unzip (Debian package unzip) is required under CI")
        pytest.skip("unzip not installed (Debian package unzip)")
    members = {"DICOM/A": os.urandom(200_000), "DICOM/B": b"", "DICOMDIR": os.urandom(77)}
    path = tmp_path / "a.zip"
    path.write_bytes(write(members))
    result = subprocess.run([unzip, "-t", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "No errors detected" in result.stdout, result.stdout + result.stderr
    assert zlib.crc32(members["DICOM/A"]) == zipfile.ZipFile(path).getinfo("DICOM/A").CRC


def test_a_streaming_reader_reads_stored_members(tmp_path: Path) -> None:
    """Java's ZipInputStream (``jar x`` from stdin) reads front to back; it refuses stored members with data descriptors."""
    jar = shutil.which("jar")
    if jar is None:
        pytest.skip("no JDK jar tool: the streaming-reader check needs one")
    members = {"DICOM/A": os.urandom(100_000), "DICOMDIR": os.urandom(99)}
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run([jar, "x"], input=write(members), cwd=out, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (out / "DICOM" / "A").read_bytes() == members["DICOM/A"] and (out / "DICOMDIR").read_bytes() == members["DICOMDIR"]
