"""Import throughput of dicomguard against bare pydicom read+write, measured in one run.

Workloads (generated synthetically with a seeded RNG, so every run sees the same bytes):

* ``ct``: 500 CT Image Storage slices, 512x512 uint16, explicit VR little endian
  (``--quick``: 100 slices);
* ``us``: one Ultrasound Multi-frame Image Storage object of about 50 MB
  (800x600 RGB, 8-bit, 35 frames).

Methods, each repetition in a fresh output folder / fresh archive home:

* ``bare``: for each file ``pydicom.dcmread(path)`` then ``dcmwrite(out, ds)``.
  This is the floor any Python DICOM importer must pay: parse the whole file
  and write it back out. It does *not* fsync, hash or encrypt.
* ``pipeline``: ``archive.operator.store.ingest_many`` in this process, the full ingest path
  (structure walk, header parse, validation, SHA-256, AES-256-GCM, fsync'd
  atomic blob write, SQLite index). Opening the archive (KDF unseal) is not
  timed; it is reported as ``open_s``.
* ``cli``: ``dicomguard import FOLDER --json`` as a subprocess: wall time
  including interpreter start-up, imports and the KDF unseal.

Why the baseline is fair: both sides start from the same files in the page
cache, read every byte, parse the header with pydicom and write every byte to
the same file system. The baseline does less work (no digest, no cipher, no
index, no fsync), so the ratio ``pipeline / bare`` is the price of the
archive's guarantees. The pipeline parses only the header with pydicom
(``stop_before_pixels``) while ``bare`` decodes the whole data set; that
difference is part of what is measured, not hidden. ``os.sync()`` runs before
every timed section so that one method does not pay for another's dirty pages.

Throughput = input bytes (MB = 10**6 bytes) or input instances / wall seconds,
median over the repetitions.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

import dicomguard
from dicomguard.app.archive import Archive
from dicomguard.app.home import init_home

PASSPHRASE = "bench-only-passphrase-0123"
TARGET_RATIO = 0.60
METHODS = ("bare", "pipeline", "cli")
SEED = 20240601
US_SHAPE = (35, 600, 800, 3)  # frames, rows, columns, samples: 50.4 MB of pixels


@dataclass(frozen=True)
class Workload:
    name: str
    folder: Path
    files: list[Path]

    @property
    def total_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


# -- synthetic inputs -------------------------------------------------------------------


def _uid(*parts: object) -> str:
    """A UID derived from the seed and ``parts``: the same inputs on every run."""
    return generate_uid(entropy_srcs=[str(SEED), *map(str, parts)])


def _base_dataset(sop_class: str, instance: str, series: str, modality: str) -> Dataset:
    """A Part 10 data set with patient/study/series/instance identity and file meta filled in."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = instance
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Bench^Patient", "BENCH-0001", "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid("study", modality), series
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240601"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "ACC0001", "1", "Ref^Doctor"
    ds.StudyDescription, ds.Modality, ds.Manufacturer = "Benchmark study", modality, "dicomguard-bench"
    ds.FrameOfReferenceUID = _uid("frame-of-reference", series)
    return ds


def make_ct_series(folder: Path, count: int, rng: np.random.Generator) -> list[Path]:
    """``count`` axial CT slices, 512x512, 12 bits stored in 16, random pixels (incompressible)."""
    folder.mkdir(parents=True)
    series = _uid("series", "ct")
    paths = []
    for i in range(count):
        ds = _base_dataset(CTImageStorage, _uid("instance", "ct", i), series, "CT")
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 2, i + 1, "Axial 1.0mm"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-250.0, -250.0, -float(i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceThickness, ds.SliceLocation, ds.PixelSpacing = 1.0, -float(i), [0.9765625, 0.9765625]
        ds.KVP, ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 120, -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16).tobytes()
        path = folder / f"ct-{i:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def make_us_cine(folder: Path, rng: np.random.Generator) -> list[Path]:
    """One multi-frame RGB ultrasound cine loop of about 50 MB."""
    folder.mkdir(parents=True)
    frames, rows, columns, samples = US_SHAPE
    ds = _base_dataset(UltrasoundMultiFrameImageStorage, _uid("instance", "us"), _uid("series", "us"), "US")
    ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 1, 1, "Cine loop"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "0001"]
    ds.NumberOfFrames, ds.FrameTime, ds.CineRate = frames, 33.3, 30
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = samples, "RGB", 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rng.integers(0, 256, size=US_SHAPE, dtype=np.uint8).tobytes()
    path = folder / "us-cine.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return [path]


def make_workloads(root: Path, ct_count: int) -> list[Workload]:
    rng = np.random.default_rng(SEED)
    ct = make_ct_series(root / "ct", ct_count, rng)
    us = make_us_cine(root / "us", rng)
    return [Workload("ct", root / "ct", ct), Workload("us", root / "us", us)]


# -- the three methods (each returns timed wall seconds and optional extras) -----------


def run_bare(work: Workload, scratch: Path) -> tuple[float, dict[str, float]]:
    """pydicom's own read+write of every file into a fresh folder (no fsync)."""
    scratch.mkdir()
    os.sync()
    start = time.perf_counter()
    for i, path in enumerate(work.files):
        ds = pydicom.dcmread(path)
        pydicom.dcmwrite(scratch / f"{i}.dcm", ds, enforce_file_format=True)
    return time.perf_counter() - start, {}


def _ingest_all(archive: Archive, work: Workload) -> None:
    items = ((str(p), p.read_bytes) for p in work.files)
    outcomes = list(archive.operator.store.ingest_many(items, source="bench"))
    bad = [o for o in outcomes if o.result is None or o.result.status != "stored"]
    if bad:
        raise SystemExit(f"{work.name}: {len(bad)} objects not stored, first: {bad[0]}")


def run_pipeline(work: Workload, scratch: Path) -> tuple[float, dict[str, float]]:
    """``archive.operator.store.ingest_many`` in process, on a fresh home; the open (KDF) is timed apart."""
    init_home(scratch, PASSPHRASE, "admin")
    opened = time.perf_counter()
    with Archive.open(scratch, PASSPHRASE) as archive:
        open_s = time.perf_counter() - opened
        os.sync()
        start = time.perf_counter()
        _ingest_all(archive, work)
        return time.perf_counter() - start, {"open_s": open_s}


def _cli_command() -> list[str]:
    script = Path(sys.executable).with_name("dicomguard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dicomguard"]


def run_cli(work: Workload, scratch: Path) -> tuple[float, dict[str, float]]:
    """``dicomguard import FOLDER --json`` as a subprocess, on a fresh home."""
    init_home(scratch, PASSPHRASE, "admin")
    env = os.environ | {"DICOMGUARD_HOME": str(scratch), "DICOMGUARD_PASSPHRASE": PASSPHRASE}
    os.sync()
    start = time.perf_counter()
    proc = subprocess.run([*_cli_command(), "import", str(work.folder), "--json"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or json.loads(proc.stdout)["stored"] != len(work.files):
        raise SystemExit(f"{work.name}: dicomguard import failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return seconds, {}


RUNNERS: dict[str, Callable[[Workload, Path], tuple[float, dict[str, float]]]] = {
    "bare": run_bare,
    "pipeline": run_pipeline,
    "cli": run_cli,
}


# -- measurement and report -------------------------------------------------------------


def measure(work: Workload, scratch_root: Path, reps: int, warmup: int) -> dict[str, dict]:
    """Run every method ``warmup`` times untimed, then ``reps`` times (order rotated
    per repetition); keep medians. The warm-up pays first-touch costs (imports, page
    faults on fresh memory, file system metadata) that would otherwise land on one method."""
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    extras: dict[str, list[float]] = {}
    for rep in range(-warmup, reps):
        for method in METHODS[rep % 3 :] + METHODS[: rep % 3]:
            scratch = scratch_root / f"{work.name}-{method}-{rep}"
            secs, extra = RUNNERS[method](work, scratch)
            shutil.rmtree(scratch)
            if rep < 0:
                continue
            seconds[method].append(secs)
            for key, value in extra.items():
                extras.setdefault(f"{method}.{key}", []).append(value)
    return summarize(work, seconds, extras)


def summarize(work: Workload, seconds: dict[str, list[float]], extras: dict[str, list[float]]) -> dict[str, dict]:
    mb, n = work.total_bytes / 1e6, len(work.files)
    result: dict[str, dict] = {"input": {"instances": n, "bytes": work.total_bytes}}
    bare = statistics.median(seconds["bare"])
    for method, runs in seconds.items():
        med = statistics.median(runs)
        result[method] = {"seconds": runs, "median_s": med, "instances_per_s": n / med, "mb_per_s": mb / med}
        if method != "bare":
            result[method]["ratio_to_bare"] = bare / med
    for key, values in extras.items():
        method, name = key.split(".", 1)
        result[method][f"median_{name}"] = statistics.median(values)
    result["pipeline"]["meets_target"] = result["pipeline"]["ratio_to_bare"] >= TARGET_RATIO
    return result


def profile_pipeline(work: Workload, scratch: Path, top: int = 10) -> dict[str, list[dict]]:
    """cProfile one in-process ingest (not part of the timings): top entries by cumulative
    time within dicomguard's code, and top entries by own time anywhere (e.g. fsync, AES)."""
    init_home(scratch, PASSPHRASE, "admin")
    profiler = cProfile.Profile()
    with Archive.open(scratch, PASSPHRASE) as archive:
        os.sync()
        profiler.runcall(_ingest_all, archive, work)
    shutil.rmtree(scratch)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = [
        {"function": f"{Path(file).name}:{line}({name})", "path": file, "calls": nc, "tottime_s": tt, "cumtime_s": ct}
        for (file, line, name), (_cc, nc, tt, ct, _callers) in stats.items()
    ]
    ours = [r for r in rows if f"{os.sep}dicomguard{os.sep}" in r["path"]]
    by_cum = sorted(ours, key=lambda r: r["cumtime_s"], reverse=True)[:top]
    by_own = sorted(rows, key=lambda r: r["tottime_s"], reverse=True)[:top]
    return {"dicomguard_by_cumtime": by_cum, "all_by_tottime": by_own}


def _filesystem(path: Path) -> str:
    """Type of the file system holding ``path`` (Linux, best effort): fsync cost depends on it."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _dev, mount, fstype, *_ = line.split()
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def machine_info(workdir: Path) -> dict[str, object]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pydicom": pydicom.__version__,
        "numpy": np.__version__,
        "dicomguard": dicomguard.__version__,
        "workdir": str(workdir),
        "workdir_filesystem": _filesystem(workdir),
    }


def print_table(results: dict[str, dict]) -> None:
    print(f"\n{'workload':<9}{'method':<10}{'median s':>10}{'inst/s':>10}{'MB/s':>9}{'vs bare':>9}")
    for name, res in results.items():
        for method in METHODS:
            r = res[method]
            ratio = f"{r['ratio_to_bare']:.0%}" if "ratio_to_bare" in r else "-"
            print(f"{name:<9}{method:<10}{r['median_s']:>10.3f}{r['instances_per_s']:>10.1f}{r['mb_per_s']:>9.1f}{ratio:>9}")
    for name, res in results.items():
        pipe, cli = res["pipeline"], res["cli"]
        verdict = "met" if pipe["meets_target"] else "MISSED"
        print(f"{name}: pipeline at {pipe['ratio_to_bare']:.0%} of bare (target {TARGET_RATIO:.0%}: {verdict}); "
              f"archive open {pipe['median_open_s']:.2f} s (untimed in pipeline), "
              f"cli - pipeline = {cli['median_s'] - pipe['median_s']:.2f} s")


def print_profile(profile: dict[str, list[dict]]) -> None:
    for title, rows in (("dicomguard, by cumulative time", profile["dicomguard_by_cumtime"]), ("all, by own time", profile["all_by_tottime"])):
        print(f"\nprofile of one CT pipeline run ({title}):")
        for r in rows:
            print(f"  {r['cumtime_s']:8.3f} cum {r['tottime_s']:8.3f} own {r['calls']:>8} calls  {r['function']}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 repetition and 100 CT slices")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per method (default 3; --quick: 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (default 1; --quick: 0)")
    p.add_argument("--profile", action="store_true", help="also cProfile one CT pipeline run")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where inputs and homes go")
    p.add_argument("--out", type=Path, help="JSON results (default bench/results/import-<date>[-quick].json)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    reps, warmup, ct_count = (1, 0, 100) if args.quick else (args.reps, args.warmup, 500)
    out = args.out or Path(__file__).parent / "results" / f"import-{dt.date.today()}{'-quick' if args.quick else ''}.json"
    root = Path(tempfile.mkdtemp(prefix="dicomguard-bench-", dir=args.workdir))
    try:
        print(f"generating inputs in {root} ...", flush=True)
        workloads = make_workloads(root / "inputs", ct_count)
        results = {}
        for work in workloads:
            print(f"measuring {work.name}: {len(work.files)} files, {work.total_bytes / 1e6:.1f} MB, "
                  f"{warmup} warm-up + {reps} timed rep(s) ...", flush=True)
            results[work.name] = measure(work, root, reps, warmup)
        report = {"machine": machine_info(root), "reps": reps, "warmup": warmup, "target_ratio": TARGET_RATIO, "results": results}
        if args.profile:
            report["profile_ct_pipeline"] = profile_pipeline(workloads[0], root / "profile-home")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(results)
    if args.profile:
        print_profile(report["profile_ct_pipeline"])
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    main()
