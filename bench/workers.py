"""C-STORE throughput of ``dicomguard serve --workers N``: one association vs 8 concurrent, workers 1 vs 2.

Workload (``bench/run.py``'s CT generator: 512x512 16-bit slices, 0.53 MB each,
seeded): set A, ``--ct`` slices (default 200) in one series, sent by one
``storescu`` on one association; set B, the same number of slices in 8 series,
sent by 8 ``storescu`` processes at once (one association each, started
together). A and B have different UIDs, so nothing is a duplicate.

Sessions: for each ``--workers`` value (1 and 2) a fresh home (``dicomguard
init``, a device for storescu, a technologist token, as in ``bench/network.py``)
and ``dicomguard serve --workers N``; in it set A then set B, or B then A (the
order alternates between repetitions, as does the order of the two sessions).
``os.sync()`` before every timed section; 1 untimed warm-up round + ``--reps``
rounds. After each session every instance is checked with QIDO-RS.

Timed: the wall clock of storescu (A) or from the start of the first to the end
of the last of the 8 storescu processes (B). Throughput = instances / seconds.

Ratios (from the medians): ``concurrent8_w2 / single_w1`` is the issue's target
(8 concurrent associations with 2 workers >= 1.7x one association), beside
``concurrent8_w2 / single_w2``, ``concurrent8_w1 / single_w1`` (what threads alone
give) and ``concurrent8_w2 / concurrent8_w1`` (what the second process adds).
``load`` records the load average before and after: numbers taken while other
processes compete for the 2 cores are not for comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_scripts import load_script  # noqa: E402

CONCURRENT = 8
TARGET = 1.7


NET = load_script("dicomguard_bench_network", "network.py")
RUN = NET.BENCH  # bench/run.py, loaded by network.py


def make_set(folder: Path, name: str, series_count: int, total: int, rng: np.random.Generator) -> list[list[Path]]:
    """``total`` CT slices in ``series_count`` series (one list of files per series), UIDs derived from ``name``."""
    from pydicom.uid import CTImageStorage

    folder.mkdir(parents=True)
    per = total // series_count
    out = []
    for s in range(series_count):
        series = RUN._uid("series", name, s)
        files = []
        for i in range(per):
            ds = RUN._base_dataset(CTImageStorage, RUN._uid("instance", name, s, i), series, "CT")
            ds.SeriesNumber, ds.InstanceNumber = s + 1, i + 1
            ds.ImagePositionPatient = [-250.0, -250.0, -float(i)]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.PixelSpacing, ds.SliceThickness = [0.9765625, 0.9765625], 1.0
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows = ds.Columns = 512
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16).tobytes()
            path = folder / f"{name}-{s:02d}-{i:04d}.dcm"
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
            files.append(path)
        out.append(files)
    return out


def storescu_cmd(files: list[Path], port: int, tls: tuple[Path, Path, Path]) -> list[str]:
    key, cert, ca = tls
    return ["storescu", "-aet", NET.DEVICE_AE, "-aec", "DICOMGUARD", "+tls", str(key), str(cert), "+cf", str(ca),
            "127.0.0.1", str(port), *map(str, files)]


def run_concurrent(groups: list[list[Path]], port: int, tls: tuple[Path, Path, Path]) -> float:
    """One storescu per group, all started together; seconds from the first start to the last exit."""
    os.sync()
    start = time.perf_counter()
    procs = [subprocess.Popen(storescu_cmd(g, port, tls), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for g in groups]
    outputs = [p.communicate()[0] for p in procs]
    seconds = time.perf_counter() - start
    for p, out in zip(procs, outputs, strict=True):
        if p.returncode != 0:
            raise NET.BenchError(f"storescu failed ({p.returncode}): {out[-2000:]}")
    return seconds


def session(workers: int, single: list[list[Path]], concurrent: list[list[Path]], folder: Path, single_first: bool) -> dict[str, float]:
    folder.mkdir(parents=True)
    home, device = folder / "home", folder / "device"
    token = NET._setup_dicomguard_home(home, device)
    dimse_port, https_port = NET.free_port(), NET.free_port()
    cmd = [*NET._dicomguard_cli(), "serve", "--workers", str(workers), "--dimse-port", str(dimse_port),
           "--https-port", str(https_port), "--host", "127.0.0.1"]
    server = NET.Server(f"dicomguard-w{workers}", cmd, folder, NET._dicomguard_env(home))
    tls = (device / "key.pem", device / "cert.pem", device / "ca.pem")
    out: dict[str, float] = {}
    try:
        out["startup_s"] = server.wait_until(lambda: server.stdout_has("READY dimse="), "READY line")
        steps = [("single", lambda: run_concurrent(single, dimse_port, tls)),
                 ("concurrent8", lambda: run_concurrent(concurrent, dimse_port, tls))]
        for name, step in steps if single_first else reversed(steps):
            out[name] = step()
        dg = NET.DicomguardTarget(server, dimse_port, f"https://127.0.0.1:{https_port}/dicomweb", home / "tls" / "ca.pem",
                                  token, tls, 0.0, 0.0)
        with NET._http_session(token, dg.ca) as http:
            for group in single + concurrent:
                study, series = NET._uids(group[0])
                if (n := NET._dicomguard_count(dg, http, study, series)) != len(group):
                    raise NET.BenchError(f"workers={workers}: series holds {n} instances, expected {len(group)}")
    finally:
        server.stop()
    if server.proc.returncode != 0:
        raise server.fail(f"exit status {server.proc.returncode} after SIGTERM")
    shutil.rmtree(home, ignore_errors=True)
    return out


def summary(seconds: list[float], instances: int) -> dict[str, object]:
    median = statistics.median(seconds)
    return {"seconds": [round(s, 3) for s in seconds], "median_s": round(median, 3), "min_s": round(min(seconds), 3),
            "max_s": round(max(seconds), 3), "spread_pct": round(100 * (max(seconds) - min(seconds)) / median, 1),
            "instances": instances, "instances_per_s": round(instances / median, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ct", type=int, default=200, help="slices per set (a multiple of 8)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="48 slices per set, 1 repetition, no warm-up")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.ct, args.reps, args.warmup = 48, 1, 0
    if shutil.which("storescu") is None:
        sys.exit("needs dcmtk's storescu")
    total = args.ct - args.ct % CONCURRENT
    date = dt.date.today().isoformat()
    out = args.out or HERE / "results" / f"workers-{date}{'-quick' if args.quick else ''}.json"
    root = Path(tempfile.mkdtemp(prefix="dg-bench-workers-", dir=args.workdir))
    started = time.perf_counter()
    load_before = os.getloadavg()
    seconds: dict[str, list[float]] = {}
    extras: dict[str, list[float]] = {}
    try:
        rng = np.random.default_rng(RUN.SEED)
        single = make_set(root / "inputs" / "a", "single", 1, total, rng)
        concurrent = make_set(root / "inputs" / "b", "concurrent", CONCURRENT, total, rng)
        rounds = args.warmup + args.reps
        for r in range(rounds):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            for workers in order:
                res = session(workers, single, concurrent, root / f"r{r}-w{workers}", single_first=(r % 2 == 0))
                tag = "warm-up" if r < args.warmup else f"rep {r - args.warmup + 1}"
                print(f"{tag}: workers={workers} single {res['single']:.2f} s, 8 concurrent {res['concurrent8']:.2f} s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
                if r < args.warmup:
                    continue
                seconds.setdefault(f"single_w{workers}", []).append(res["single"])
                seconds.setdefault(f"concurrent8_w{workers}", []).append(res["concurrent8"])
                extras.setdefault(f"startup_s_w{workers}", []).append(res["startup_s"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results = {k: summary(v, total) for k, v in seconds.items()}

    def ratio(a: str, b: str) -> float:
        return round(results[b]["median_s"] / results[a]["median_s"], 2)  # throughput of a / throughput of b

    ratios = {
        "concurrent8_w2/single_w1": ratio("concurrent8_w2", "single_w1"),
        "concurrent8_w2/single_w2": ratio("concurrent8_w2", "single_w2"),
        "concurrent8_w1/single_w1": ratio("concurrent8_w1", "single_w1"),
        "concurrent8_w2/concurrent8_w1": ratio("concurrent8_w2", "concurrent8_w1"),
    }
    load_after = os.getloadavg()
    report = {
        "benchmark": "workers",
        "machine": RUN.machine_info(root) | {"load_before": load_before, "load_after": load_after},
        "settings": {"instances_per_set": total, "concurrent_associations": CONCURRENT, "reps": args.reps,
                     "warmup": args.warmup, "env_overrides": {k: v for k, v in os.environ.items() if k.startswith("DICOMGUARD_")}},
        "results": results,
        "ratios": ratios,
        "issue_target": {"name": f"8 concurrent associations with --workers 2 >= {TARGET}x one association",
                         "ratio": ratios["concurrent8_w2/single_w1"], "met": ratios["concurrent8_w2/single_w1"] >= TARGET},
        "extras": {k: round(statistics.median(v), 2) for k, v in extras.items()},
        "total_run_s": round(time.perf_counter() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\n{'measure':<16} {'median s':>9} {'spread %':>9} {'inst/s':>8}")
    for k, v in results.items():
        print(f"{k:<16} {v['median_s']:>9.2f} {v['spread_pct']:>9.1f} {v['instances_per_s']:>8.1f}")
    for k, v in ratios.items():
        print(f"{k:<32} {v:.2f}x")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}; results written to {out}")


if __name__ == "__main__":
    main()
