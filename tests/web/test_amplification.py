"""Resource amplification: what one request costs is bounded by configuration, not by what the client asks for.

One test per amplification path (WADO-RS frame lists, Deflate bombs at STOW-RS
and at ``dicomguard import``, metadata and rendered reads of a Deflated
object). Each asserts the refusal or the bounded answer **and** the server's
peak memory during the request, against a bound stated in the test. (The
ingest refusals themselves are also rows of ``tests/test_bad_input.py``.)

How peak memory is measured: the HTTPS server runs in this process (fixture
``web``), so the process's peak resident set during a request bounds the
server's. Linux resets the high-water mark ``VmHWM`` when ``5`` is written to
``/proc/self/clear_refs`` (proc(5)); :class:`PeakMemory` resets it, runs the
request, and reports ``VmHWM`` minus the resident size at the reset. Unlike
tracemalloc, this counts every allocation of the process: Python objects,
numpy arrays, zlib output, and the buffers of Pillow and OpenSSL, which
tracemalloc does not see. The client streams each response and keeps at most
:data:`KEEP` bytes of it, so its share is small and only makes the bound
conservative; every path is exercised once before it is measured, so that
first imports, the TLS handshake and caches are not charged to the request.
(Memory the allocator already holds can be reused without raising the peak;
large buffers, the ones that matter here, are mapped afresh, and each bound is
far below what the path cost before: 375 to 675 MiB for the refusals and
frames, 2 and 15 times the inflated size for metadata and thumbnails.)
Where ``clear_refs`` cannot be written (not Linux), tracemalloc's peak is used.
"""

from __future__ import annotations

import gc
import io
import json
import re
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.uid import DeflatedExplicitVRLittleEndian
from typer.testing import CliRunner

from dicomguard.cli.main import app as cli
from dicomguard.config import LimitSettings
from dicomguard.errors import NotFoundError
from dicomguard.web.pixels import read_header
from dicomguard.web.render import PNG, RenderOptions, RenderTooLarge, render
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of, us_multiframe
from tests.web.multipart_util import encode, split

MiB = 1024 * 1024
KEEP = 4 * MiB
"""Bytes of a response body the client keeps (the rest is counted and dropped)."""
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match, field
    return int(match.group(1))


class PeakMemory:
    """Peak memory growth of this process inside the ``with`` block, in bytes (see the module docstring)."""

    def __init__(self) -> None:
        self.peak = 0
        self.seconds = 0.0
        self._rss = False
        self._base = 0
        self._start = 0.0

    def __enter__(self) -> Self:
        gc.collect()
        try:
            _CLEAR_REFS.write_text("5")
            self._rss = True
            self._base = _status_kib("VmHWM")
        except OSError:
            tracemalloc.start()
        self._start = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.seconds = time.perf_counter() - self._start
        if self._rss:
            self.peak = (_status_kib("VmHWM") - self._base) * 1024
        else:
            self.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

    def __str__(self) -> str:
        return f"peak +{self.peak / MiB:.1f} MiB in {self.seconds:.2f} s"


class Answer:
    """A streamed response: status, headers, the first :data:`KEEP` bytes of the body and its full length."""

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self.headers = response.headers
        kept = bytearray()
        self.length = 0
        for chunk in response.iter_bytes():
            self.length += len(chunk)
            if len(kept) < KEEP:
                kept += chunk[: KEEP - len(kept)]
        self.body = bytes(kept)


def get(http: httpx.Client, url: str, **kw: object) -> Answer:
    with http.stream("GET", url, **kw) as response:  # type: ignore[arg-type]
        return Answer(response)


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = dataset_of(data)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def _url(data: bytes) -> str:
    study, series, sop = _uids(data)
    return f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"


def deflated_ct(size: int, *, every: int, seed: int = 5, patient=ALICE) -> bytes:  # type: ignore[no-untyped-def]
    """A ``size`` x ``size`` 16-bit CT in the Deflated transfer syntax (PS3.5 A.5).

    ``every=0``: all pixels zero, a Deflate bomb (about 1000:1). Otherwise every
    ``every``-th pixel is random, the rest zero: ``every=64`` deflates about 40:1,
    an ordinary object under the default ratio limit.
    """
    ds = dataset_of(ct_series(patient, n=1, seed=seed)[0])
    ds.Rows = ds.Columns = size
    pixels = np.zeros(size * size, np.int16)
    if every:
        pixels[::every] = np.random.default_rng(seed).integers(0, 3000, pixels[::every].shape, dtype=np.int16)
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# -- WADO-RS frames (PS3.18 8.3.3.1 frame lists) -----------------------------------------------


def test_frame_list_of_duplicates_answers_each_frame_once_in_bounded_memory(web) -> None:  # type: ignore[no-untyped-def]
    """905 x frame 1 in a 2 KB URL used to return 905 copies (680 MiB here), all built in memory.

    Bound: one part, and the request costs under 32 MiB although the list names 905 frames of 768 KiB.
    """
    us = us_multiframe(ALICE, frames=4, rows=512, cols=512, seed=7)
    web.archive.operator.store.ingest(us)
    frame = 512 * 512 * 3
    pixels = dataset_of(us).PixelData
    accept = {"Accept": 'multipart/related; type="application/octet-stream"'}
    with web.http(web.token("dr.frames", "radiologist")) as http:
        assert get(http, f"{_url(us)}/frames/2", headers=accept).status == 200  # warm-up
        url = f"{_url(us)}/frames/" + ",".join(["1"] * 905)
        assert len(url) < 2100
        with PeakMemory() as mem:
            answer = get(http, url, headers=accept)
        print("frames 905 x 1:", mem)
        assert answer.status == 200
        assert answer.length < frame + 4096
        ((_, payload),) = split(answer.headers["content-type"], answer.body)
        assert payload == pixels[:frame]
        # first-seen order, each distinct frame once
        order = get(http, f"{_url(us)}/frames/3,1,3,2,1", headers=accept)
        assert [p for _, p in split(order.headers["content-type"], order.body)] == [
            pixels[2 * frame : 3 * frame], pixels[:frame], pixels[frame : 2 * frame]
        ]
    assert mem.peak < 32 * MiB, mem


def test_frame_list_over_the_limit_is_refused_before_anything_is_read(web) -> None:  # type: ignore[no-untyped-def]
    """More distinct frames than ``limits.max_frames_per_request`` (default 256): 400, nothing decrypted; under 16 MiB."""
    limit = LimitSettings().max_frames_per_request
    us = us_multiframe(BOB, frames=2, rows=64, cols=64, seed=8)
    web.archive.operator.store.ingest(us)
    with web.http(web.token("dr.many", "radiologist")) as http:
        assert get(http, f"{_url(us)}/frames/1").status == 200  # warm-up
        url = f"{_url(us)}/frames/" + ",".join(str(i) for i in range(1, limit + 2))
        with PeakMemory() as mem:
            answer = get(http, url)
        print("frames over the limit:", mem)
        assert answer.status == 400
        assert str(limit) in json.loads(answer.body)["detail"]
        # duplicates do not count against the limit: 2 distinct frames named limit+1 times
        assert get(http, f"{_url(us)}/frames/" + ",".join(["1", "2"] * (limit // 2 + 1))).status == 200
    assert mem.peak < 16 * MiB, mem


# -- Deflate bombs at ingest (PS3.5 A.5) ---------------------------------------------------------


def test_deflate_bomb_is_refused_at_stow_in_bounded_memory(web) -> None:  # type: ignore[no-untyped-def]
    """A 0.13 MiB object that inflates to 128 MiB (1000:1) used to be stored at a cost of +322 MiB.

    Now refused (409, FailureReason A700 Out of Resources) after inflating at most
    ``max_inflation_ratio`` times its size; bound: under 48 MiB for the request.
    """
    bomb = deflated_ct(8192, every=0)
    assert len(bomb) < MiB // 4
    ctype, body = encode([bomb])
    warm_type, warm_body = encode([ct_series(BOB, n=1, seed=12)[0]])
    with web.http(web.token("tech.stow", "technologist")) as http:
        assert http.post("/dicomweb/studies", content=warm_body, headers={"Content-Type": warm_type}).status_code == 200
        with PeakMemory() as mem:
            r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    print("STOW deflate bomb:", mem)
    assert r.status_code == 409, r.text
    (failed,) = r.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xA700]
    _, _, sop = _uids(bomb)
    with pytest.raises(NotFoundError):
        web.archive.operator.retrieve.instance(sop)
    assert mem.peak < 48 * MiB, mem


def test_deflate_bomb_is_refused_at_import_in_bounded_memory(home, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``dicomguard import`` of the same bomb: rejected as too-large naming the ratio limit; bound: under 64 MiB.

    (The command opens the archive inside the measured block: its own cost is part of the bound.)
    """
    folder = tmp_path / "incoming"
    folder.mkdir()
    runner = CliRunner()
    (folder / "ok.dcm").write_bytes(ct_series(BOB, n=1, seed=13)[0])
    assert runner.invoke(cli, ["import", str(folder), "--json"], catch_exceptions=False).exit_code == 0  # warm-up
    (folder / "ok.dcm").unlink()
    (folder / "bomb.dcm").write_bytes(deflated_ct(8192, every=0))
    with PeakMemory() as mem:
        result = runner.invoke(cli, ["import", str(folder), "--json"], catch_exceptions=False)
    print("import deflate bomb:", mem)
    assert result.exit_code == 1, result.stdout
    (rejection,) = json.loads(result.stdout)["rejections"]
    assert rejection["reason"] == "too-large"
    assert "max_inflation_ratio" in json.dumps(rejection)
    assert mem.peak < 64 * MiB, mem


# -- reads of a Deflated object: metadata and rendered (PS3.18 10.4.1.1.2, 10.4.1.1.4) ---------------------


INFLATED = 4096 * 4096 * 2
"""Inflated Pixel Data of the read tests' object (32 MiB, stored as about 0.8 MiB)."""


@pytest.fixture
def deflated(web) -> Iterator[tuple[object, str]]:  # type: ignore[no-untyped-def]
    data = deflated_ct(4096, every=64)
    assert len(data) < INFLATED // 20
    web.archive.operator.store.ingest(data)
    with web.http(web.token("dr.deflated", "radiologist")) as http:
        yield http, _url(data)


def test_metadata_of_a_deflated_object_inflates_it_once(deflated) -> None:  # type: ignore[no-untyped-def]
    """Metadata used to inflate the object again and copy its Pixel Data (+240 MiB for 128 MiB inflated).

    Bound: the one inflation done by verification plus 8 MiB (1.25 x 32 MiB + 8 MiB = 48 MiB).
    """
    http, url = deflated
    accept = {"Accept": "application/dicom+json"}
    assert get(http, f"{url}/metadata", headers=accept).status == 200  # warm-up
    with PeakMemory() as mem:
        answer = get(http, f"{url}/metadata", headers=accept)
    print("metadata of a deflated object:", mem)
    assert answer.status == 200
    (doc,) = json.loads(answer.body)
    assert doc["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010")
    assert doc["00280010"]["Value"] == [4096]
    assert mem.peak < INFLATED * 5 // 4 + 8 * MiB, mem


def test_rendered_thumbnail_of_a_deflated_object_is_bounded(deflated) -> None:  # type: ignore[no-untyped-def]
    """A 64x64 thumbnail used to cost +1,979 MiB (128 MiB inflated): inflated again, whole frame in float64.

    Bound: the verified inflation, one decoded frame and bounded work buffers: 3 x 32 MiB + 16 MiB = 112 MiB.
    The rendered size is capped by ``limits.max_rendered_size`` (default 2048): a larger viewport is a 400,
    a larger frame without a viewport is scaled down to fit.
    """
    http, url = deflated
    png = {"Accept": "image/png"}
    assert get(http, f"{url}/rendered", params={"viewport": "32,32"}, headers=png).status == 200  # warm-up
    with PeakMemory() as mem:
        answer = get(http, f"{url}/rendered", params={"viewport": "64,64"}, headers=png)
    print("64x64 thumbnail of a deflated object:", mem)
    assert answer.status == 200
    assert Image.open(io.BytesIO(answer.body)).size == (64, 64)
    assert mem.peak < 3 * INFLATED + 16 * MiB, mem
    cap = LimitSettings().max_rendered_size
    assert get(http, f"{url}/rendered", params={"viewport": f"{cap + 1},{cap + 1}"}, headers=png).status == 400
    with PeakMemory() as full:
        answer = get(http, f"{url}/rendered", headers=png)
    print("full-size render of a deflated object:", full)
    assert answer.status == 200
    assert Image.open(io.BytesIO(answer.body)).size == (cap, cap)
    assert full.peak < 3 * INFLATED + 16 * MiB, full


def test_a_frame_decoded_over_the_inflate_limit_is_not_rendered(archive) -> None:  # type: ignore[no-untyped-def]
    """The decoder is bounded too: a frame whose decoded size is over ``limits.max_inflated_bytes`` is refused
    before anything is decoded (the route answers 501), so a small encapsulated frame cannot claim a huge image."""
    stored = archive.operator.store.ingest(ct_series(BOB, n=1, size=64, seed=14)[0])
    obj = archive.operator.retrieve.instance(stored.sop_instance_uid)
    decoded = 64 * 64 * 2
    with pytest.raises(RenderTooLarge):
        render(obj, read_header(obj), 1, PNG, RenderOptions(), LimitSettings(max_inflated_bytes=decoded - 1))
    png = render(obj, read_header(obj), 1, PNG, RenderOptions(), LimitSettings(max_inflated_bytes=decoded))
    assert Image.open(io.BytesIO(png)).size == (64, 64)
