"""Backup benchmark: ``backup run`` / ``drill`` / restore beside ``cp -r`` and restic, measured in one run.

Workload (seeded, so every run sees the same bytes): one archive home of >= 2 GB (``--size-gb``;
``--quick``: 0.2 GB) holding half its bytes in CT slices (512x512, 16-bit, random pixels: nothing
compresses) and half in RGB echo cines (60 frames of 800x600, 86.4 MB each), ingested untimed with
``archive.operator.store.ingest_many``.

Methods, each repetition in the same run, the order of the four groups rotating between repetitions
(``os.sync()`` before every timed section, and a final ``os.sync()`` inside every timed section that
writes, so nobody wins by leaving dirty pages):

* ``cp``: ``cp -r HOME/blobs`` into a fresh folder on the same file system: the disk's sequential copy anchor.
* ``folder``: ``backups.run`` to a fresh folder target (full); again with nothing new; again after 1 % new
  objects were ingested (untimed); then ``backups.drill`` of that target (restore into a scratch home, verify
  every blob) and ``restore_home`` from it into a new home (blobs copied, fsync'd).
* ``s3``: the same full / unchanged / +1 % runs to SeaweedFS (``weed mini``, HTTPS) into a fresh bucket with
  Object Lock, ``immutable_days = 1`` (COMPLIANCE retention on every write-once object).
* ``restic``: ``restic backup`` of HOME/blobs and HOME/index.db* into a fresh local repository (same file
  system, restic's defaults, password file) and ``restic restore latest`` into a fresh folder.

Separately (``--incremental-instances N``): an archive of N tiny CT objects (8x8 pixels), ingested with
``ingest_many`` in large batches, backed up once to a folder, then the unchanged incremental run is timed
``--reps`` times in process (target < 10 s) and ``--reps`` times as ``dicomguard backup run --target many --json``
(start-up, imports and the KDF unseal included). Building stops at ``--build-budget-s`` (default 900 s) and the largest N
that fitted is measured and reported as such.

Each timed section also records the CPU seconds of this process (all threads) and of the children it waited for
(``cp``, ``restic``; not SeaweedFS). ``--profile`` adds cProfile tables (untimed runs, thread pools made serial).

Usage: ``python bench/backup.py [--quick] [--reps N] [--warmup N] [--workdir DIR] [--out FILE] [--profile]``.
A missing anchor (restic not installable, no ``weed`` binary) is recorded as ``skipped`` with its reason.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import json
import math
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# user passwords hashed cheaply (init's admin), as the test suite does; the KEK's KDF stays at its defaults
os.environ.setdefault("DICOMGUARD_UNSAFE_TEST_PASSWORD_HASH", "1")

import numpy as np
import pydicom
from pydicom.uid import CTImageStorage, UltrasoundMultiFrameImageStorage

from bench.run import PASSPHRASE, SEED, _base_dataset, _uid, machine_info
from dicomguard.app.archive import Archive
from dicomguard.app.backup.restore import Unlock, restore_home
from dicomguard.app.home import init_home
from dicomguard.storage.backup_targets import FolderTarget

MB = 10**6
US_SHAPE = (60, 600, 800, 3)  # frames, rows, columns, samples: 86.4 MB of pixels
CT_PER_STUDY = 200
TINY_PER_STUDY = 100
TARGETS = {"full_vs_cp": 0.8, "drill_mb_per_s": 300.0, "incremental_unchanged_s": 10.0}
GROUPS = ("cp", "folder", "s3", "restic")


# -- workload ----------------------------------------------------------------------------------


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _identity(ds: pydicom.Dataset, study_tag: str, patient: str) -> None:
    ds.StudyInstanceUID = _uid("backup-study", study_tag)
    ds.PatientID, ds.PatientName = patient, f"Bench^{patient}"
    ds.AccessionNumber = f"A{zlib.crc32(study_tag.encode()) % 10**8:08d}"


def ct_slice(study_tag: str, patient: str, i: int) -> bytes:
    """One 512x512 16-bit CT slice with random pixels, seeded by (study, i)."""
    rng = np.random.default_rng([SEED, 1, int.from_bytes(study_tag.encode()[:8], "big"), i])
    series = _uid("backup-series", study_tag)
    ds = _base_dataset(CTImageStorage, _uid("backup-ct", study_tag, i), series, "CT")
    _identity(ds, study_tag, patient)
    ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 2, i + 1, "Axial 1.0mm"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [-250.0, -250.0, -float(i)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceThickness, ds.SliceLocation, ds.PixelSpacing = 1.0, -float(i), [0.9765625, 0.9765625]
    ds.KVP, ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 120, -1024, 1, "HU"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16).tobytes()
    return _to_bytes(ds)


def us_cine(study_tag: str, patient: str) -> bytes:
    """One RGB echo cine, 60 frames of 800x600, random bytes, seeded by the study."""
    rng = np.random.default_rng([SEED, 2, int.from_bytes(study_tag.encode()[:8], "big")])
    frames, rows, columns, samples = US_SHAPE
    ds = _base_dataset(UltrasoundMultiFrameImageStorage, _uid("backup-us", study_tag), _uid("backup-series", study_tag), "US")
    _identity(ds, study_tag, patient)
    ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 1, 1, "Cine loop"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "0001"]
    ds.NumberOfFrames, ds.FrameTime, ds.CineRate = frames, 33.3, 30
    ds.FrameIncrementPointer = 0x00181063
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = samples, "RGB", 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rng.bytes(frames * rows * columns * samples)
    return _to_bytes(ds)


CT_OBJECT_BYTES = len(ct_slice("probe", "PROBE", 0))
US_OBJECT_BYTES = math.prod(US_SHAPE) + 2000  # header: ~1.4 KB


def plan_home(size_bytes: int) -> tuple[int, int]:
    """(CT slices, cines) so that about half the bytes are cines and the total is >= size_bytes."""
    n_us = max(1, round(size_bytes / 2 / US_OBJECT_BYTES))
    n_ct = max(1, math.ceil((size_bytes - n_us * US_OBJECT_BYTES) / CT_OBJECT_BYTES))
    return n_ct, n_us


def home_items(n_ct: int, n_us: int) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Loaders (generated when the pipeline asks) for the home: CT studies of 200 slices, one cine per study, interleaved."""
    studies = math.ceil(n_ct / CT_PER_STUDY)
    us_every = max(1, studies // max(1, n_us))
    us_done = 0
    for s in range(studies):
        tag, patient = f"ct{s:05d}", f"P{s:05d}"
        for i in range(min(CT_PER_STUDY, n_ct - s * CT_PER_STUDY)):
            yield f"{tag}/{i}", (lambda tag=tag, patient=patient, i=i: ct_slice(tag, patient, i))
        if us_done < n_us and s % us_every == 0:
            utag = f"us{us_done:05d}"
            yield utag, (lambda utag=utag, patient=patient: us_cine(utag, patient))
            us_done += 1
    while us_done < n_us:
        utag = f"us{us_done:05d}"
        yield utag, (lambda utag=utag: us_cine(utag, "PUS"))
        us_done += 1


def extra_items(label: str, count: int) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """``count`` new CT slices in a new study (the "1 % new objects" of an incremental run)."""
    tag = f"x-{label}"
    for i in range(count):
        yield f"{tag}/{i}", (lambda i=i: ct_slice(tag, "PEXTRA", i))


def ingest(archive: Archive, items: Iterator[tuple[str, Callable[[], bytes]]]) -> tuple[int, int]:
    """Store everything; (objects, input bytes). Every object must be stored."""
    count = nbytes = 0

    def counted() -> Iterator[tuple[str, Callable[[], bytes]]]:
        nonlocal nbytes
        for label, load in items:
            def loader(load: Callable[[], bytes] = load) -> bytes:
                nonlocal nbytes
                data = load()
                nbytes += len(data)
                return data
            yield label, loader

    for outcome in archive.operator.store.ingest_many(counted(), source="bench"):
        if outcome.result is None or outcome.result.status != "stored":
            raise SystemExit(f"ingest: {outcome.label} not stored: {outcome.error}")
        count += 1
    return count, nbytes


# -- tiny objects (incremental on a large instance count) ---------------------------------------

TINY_ROOT = "1.2.826.0.1.3680043.8.498.71"


class TinyFactory:
    """8x8 CT objects made by patching one template's bytes (same-length UIDs and IDs, random pixels): fast and valid."""

    def __init__(self) -> None:
        self.inst_s, self.study_s, self.series_s = (f"{TINY_ROOT}.3.9999999999", f"{TINY_ROOT}.1.9999999", f"{TINY_ROOT}.2.9999999")
        self.pid_s, self.name_s = "MANY999999", "Many^P999999"
        ds = _base_dataset(CTImageStorage, self.inst_s, self.series_s, "CT")
        ds.StudyInstanceUID, ds.PatientID, ds.PatientName = self.study_s, self.pid_s, self.name_s
        ds.SeriesNumber, ds.InstanceNumber, ds.ImageType = 1, 1, ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 8, 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = b"\xa5" * 128
        self.template = _to_bytes(ds)
        for sentinel, n in ((self.inst_s, 2), (self.study_s, 1), (self.series_s, 1), (self.pid_s, 1), (self.name_s, 1)):
            found = self.template.count(sentinel.encode())
            assert found == n, (sentinel, found)
        assert self.template.endswith(b"\xa5" * 128)
        self.rng = np.random.default_rng([SEED, 3])

    def object(self, n: int, pixels: bytes) -> bytes:
        s = n // TINY_PER_STUDY
        out = (self.template.replace(self.inst_s.encode(), f"{TINY_ROOT}.3.{10**9 + n}".encode())
               .replace(self.study_s.encode(), f"{TINY_ROOT}.1.{10**6 + s}".encode())
               .replace(self.series_s.encode(), f"{TINY_ROOT}.2.{10**6 + s}".encode())
               .replace(self.pid_s.encode(), f"MANY{s % 1000:06d}".encode())
               .replace(self.name_s.encode(), f"Many^P{s % 1000:06d}".encode()))
        return out[:-128] + pixels

    def items(self, start: int, stop: int) -> Iterator[tuple[str, Callable[[], bytes]]]:
        pixels = self.rng.bytes(128 * (stop - start))
        for n in range(start, stop):
            k = (n - start) * 128
            data = self.object(n, pixels[k:k + 128])
            yield f"tiny/{n}", (lambda data=data: data)


def set_batch_size(home: Path, batch: int) -> None:
    config = home / "config.toml"
    text = config.read_text(encoding="utf-8")
    new, n = re.subn(r"(?m)^(\[ingest\]\s*\nbatch_size\s*=\s*)\d+", lambda m: f"{m.group(1)}{batch}", text)
    if n != 1:
        raise SystemExit("cannot find [ingest] batch_size in config.toml")
    config.write_text(new, encoding="utf-8")


# -- configuration -----------------------------------------------------------------------------


def folder_target_toml(name: str, location: Path) -> str:
    return f'\n[[backup.target]]\nname = "{name}"\nkind = "folder"\nlocation = "{location}"\n'


def s3_target_toml(name: str, weed: Any, bucket: str, creds: Path) -> str:
    return (f'\n[[backup.target]]\nname = "{name}"\nkind = "s3"\nimmutable_days = 1\n[backup.target.s3]\n'
            f'endpoint = "{weed.https_endpoint}"\nbucket = "{bucket}"\ncredentials_file = "{creds}"\nca_file = "{weed.ca_file}"\n')


def round_name(rep: int) -> str:
    return f"w{-rep}" if rep < 0 else f"r{rep}"


# -- measuring ---------------------------------------------------------------------------------


LAST_CPU_S = 0.0
"""CPU seconds (this process, all threads, and the children it waited for) of the last :func:`timed` section."""


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn: Callable[[], Any], final_sync: bool = True) -> tuple[float, Any]:
    global LAST_CPU_S
    os.sync()
    cpu = _cpu()
    start = time.perf_counter()
    value = fn()
    if final_sync:
        os.sync()
    elapsed = time.perf_counter() - start
    LAST_CPU_S = _cpu() - cpu
    return elapsed, value


def tree_bytes(path: Path) -> tuple[int, int]:
    files = total = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return files, total


def blob_bytes(home: Path) -> tuple[int, int]:
    return tree_bytes(home / "blobs")


def run_backup(archive: Archive, target: str) -> Any:
    [outcome] = archive.operator.backups.run(target)
    if not outcome.ok:
        raise RuntimeError(f"backup to {target} failed: {outcome.error}")
    return outcome.result


def record(runs: dict[str, list[dict[str, Any]]], name: str, seconds: float, nbytes: int, **extra: Any) -> dict[str, Any]:
    r = {"seconds": seconds, "bytes": nbytes, "mb_per_s": nbytes / MB / seconds if seconds else 0.0, "cpu_s": LAST_CPU_S,
         "cpu_s_per_gb": LAST_CPU_S / (nbytes / 1e9) if nbytes else None, **extra}
    runs.setdefault(name, []).append(r)
    print(f"  {name:<24} {seconds:8.2f} s  {nbytes / MB:9.1f} MB  {r['mb_per_s']:8.1f} MB/s  cpu {LAST_CPU_S:6.2f} s"
          + "".join(f"  {k}={v}" for k, v in extra.items() if k in ("new_objects", "objects", "problems")), flush=True)
    return r


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args, self.root = args, root
        self.home = root / "home"
        self.scratch = root / "scratch"
        self.scratch.mkdir()
        self.weed: Any = None
        self.skipped: dict[str, str] = {}
        self.restic = find_restic(self.skipped)
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.notes: list[str] = []

    # setup
    def setup(self, rounds: list[int]) -> dict[str, Any]:
        init_home(self.home, PASSPHRASE, "admin")
        extra = ""
        try:
            from tests.storage.seaweedfs import start_seaweedfs

            self.weed = start_seaweedfs(self.root / "seaweedfs")
        except Exception as exc:  # noqa: BLE001 - a missing anchor is reported, not fatal
            self.skipped["s3"] = f"SeaweedFS could not start: {type(exc).__name__}: {str(exc)[:300]}"
        creds = self.weed.credentials_file(self.root / "s3.credentials") if self.weed else None
        for rep in rounds:
            rn = round_name(rep)
            extra += folder_target_toml(f"nas-{rn}", self.root / "targets" / f"nas-{rn}")
            if self.weed:
                bucket = self.weed.create_bucket(f"bench-{rn}", object_lock=True)
                extra += s3_target_toml(f"s3-{rn}", self.weed, bucket, creds)
        with (self.home / "config.toml").open("a", encoding="utf-8") as f:
            f.write(extra)
        self.archive = Archive.open(self.home, PASSPHRASE)
        n_ct, n_us = plan_home(int(self.args.size_gb * 1e9))
        print(f"building the home: {n_ct} CT slices + {n_us} cines of {US_SHAPE[0]} frames ...", flush=True)
        t = time.perf_counter()
        count, nbytes = ingest(self.archive, home_items(n_ct, n_us))
        build_s = time.perf_counter() - t
        files, stored = blob_bytes(self.home)
        print(f"  {count} objects, {nbytes / MB:.0f} MB input, {stored / MB:.0f} MB of blobs, in {build_s:.0f} s", flush=True)
        return {"ct_slices": n_ct, "us_cines": n_us, "objects": count, "input_bytes": nbytes, "blob_files": files,
                "blob_bytes": stored, "build_s": build_s}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.archive.close()
        if self.weed:
            self.weed.stop()

    def new_objects(self, label: str) -> int:
        n = max(1, round(0.01 * self.archive_objects()))
        ingest(self.archive, extra_items(label, n))
        return n

    def archive_objects(self) -> int:
        return blob_bytes(self.home)[0]

    # groups
    def g_cp(self, rn: str, keep: bool) -> None:
        dest = self.scratch / f"cp-{rn}"
        files, nbytes = blob_bytes(self.home)
        secs, _ = timed(lambda: subprocess.run(["cp", "-r", str(self.home / "blobs"), str(dest)], check=True))
        if tree_bytes(dest) != (files, nbytes):
            raise RuntimeError("cp -r copied something else")
        if keep:
            record(self.runs, "cp", secs, nbytes, files=files)
        shutil.rmtree(dest)

    def _chain(self, prefix: str, target: str, rn: str, keep: bool) -> None:
        put = (lambda *a, **k: record(self.runs, *a, **k)) if keep else (lambda *a, **k: None)
        secs, full = timed(lambda: run_backup(self.archive, target))
        if full.new_objects != full.objects:
            raise RuntimeError(f"{target}: the full backup copied {full.new_objects} of {full.objects}")
        put(f"{prefix}_full", secs, full.new_bytes, objects=full.objects, new_objects=full.new_objects, product_s=round(full.seconds, 3))
        secs, same = timed(lambda: run_backup(self.archive, target))
        if same.new_objects != 0:
            raise RuntimeError(f"{target}: unchanged run copied {same.new_objects}")
        put(f"{prefix}_incr_unchanged", secs, same.new_bytes, objects=same.objects, new_objects=0, product_s=round(same.seconds, 3))
        n = self.new_objects(f"{prefix}-{rn}")
        secs, inc = timed(lambda: run_backup(self.archive, target))
        if inc.new_objects != n:
            raise RuntimeError(f"{target}: +1 % run copied {inc.new_objects}, expected {n}")
        put(f"{prefix}_incr_1pct", secs, inc.new_bytes, objects=inc.objects, new_objects=n, product_s=round(inc.seconds, 3))

    def g_folder(self, rn: str, keep: bool) -> None:
        target = f"nas-{rn}"
        location = self.root / "targets" / target
        self._chain("folder", target, rn, keep)
        secs, (report,) = timed(lambda: self.archive.operator.backups.drill(target))
        if not report.ok or report.objects != self.archive_objects():
            raise RuntimeError(f"drill of {target}: ok={report.ok}, {report.objects} objects, problems {report.problems[:3]}")
        if keep:
            record(self.runs, "drill", secs, report.bytes, objects=report.objects, problems=len(report.problems),
                   product_rto_s=round(report.rto_s, 3))
        new_home = self.scratch / f"restored-{rn}"
        secs, result = timed(lambda: restore_home(FolderTarget(target, location), new_home, Unlock(passphrase=PASSPHRASE)))
        if result.objects != report.objects or blob_bytes(new_home)[0] != result.objects:
            raise RuntimeError(f"restore of {target}: {result.objects} objects")
        if keep:
            record(self.runs, "restore", secs, result.bytes, objects=result.objects, product_s=round(result.seconds, 3))
        shutil.rmtree(new_home)
        shutil.rmtree(location)

    def g_s3(self, rn: str, keep: bool) -> None:
        if self.weed:
            self._chain("s3", f"s3-{rn}", rn, keep)  # locked objects stay in SeaweedFS's folder until it stops

    def g_restic(self, rn: str, keep: bool) -> None:
        if not self.restic:
            return
        repo, out = self.scratch / f"restic-repo-{rn}", self.scratch / f"restic-restore-{rn}"
        pw = self.root / "restic.password"
        pw.write_text("bench-only-restic-password\n")
        os.chmod(pw, 0o600)
        env = {**os.environ, "RESTIC_PASSWORD_FILE": str(pw), "RESTIC_REPOSITORY": str(repo),
               "RESTIC_CACHE_DIR": str(self.root / "restic-cache"), "RESTIC_PROGRESS_FPS": "0.1"}
        subprocess.run([self.restic, "init"], env=env, check=True, capture_output=True)
        paths = [self.home / "blobs", *sorted(p for p in self.home.glob("index.db*") if not p.name.endswith("-shm"))]
        files, nbytes = blob_bytes(self.home)
        nbytes += sum(p.stat().st_size for p in paths[1:])
        files += len(paths) - 1

        def backup() -> str:
            proc = subprocess.run([self.restic, "backup", "--json", "--host", "bench", *map(str, paths)], check=False, env=env,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"restic backup failed ({proc.returncode}): {proc.stderr[-1000:]}")
            return proc.stdout

        secs, stdout = timed(backup)
        summary = next((json.loads(line) for line in stdout.splitlines() if '"message_type":"summary"' in line), {})
        if keep:
            record(self.runs, "restic_backup", secs, nbytes, files=files,
                   files_new=summary.get("files_new"), data_added=summary.get("data_added"))

        def restore() -> None:
            proc = subprocess.run([self.restic, "restore", "latest", "--target", str(out)], env=env, check=False, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"restic restore failed ({proc.returncode}): {proc.stderr[-1000:]}")

        secs, _ = timed(restore)
        got_files, got_bytes = tree_bytes(out)
        if (got_files, got_bytes) != (files, nbytes):
            raise RuntimeError(f"restic restore gave {got_files} files / {got_bytes} bytes, expected {files} / {nbytes}")
        if keep:
            record(self.runs, "restic_restore", secs, nbytes, files=files)
        shutil.rmtree(repo)
        shutil.rmtree(out)

    def measure(self, rounds: list[int]) -> None:
        groups = {"cp": self.g_cp, "folder": self.g_folder, "s3": self.g_s3, "restic": self.g_restic}
        for k, rep in enumerate(rounds):
            order = list(GROUPS[k % len(GROUPS):] + GROUPS[:k % len(GROUPS)])
            rn = round_name(rep)
            print(f"round {rn}{' (warm-up, untimed)' if rep < 0 else ''}: {', '.join(order)}", flush=True)
            for g in order:
                groups[g](rn, keep=rep >= 0)


def find_restic(skipped: dict[str, str]) -> str | None:
    found = shutil.which("restic")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("restic not found: apt-get install -y restic ...", flush=True)
        proc = subprocess.run(["apt-get", "install", "-y", "restic"], check=False, capture_output=True, text=True,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("restic")
        if found:
            return found
        skipped["restic"] = f"restic is not installed and apt-get install failed ({proc.returncode}): {proc.stderr[-300:]}"
    else:
        skipped["restic"] = "restic is not installed (apt-get install restic)"
    return None


# -- many instances ------------------------------------------------------------------------------


def many_instances(args: argparse.Namespace, root: Path, reps: int) -> dict[str, Any]:
    home = root / "many"
    init_home(home, PASSPHRASE, "admin")
    if args.tiny_batch:
        set_batch_size(home, args.tiny_batch)
    location = root / "targets" / "many-nas"
    with (home / "config.toml").open("a", encoding="utf-8") as f:
        f.write(folder_target_toml("many", location))
    factory = TinyFactory()
    wanted, chunk = args.incremental_instances, 5000
    result: dict[str, Any] = {"requested": wanted, "batch_size": args.tiny_batch or "default", "object_bytes": len(factory.template)}
    with Archive.open(home, PASSPHRASE) as archive:
        print(f"building the many-instances archive: {wanted} objects of {len(factory.template)} bytes "
              f"(batch_size {args.tiny_batch or 'default'}, budget {args.build_budget_s:.0f} s) ...", flush=True)
        start, done = time.perf_counter(), 0
        while done < wanted:
            n = min(chunk, wanted - done)
            t = time.perf_counter()
            count, _ = ingest(archive, factory.items(done, done + n))
            done += count
            elapsed = time.perf_counter() - start
            rate = count / (time.perf_counter() - t)
            print(f"  {done} objects, {elapsed:.0f} s, {rate:.0f} objects/s now", flush=True)
            if done < wanted and elapsed + min(chunk, wanted - done) / rate > args.build_budget_s:
                break
        result.update(instances=done, build_s=time.perf_counter() - start, build_objects_per_s=done / (time.perf_counter() - start),
                      reduced=done < wanted)
        if done < wanted:
            print(f"  the build budget ({args.build_budget_s:.0f} s) allows {done} of {wanted} objects: measuring with {done}", flush=True)
        secs, full = timed(lambda: run_backup(archive, "many"))
        result["first_full"] = {"seconds": secs, "objects": full.objects, "new_bytes": full.new_bytes, "product_s": full.seconds}
        print(f"  first (full) backup: {secs:.1f} s for {full.objects} objects ({full.objects / secs:.0f} objects/s)", flush=True)
        seconds = []
        for _ in range(reps):
            secs, same = timed(lambda: run_backup(archive, "many"))
            if same.new_objects:
                raise RuntimeError(f"unchanged run on the many-instances archive copied {same.new_objects}")
            seconds.append(secs)
            print(f"  unchanged incremental: {secs:.2f} s", flush=True)
        result["incr_unchanged"] = summarize([{"seconds": s, "bytes": 0, "mb_per_s": 0.0} for s in seconds])
        result["index_bytes"] = (home / "index.db").stat().st_size
        # each snapshot, even with nothing new, writes the whole (encrypted, key-stripped) index as its payload
        result["payload_bytes_per_snapshot"] = (location / "snapshots" / same.snapshot_id / "payload").stat().st_size
        print(f"  index {result['index_bytes'] / MB:.0f} MB; each snapshot's payload {result['payload_bytes_per_snapshot'] / MB:.0f} MB",
              flush=True)
        if args.profile:
            result["profile_incr_unchanged"] = profile(lambda: run_backup(archive, "many"))
    # the same through the command line: interpreter start-up, imports and the KDF unseal included
    script = Path(sys.executable).with_name("dicomguard")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "dicomguard"]
    env = {**os.environ, "DICOMGUARD_HOME": str(home), "DICOMGUARD_PASSPHRASE": PASSPHRASE}
    seconds = []
    for _ in range(reps):
        secs, proc = timed(lambda: subprocess.run([*command, "backup", "run", "--target", "many", "--json"], check=False, env=env,
                                                  capture_output=True, text=True))
        try:
            [doc] = json.loads(proc.stdout)
        except ValueError:
            doc = {}
        if proc.returncode != 0 or not doc.get("ok") or doc.get("new_objects") != 0:
            raise RuntimeError(f"dicomguard backup run failed ({proc.returncode}): {proc.stdout[-500:]}{proc.stderr[-500:]}")
        seconds.append(secs)
        print(f"  unchanged incremental, CLI: {secs:.2f} s", flush=True)
    result["cli_incr_unchanged"] = summarize([{"seconds": s, "bytes": 0, "mb_per_s": 0.0} for s in seconds])
    shutil.rmtree(location, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    return result


def profile(fn: Callable[[], Any], top: int = 15) -> dict[str, list[dict[str, Any]]]:
    """cProfile one call (calling thread only: work in thread pools shows up as waiting)."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    rows = [{"function": f"{Path(file).name}:{line}({name})", "calls": nc, "tottime_s": round(tt, 4), "cumtime_s": round(ct, 4)}
            for (file, line, name), (_cc, nc, tt, ct, _callers) in pstats.Stats(prof).stats.items()]  # type: ignore[attr-defined]
    return {"by_cumtime": sorted(rows, key=lambda r: -r["cumtime_s"])[:top],
            "by_tottime": sorted(rows, key=lambda r: -r["tottime_s"])[:top]}


# -- report ------------------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    secs = [r["seconds"] for r in runs]
    rates = [r["mb_per_s"] for r in runs]
    med = statistics.median(secs)
    return {"runs": runs, "seconds": secs, "median_s": med, "min_s": min(secs), "max_s": max(secs),
            "spread_pct": 100 * (max(secs) - min(secs)) / med if med else 0.0,
            "median_mb_per_s": statistics.median(rates), "min_mb_per_s": min(rates), "max_mb_per_s": max(rates),
            "median_cpu_s": statistics.median(r.get("cpu_s", 0.0) for r in runs)}


def ratios(results: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def rate(name: str) -> float | None:
        r = results.get(name)
        return r["median_mb_per_s"] if isinstance(r, dict) and "median_mb_per_s" in r else None

    def paired(a: str, b: str) -> list[float]:
        return [x["mb_per_s"] / y["mb_per_s"] for x, y in zip(runs.get(a, []), runs.get(b, []), strict=False)]

    out: dict[str, Any] = {}
    for key, a, b in (("folder_full/cp", "folder_full", "cp"), ("s3_full/cp", "s3_full", "cp"),
                      ("folder_full/restic_backup", "folder_full", "restic_backup"), ("s3_full/restic_backup", "s3_full", "restic_backup"),
                      ("restore/restic_restore", "restore", "restic_restore"), ("drill/restic_restore", "drill", "restic_restore")):
        ra, rb = rate(a), rate(b)
        out[key] = {"ratio": ra / rb, "per_round": paired(a, b)} if ra and rb else "skipped"
    return out


def verdicts(results: dict[str, Any], rat: dict[str, Any], many: dict[str, Any] | None) -> dict[str, Any]:
    def check(value: float | None, ok: Callable[[float], bool], target: str) -> dict[str, Any]:
        return {"value": value, "target": target, "met": ok(value)} if value is not None else {"target": target, "met": None,
                                                                                                 "value": "skipped"}

    full_cp = rat["folder_full/cp"]["ratio"] if isinstance(rat["folder_full/cp"], dict) else None
    vs_restic = rat["folder_full/restic_backup"]["ratio"] if isinstance(rat["folder_full/restic_backup"], dict) else None
    drill = results["drill"]["median_mb_per_s"] if isinstance(results.get("drill"), dict) else None
    incr = many["incr_unchanged"]["median_s"] if many and "incr_unchanged" in many else None
    return {
        "full_backup_vs_cp": check(full_cp, lambda v: v >= TARGETS["full_vs_cp"], ">= 0.8 of cp -r MB/s"),
        "backup_vs_restic": check(vs_restic, lambda v: v > 1.0, "faster than restic backup (ratio > 1)"),
        "drill_mb_per_s": check(drill, lambda v: v >= TARGETS["drill_mb_per_s"], ">= 300 MB/s verified"),
        "incremental_unchanged_s": check(incr, lambda v: v < TARGETS["incremental_unchanged_s"],
                                         f"< 10 s with {many.get('instances') if many else '?'} instances"),
    }


def versions() -> dict[str, str]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "absent"

    from tests.storage.seaweedfs import weed_binary

    weed = weed_binary()
    git = ["git", "-C", str(ROOT)]
    return {"restic": out(["restic", "version"]), "weed": out([weed, "version"]) if weed else "absent", "cp": out(["cp", "--version"]),
            "git_commit": out([*git, "rev-parse", "HEAD"]),
            "git_uncommitted_paths": str(len(subprocess.run([*git, "status", "--porcelain"], check=False, capture_output=True, text=True).stdout.splitlines()))}


def print_table(report: dict[str, Any]) -> None:
    res = report["results"]
    print(f"\n{'method':<22}{'median s':>10}{'min-max s':>16}{'MB/s':>9}{'min-max MB/s':>16}{'CPU s':>8}")
    for name, r in res.items():
        if not isinstance(r, dict):
            print(f"{name:<22}{r:>10}")
            continue
        print(f"{name:<22}{r['median_s']:>10.2f}{r['min_s']:>8.2f}-{r['max_s']:<7.2f}{r['median_mb_per_s']:>9.1f}"
              f"{r['min_mb_per_s']:>8.1f}-{r['max_mb_per_s']:<7.1f}{r['median_cpu_s']:>8.2f}")
    many = report.get("many_instances")
    if many and "incr_unchanged" in many:
        m = many["incr_unchanged"]
        print(f"{'many: incr unchanged':<22}{m['median_s']:>10.2f}{m['min_s']:>8.2f}-{m['max_s']:<7.2f}"
              f"   ({many['instances']} instances{', REDUCED from ' + str(many['requested']) if many['reduced'] else ''})")
        if "cli_incr_unchanged" in many:
            m = many["cli_incr_unchanged"]
            print(f"{'many: same, CLI':<22}{m['median_s']:>10.2f}{m['min_s']:>8.2f}-{m['max_s']:<7.2f}   (start-up, imports, KDF included)")
    print("\nratios (median MB/s over median MB/s):")
    for key, r in report["ratios"].items():
        print(f"  {key:<28} " + (f"{r['ratio']:.2f}  per round: {', '.join(f'{x:.2f}' for x in r['per_round'])}" if isinstance(r, dict) else r))
    print("\ntargets:")
    for key, v in report["targets"].items():
        value = v["value"] if isinstance(v["value"], str) else f"{v['value']:.2f}"
        verdict = "skipped" if v["met"] is None else "met" if v["met"] else "MISSED"
        print(f"  {key:<26} {value:>10}  target {v['target']}: {verdict}")
    for name, why in report["skipped"].items():
        print(f"skipped {name}: {why}")


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall, busy CPU seconds of the whole machine, CPU seconds of this process and its waited-for children)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    t = os.times()
    return time.monotonic(), busy, t.user + t.system + t.children_user + t.children_system


def foreign_cpu(before: tuple[float, float, float]) -> dict[str, float]:
    """CPU time other processes (not this benchmark or its children) used during the run, as a share of all cores."""
    after = cpu_snapshot()
    wall, busy, own = (a - b for a, b in zip(after, before, strict=True))
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    foreign = max(0.0, busy - own)
    return {"wall_s": wall, "foreign_cpu_s": foreign, "foreign_cpu_share": foreign / (wall * ncpu) if wall else 0.0}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: 0.2 GB home, 2000 tiny instances, 1 repetition, no warm-up")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (default 3; --quick: 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1; --quick: 0)")
    p.add_argument("--size-gb", type=float, help="size of the home's input (default 2.0; --quick: 0.2)")
    p.add_argument("--incremental-instances", type=int, help="tiny instances for the incremental test (default 100000; --quick: 2000; 0: skip)")
    p.add_argument("--tiny-batch", type=int, default=0,
                   help="[ingest] batch_size of the many-instances home (default 0: the product's default, 64; 1000 was no faster)")
    p.add_argument("--build-budget-s", type=float, default=900.0, help="time budget for building the many-instances archive")
    p.add_argument("--only-many", action="store_true", help="only the many-instances measure")
    p.add_argument("--profile", action="store_true", help="also cProfile (untimed, thread pools made serial) a full folder backup, its drill and a restore, and one unchanged incremental")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where homes, targets and copies go (one file system)")
    p.add_argument("--out", type=Path, help="results JSON (default bench/results/backup-<date>[-quick].json)")
    args = p.parse_args()
    args.reps, args.warmup = (1, 0) if args.quick else (args.reps, args.warmup)
    args.size_gb = args.size_gb if args.size_gb is not None else (0.2 if args.quick else 2.0)
    if args.incremental_instances is None:
        args.incremental_instances = 2000 if args.quick else 100_000
    return args


def main() -> None:
    args = parse_args()
    out = args.out or ROOT / "bench" / "results" / f"backup-{dt.date.today()}{'-quick' if args.quick else ''}.json"
    root = Path(tempfile.mkdtemp(prefix="dicomguard-bench-backup-", dir=args.workdir))
    load_before = os.getloadavg()
    cpu_before = cpu_snapshot()
    started = time.perf_counter()
    report: dict[str, Any] = {"settings": {"quick": args.quick, "reps": args.reps, "warmup": args.warmup, "size_gb": args.size_gb,
                                           "us_shape": US_SHAPE, "ct_object_bytes": CT_OBJECT_BYTES, "kdf": "defaults",
                                           "order": "cp, folder, s3, restic rotated by one group per round"}}
    failed = None
    bench = None
    try:
        rounds = list(range(-args.warmup, args.reps))
        if not args.only_many:
            bench = Bench(args, root)
            report["workload"] = bench.setup(rounds)
            bench.measure(rounds)
            if args.profile:
                print("profiling one full folder backup, its drill and a restore (untimed) ...", flush=True)
                report["profile"] = profile_drill(bench, "profile")
        if args.incremental_instances:
            report["many_instances"] = many_instances(args, root, args.reps if not args.quick else 2)
    except Exception as exc:  # noqa: BLE001 - the JSON says what failed
        failed = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        if bench:
            bench.close()
        shutil.rmtree(root, ignore_errors=True)
    runs = bench.runs if bench else {}
    results: dict[str, Any] = {}
    for name in ("cp", "folder_full", "folder_incr_unchanged", "folder_incr_1pct", "s3_full", "s3_incr_unchanged", "s3_incr_1pct",
                 "drill", "restore", "restic_backup", "restic_restore"):
        if runs.get(name):
            results[name] = summarize(runs[name])
        elif bench and (name.startswith("s3") and "s3" in bench.skipped or name.startswith("restic") and "restic" in bench.skipped):
            results[name] = "skipped"
    report["results"] = results
    report["skipped"] = bench.skipped if bench else {}
    report["ratios"] = ratios(results, runs)
    report["targets"] = verdicts(results, report["ratios"], report.get("many_instances"))
    report["failed"] = failed
    report["total_s"] = time.perf_counter() - started
    report["machine"] = {**machine_info(Path(args.workdir)), **versions(), "load_before": load_before, "load_after": os.getloadavg(),
                         **foreign_cpu(cpu_before)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    if results or report.get("many_instances"):
        print_table(report)
        print_profile(report)
    share = report["machine"]["foreign_cpu_share"]
    print(f"\ntotal {report['total_s'] / 60:.1f} min; other processes used {share:.0%} of the cores meanwhile"
          f"{' (LOADED machine: numbers not for comparison)' if share >= 0.05 else ''}; results written to {out}")
    if failed:
        print(f"FAILED: {failed}")
        sys.exit(1)


class SerialExecutor:
    """Stands in for ThreadPoolExecutor while profiling, so cProfile sees the per-blob work (it profiles one thread only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Callable[..., Any], *iterables: Any) -> Iterator[Any]:
        return iter([fn(*args) for args in zip(*iterables, strict=False)])


@contextlib.contextmanager
def serial_pools() -> Iterator[None]:
    import dicomguard.app.backup.restore as restore_mod
    import dicomguard.app.backup.snapshot as snapshot_mod
    import dicomguard.app.verify as verify_mod

    saved = [(m, m.ThreadPoolExecutor) for m in (snapshot_mod, verify_mod, restore_mod)]
    for m, _ in saved:
        m.ThreadPoolExecutor = SerialExecutor  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        for m, pool in saved:
            m.ThreadPoolExecutor = pool  # type: ignore[misc]


def profile_drill(bench: Bench, rn: str) -> dict[str, Any]:
    """cProfile (untimed) of one full folder backup, one drill and one restore of it, with the thread pools made serial."""
    from dicomguard.app.backup.drill import drill
    from dicomguard.app.backup.snapshot import take_snapshot

    name = f"nas-{rn}"
    location = bench.root / "targets" / name
    ctx = bench.archive.ctx
    target = FolderTarget(name, location)
    ledger = bench.archive.operator.backups.ledger
    out: dict[str, Any] = {"note": "thread pools replaced by a serial loop; the target is not in the configuration, so the drill "
                                   "reports manifest-unknown (it still verifies every blob)"}
    with serial_pools():
        out["full_backup"] = profile(lambda: take_snapshot(ctx, target, retention_days=90, vault_lock_days=7))
        out["drill"] = profile(lambda: drill(ctx, ledger, target))
        new_home = bench.scratch / "restored-profile"
        out["restore"] = profile(lambda: restore_home(target, new_home, Unlock(passphrase=PASSPHRASE)))
    shutil.rmtree(new_home, ignore_errors=True)
    shutil.rmtree(location, ignore_errors=True)
    return out


def print_profile(report: dict[str, Any]) -> None:
    sections = [(f"big home: {k}", v) for k, v in report.get("profile", {}).items() if isinstance(v, dict)]
    many = report.get("many_instances", {})
    if "profile_incr_unchanged" in many:
        sections.append(("many instances: unchanged incremental", many["profile_incr_unchanged"]))
    for title, prof in sections:
        print(f"\nprofile, {title} (top by own time):")
        for r in prof["by_tottime"][:10]:
            print(f"  {r['tottime_s']:8.3f} own {r['cumtime_s']:8.3f} cum {r['calls']:>9} calls  {r['function']}")


if __name__ == "__main__":
    main()
