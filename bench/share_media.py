"""Share-media throughput: a study streamed as a ZIP of PS3.10 files with a DICOMDIR, on one core, in memory.

Workloads (generated in memory with a seeded RNG, the same bytes every run; never written to disk):

* ``ct``: 500 CT Image Storage slices, 512x512, 12 bits stored in 16, explicit VR
  little endian, one series (500 x 0.53 MB = 263 MB; ``--quick``: 100 slices);
* ``us``: one Ultrasound Multi-frame Image Storage cine, 38 frames of 800x600 RGB
  (54.7 MB).

Methods, each consuming every chunk into a counting sink (no copy, no I/O):

* ``media``: ``StudyMedia().stream(objects)``, the whole thing: header parse,
  File IDs, directory records, CRC-32, ZIP headers, DICOMDIR, central directory;
* ``zip_only``: ``ZipStreamWriter`` alone on the same bytes (the ZIP part of ``media``);
* ``zipfile``: Python's ``zipfile`` writing the same members stored into a
  non-seekable sink (it then adds data descriptors), for comparison;
* ``crc_only``: ``zlib.crc32`` over every object, the floor of any ZIP writer.

Throughput = input (payload) bytes / seconds, MB = 10**6 bytes. Each method runs
once per repetition, the order rotated; one untimed warm-up round first. Both
wall time and the process's CPU time are reported: the target (>= 300 MB/s of
payload on one core for ``ct``, ``media``) refers to CPU time on a shared
machine and to wall time on a quiet one; the load average before and after is
recorded so a noisy run shows. The process is pinned to one CPU
(``sched_setaffinity``). ``peak_traced_mb`` is tracemalloc's peak during one
extra, untimed ``media`` run per workload, inputs excluded (``ct``: headers,
records, central directory; ``us``: the tail copy and bookkeeping).

Usage: ``python bench/share_media.py [--quick] [--reps N] [--cpu N] [--out FILE]``
(defaults: 7 repetitions, CPU 0, ``bench/results/share-media-<date>[-quick].json``;
``bench/results/`` is git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

from dicomguard.media import StudyMedia, ZipStreamWriter

SEED = 20240601
US_SHAPE = (38, 600, 800, 3)  # frames, rows, columns, samples: 54.7 MB of pixels
TARGET_MB_S = 300.0
METHODS = ("media", "zip_only", "zipfile", "crc_only")


# -- synthetic inputs (in memory) ------------------------------------------------------------


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(SEED), *map(str, parts)])


def _encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _base(sop_class: str, instance: str, series: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = UID(instance)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Bench^Patient", "BENCH-0001", "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid("study"), series
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240601"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "ACC0001", "1", "Ref^Doctor"
    ds.StudyDescription, ds.Modality, ds.Manufacturer = "Benchmark study", modality, "dicomguard-bench"
    return ds


def ct_slices(count: int, rng: np.random.Generator) -> list[bytes]:
    series = _uid("series", "ct")
    out = []
    for i in range(count):
        ds = _base(CTImageStorage, _uid("instance", "ct", i), series, "CT")
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 2, i + 1, "Axial 1.0mm"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [-250.0, -250.0, -float(i)], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceThickness, ds.PixelSpacing = 1.0, [0.9765625, 0.9765625]
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16).tobytes()
        out.append(_encode(ds))
    return out


def us_cine(rng: np.random.Generator) -> list[bytes]:
    frames, rows, columns, samples = US_SHAPE
    ds = _base(UltrasoundMultiFrameImageStorage, _uid("instance", "us"), _uid("series", "us"), "US")
    ds.SeriesNumber, ds.InstanceNumber, ds.NumberOfFrames, ds.FrameTime = 1, 1, frames, 33.3
    ds.FrameIncrementPointer = 0x00181063
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = samples, "RGB", 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rng.integers(0, 256, size=US_SHAPE, dtype=np.uint8).tobytes()
    return [_encode(ds)]


# -- methods: each consumes everything and returns the bytes it produced ----------------------


def run_media(objects: list[bytes]) -> int:
    media = StudyMedia()
    produced = sum(len(chunk) for chunk in media.stream(objects))
    if not media.complete or media.payload_bytes != sum(map(len, objects)):
        raise SystemExit("media: incomplete stream")
    return produced


def run_zip_only(objects: list[bytes]) -> int:
    writer = ZipStreamWriter()
    produced = 0
    for i, data in enumerate(objects):
        produced += sum(len(c) for c in writer.add(f"DICOM/IM{i:06d}", data))
    return produced + len(writer.finish())


class _CountingSink(io.RawIOBase):
    """A non-seekable sink that only counts (as an HTTP response would look to zipfile)."""

    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        n = len(data)
        self.count += n
        return n


def run_zipfile(objects: list[bytes]) -> int:
    sink = _CountingSink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as z:  # type: ignore[arg-type]
        for i, data in enumerate(objects):
            z.writestr(f"DICOM/IM{i:06d}", data)
    return sink.count


def run_crc_only(objects: list[bytes]) -> int:
    for data in objects:
        zlib.crc32(memoryview(data))
    return 0


RUNNERS: dict[str, Callable[[list[bytes]], int]] = {
    "media": run_media, "zip_only": run_zip_only, "zipfile": run_zipfile, "crc_only": run_crc_only,
}


# -- measurement ------------------------------------------------------------------------------


def _summary(values: list[float]) -> dict[str, float]:
    median = statistics.median(values)
    return {"median": round(median, 1), "min": round(min(values), 1), "max": round(max(values), 1),
            "spread": round((max(values) - min(values)) / median, 3)}


def measure(objects: list[bytes], reps: int, warmup: int) -> dict[str, dict[str, object]]:
    payload = sum(map(len, objects))
    wall: dict[str, list[float]] = {m: [] for m in METHODS}
    cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    produced: dict[str, int] = {}
    for rep in range(warmup + reps):
        order = METHODS[rep % len(METHODS):] + METHODS[:rep % len(METHODS)]
        for method in order:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            produced[method] = RUNNERS[method](objects)
            seconds_wall, seconds_cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
            if rep >= warmup:
                wall[method].append(seconds_wall)
                cpu[method].append(seconds_cpu)
    out: dict[str, dict[str, object]] = {}
    for method in METHODS:
        out[method] = {
            "mb_per_s_wall": _summary([payload / s / 1e6 for s in wall[method]]),
            "mb_per_s_cpu": _summary([payload / max(s, 1e-9) / 1e6 for s in cpu[method]]),
            "seconds_wall": [round(s, 4) for s in wall[method]],
            "seconds_cpu": [round(s, 4) for s in cpu[method]],
            "output_bytes": produced[method],
        }
    return out


def peak_traced(objects: Iterable[bytes]) -> float:
    """tracemalloc peak (MB) of one ``media`` run; the inputs were allocated before tracing started."""
    tracemalloc.start()
    try:
        for _ in StudyMedia().stream(objects):
            pass
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 CT slices, 2 repetitions, no warm-up")
    parser.add_argument("--reps", type=int, help="timed repetitions (default 7; --quick: 2)")
    parser.add_argument("--cpu", type=int, default=0, help="the one CPU to run on")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    reps = args.reps or (2 if args.quick else 7)
    warmup = 0 if args.quick else 1
    os.sched_setaffinity(0, {args.cpu})
    rng = np.random.default_rng(SEED)
    workloads = {"ct": ct_slices(100 if args.quick else 500, rng), "us": us_cine(rng)}
    load_before = os.getloadavg()
    results: dict[str, object] = {}
    for name, objects in workloads.items():
        payload = sum(map(len, objects))
        measured = measure(objects, reps, warmup)
        results[name] = {"objects": len(objects), "payload_bytes": payload, "methods": measured,
                         "peak_traced_mb": round(peak_traced(objects), 1)}
        print(f"\n{name}: {len(objects)} objects, {payload / 1e6:.1f} MB; peak traced {results[name]['peak_traced_mb']} MB")  # type: ignore[index]
        for method, r in measured.items():
            w, c = r["mb_per_s_wall"], r["mb_per_s_cpu"]
            print(f"  {method:<9} wall {w['median']:7.0f} MB/s ({w['min']:.0f}-{w['max']:.0f})"  # type: ignore[index]
                  f"   cpu {c['median']:7.0f} MB/s ({c['min']:.0f}-{c['max']:.0f})")  # type: ignore[index]
    load_after = os.getloadavg()
    ct_media = results["ct"]["methods"]["media"]  # type: ignore[index]
    target = {"target_mb_per_s": TARGET_MB_S, "ct_media_cpu_median": ct_media["mb_per_s_cpu"]["median"],
              "ct_media_wall_median": ct_media["mb_per_s_wall"]["median"],
              "met_cpu": ct_media["mb_per_s_cpu"]["median"] >= TARGET_MB_S,
              "met_wall": ct_media["mb_per_s_wall"]["median"] >= TARGET_MB_S}
    print(f"\ntarget >= {TARGET_MB_S:.0f} MB/s (ct, media): cpu {'met' if target['met_cpu'] else 'MISSED'}, "
          f"wall {'met' if target['met_wall'] else 'MISSED'}; load {load_before[0]:.2f} -> {load_after[0]:.2f}")
    out = args.out or ROOT / "bench" / "results" / f"share-media-{dt.date.today().isoformat()}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "reps": reps, "warmup": warmup, "cpu": args.cpu,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "pydicom": pydicom.__version__, "numpy": np.__version__,
                    "zlib": zlib.ZLIB_RUNTIME_VERSION, "loadavg_before": load_before, "loadavg_after": load_after},
        "target": target, "workloads": results,
    }, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
