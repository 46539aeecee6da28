"""Header de-identification throughput: dicomguard against dicognito and pydicom/deid, in one run.

Workload: 500 CT Image Storage slices, 512x512, 12 bits stored in 16, explicit VR
little endian, generated with fixed seeds by ``tests/deidentification/phi_data.py`` (so every
run sees the same bytes): full geometry, and identifying values planted in the
patient, study, equipment and institution attributes, in nested sequences, in
descriptions, in a private block, an overlay and a curve. ``--quick``: 100 slices.

Methods, each fed the same in-memory Part 10 bytes and timed from bytes to bytes
(read -> de-identify -> write), pixel data never decoded:

* ``bare``: ``pydicom.dcmread`` + ``pydicom.dcmwrite``, no de-identification; the
  floor every pydicom-based tool pays;
* ``dicomguard-basic``: :meth:`Deidentifier.deidentify_bytes` with the basic profile;
* ``dicomguard-research``: the research preset without ``clean-pixel-data`` (header only:
  modified dates, patient characteristics, cleaned descriptors, SR content, graphics);
* ``dicognito``: ``Anonymizer().anonymize(ds)`` between dcmread and dcmwrite;
* ``deid``: pydicom/deid ``replace_identifiers`` with its default recipe (``remove_private=True``).

A comparison package that is not installed is reported as skipped. The methods'
order rotates between repetitions, and one untimed warm-up round runs first. Both
wall time and process CPU time are recorded: on a shared machine CPU time is the
steadier of the two. Each tool is run with its defaults, so they do not do the
same work: the report also says how many of the planted identifying values each
tool leaves in its output for one slice (untimed), which is the context the
throughput numbers need.

Pixel cleaning is measured by the pixel cleaner's own benchmark, which plugs in
at :func:`bench_pixels` (``--pixels``).

Usage::

    .venv/bin/python bench/deid.py            # 500 slices, 5 timed repetitions
    .venv/bin/python bench/deid.py --quick    # 100 slices, 2 repetitions
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata
import io
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.deidentification.phi_data is the workload generator

from dicomguard.deid.engine import Deidentifier, DeidKeys
from dicomguard.deid.options import PRESETS, Option
from tests.deidentification.phi_data import PLANTED, make_study, to_bytes

TARGET_RATIO = 2.0
"""dicomguard-basic must process at least this many times as many slices per second as dicognito."""

Method = Callable[[bytes], bytes]


def _quiet_pydicom() -> None:
    # As the application does at start-up (app/bootstrap.py): no validation warnings, which also
    # keeps every method from paying for warning formatting.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _bare(data: bytes) -> bytes:
    out = io.BytesIO()
    pydicom.dcmwrite(out, pydicom.dcmread(io.BytesIO(data)))
    return out.getvalue()


def _dicomguard(options: frozenset[Option]) -> Method:
    engine = Deidentifier(options, DeidKeys("bench", bytes(range(32))))

    def run(data: bytes) -> bytes:
        return engine.deidentify_bytes(data)[0]

    return run


def _import_external(name: str) -> Any:
    """Import an installed package even though this file is itself called deid.py."""
    here = str(Path(__file__).resolve().parent)
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path(here)]
    try:
        module = sys.modules.get(name)
        if module is not None and Path(getattr(module, "__file__", "") or "").resolve() == Path(__file__).resolve():
            del sys.modules[name]
        return importlib.import_module(name)
    finally:
        sys.path[:] = saved


def _dicognito() -> Method:
    anonymizer_module = _import_external("dicognito.anonymizer")
    anonymizer = anonymizer_module.Anonymizer()

    def run(data: bytes) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(data))
        anonymizer.anonymize(ds)
        out = io.BytesIO()
        pydicom.dcmwrite(out, ds)
        return out.getvalue()

    return run


def _deid() -> Method:
    _import_external("deid")
    recipe = _import_external("deid.config").DeidRecipe()
    replace_identifiers = _import_external("deid.dicom").replace_identifiers
    import logging

    logging.getLogger("deid").setLevel(logging.ERROR)

    def run(data: bytes) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(data))
        cleaned = replace_identifiers(dicom_files=[ds], deid=recipe, save=False, remove_private=True)[0]
        out = io.BytesIO()
        pydicom.dcmwrite(out, cleaned)
        return out.getvalue()

    return run


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def methods() -> tuple[dict[str, Method], dict[str, str]]:
    """The runnable methods, and the skipped ones with the reason."""
    header_research = PRESETS["research"] - {Option.CLEAN_PIXEL_DATA}
    found: dict[str, Method] = {
        "bare": _bare,
        "dicomguard-basic": _dicomguard(PRESETS["basic"]),
        "dicomguard-research": _dicomguard(header_research),
    }
    skipped: dict[str, str] = {}
    for name, factory, distribution in (("dicognito", _dicognito, "dicognito"), ("deid", _deid, "deid")):
        if _version(distribution) is None:
            skipped[name] = f"package {distribution!r} is not installed (pip install {distribution})"
            continue
        try:
            found[name] = factory()
        except Exception as exc:  # noqa: BLE001 - a broken comparison package is reported, not fatal
            skipped[name] = f"{distribution} could not be set up: {type(exc).__name__}: {exc}"
    return found, skipped


def leaks(method: Method, data: bytes) -> list[str]:
    """Planted identifying values (any case, ``^`` or space) left in one output; untimed."""
    haystack = method(data).upper()
    return [v for v in PLANTED if v.upper().encode() in haystack or v.upper().replace("^", " ").encode() in haystack]


def measure(found: dict[str, Method], files: list[bytes], reps: int, warmup: int) -> dict[str, dict[str, Any]]:
    names = list(found)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for round_index in range(warmup + reps):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            method = found[name]
            started_wall, started_cpu = time.perf_counter(), time.process_time()
            for data in files:
                method(data)
            elapsed_wall, elapsed_cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
            if round_index >= warmup:
                wall[name].append(elapsed_wall)
                cpu[name].append(elapsed_cpu)
        label = " (warm-up)" if round_index < warmup else ""
        print(f"  round {round_index + 1}/{warmup + reps}{label} done", flush=True)
    return {name: summarize(len(files), wall[name], cpu[name]) for name in names}


def summarize(count: int, wall: list[float], cpu: list[float]) -> dict[str, Any]:
    def stats(seconds: list[float]) -> dict[str, float]:
        rates = sorted(count / s for s in seconds)
        return {
            "median_files_per_s": round(statistics.median(rates), 1),
            "min_files_per_s": round(rates[0], 1),
            "max_files_per_s": round(rates[-1], 1),
            "spread_pct": round(100 * (rates[-1] - rates[0]) / statistics.median(rates), 1),
            "median_ms_per_file": round(1000 * statistics.median(seconds) / count, 3),
        }

    return {"files": count, "wall_s": [round(s, 4) for s in wall], "cpu_s": [round(s, 4) for s in cpu],
            "wall": stats(wall), "cpu": stats(cpu)}


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ours in ("dicomguard-basic", "dicomguard-research"):
        for other in ("dicognito", "deid"):
            if ours in results and other in results:
                for clock in ("wall", "cpu"):
                    out[f"{ours}/{other} ({clock})"] = round(
                        results[ours][clock]["median_files_per_s"] / results[other][clock]["median_files_per_s"], 2
                    )
    return out


def bench_pixels(args: argparse.Namespace) -> dict[str, Any] | None:
    """Pixel-cleaning benchmark (echo cine) of ``dicomguard.deid.pixels``: its owner plugs it in here.

    Returns the results to store under ``"pixels"`` in the report, or None when not measured.
    """
    return None


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": {name: _version(name) for name in ("dicomguard", "pydicom", "numpy", "dicognito", "deid")},
    }


def print_table(results: dict[str, dict[str, Any]], skipped: dict[str, str], found_leaks: dict[str, list[str]]) -> None:
    print(f"\n{'method':<22}{'wall files/s':>14}{'(min-max)':>18}{'cpu files/s':>13}{'ms/file':>9}  planted left")
    for name, res in results.items():
        w, c = res["wall"], res["cpu"]
        span = f"{w['min_files_per_s']:.0f}-{w['max_files_per_s']:.0f}"
        left = len(found_leaks.get(name, []))
        print(f"{name:<22}{w['median_files_per_s']:>14.1f}{span:>18}{c['median_files_per_s']:>13.1f}"
              f"{w['median_ms_per_file']:>9.2f}  {left if name != 'bare' else '-'}")
    for name, reason in skipped.items():
        print(f"{name:<22}skipped: {reason}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100 slices, 2 repetitions, no warm-up")
    p.add_argument("--slices", type=int, default=500)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--pixels", action="store_true", help="also run the pixel-cleaning benchmark (bench_pixels)")
    p.add_argument("--out", type=Path, help="JSON results (default bench/results/deid-<date>[-quick].json)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    slices, reps, warmup = (100, 2, 0) if args.quick else (args.slices, args.reps, args.warmup)
    out = args.out or ROOT / "bench" / "results" / f"deid-{dt.date.today()}{'-quick' if args.quick else ''}.json"
    _quiet_pydicom()
    print(f"generating {slices} CT slices (512x512, 16-bit) ...", flush=True)
    files = [to_bytes(ds) for ds in make_study(count=slices, rows=512, columns=512).ct]
    found, skipped = methods()
    found_leaks = {name: leaks(method, files[0]) for name, method in found.items() if name != "bare"}
    print(f"measuring {', '.join(found)}: {warmup} warm-up + {reps} timed round(s) ...", flush=True)
    results = measure(found, files, reps, warmup)
    report: dict[str, Any] = {
        "benchmark": "deid-header",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "workload": {"slices": slices, "rows": 512, "columns": 512, "bytes": sum(len(f) for f in files)},
        "reps": reps,
        "warmup": warmup,
        "target_ratio": TARGET_RATIO,
        "results": results,
        "ratios": ratios(results),
        "skipped": skipped,
        "planted_values_left_in_one_output": found_leaks,
    }
    if args.pixels:
        pixels = bench_pixels(args)
        report["pixels"] = pixels if pixels is not None else {"skipped": "no pixel benchmark plugged in yet"}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(results, skipped, found_leaks)
    for name, value in report["ratios"].items():
        print(f"{name}: {value}x")
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    main()
