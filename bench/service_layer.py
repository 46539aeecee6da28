"""Before/after numbers of a refactoring, measured only through dicomguard's command line and HTTPS.

Every measure starts ``PYTHON -m dicomguard ...`` subprocesses (``--python``, default this
interpreter) or talks HTTPS to ``dicomguard serve``, so the same script measures the old tree
and the new one: install each tree in its own venv and point ``--python`` at it. Nothing of
dicomguard is imported by the measured code path.

Measures (names are the keys of ``results`` in the JSON):

* ``help_startup``: wall time of ``PYTHON -m dicomguard --help`` (stdout discarded), 15 runs;
  anchor ``PYTHON -c pass`` (bare interpreter start-up), runs interleaved with it.
* ``ls_startup``: ``PYTHON -m dicomguard ls studies --json`` on the home of ``export_500`` (one
  study of 500 CT instances), 9 runs; the listing must show that study with 500 instances.
* ``export_500``: ``dicomguard export --study UID OUTDIR --json`` of that study into a fresh
  folder; every exported file must be there, named by its SOP Instance UID. Anchor: a
  subprocess of the same interpreter that reads each input file with pydicom and writes it
  into a fresh folder (``dcmread`` + ``dcmwrite``, no fsync), like ``bench/run.py``'s ``bare``.
* ``stow_200``: one STOW-RS request of 200 CT slices (a new study every repetition) to
  ``dicomguard serve`` as a technologist with a bearer token; HTTP 200, every instance
  referenced, none failed, QIDO-RS lists them all. Anchor: Orthanc's DICOMweb plugin, same bytes.
* ``suite`` (``--suite``): the wall time and pass/fail line of the tree's own test suite.

The inputs are ``bench/run.py``'s seeded CT generator. Each measure runs ``--warmup`` untimed
rounds first, then ``--reps`` timed ones (help/ls: ``--help-runs`` / ``--ls-runs``); the order of
measured command and anchor alternates; ``os.sync()`` runs before every timed section.

Throughput = input instances or input bytes (MB = 10**6 bytes) / median wall seconds.
``ratio_to_anchor`` = anchor median seconds / dicomguard median seconds (1.0: as fast as the
anchor; compare this ratio between before and after, since it cancels most of the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_scripts import load_script  # noqa: E402

MB = 1e6
TECH_USER = "bench.tech"
DEPARTMENT = "BENCH"
MEASURES = ("help_startup", "ls_startup", "export_500", "stow_200", "suite")
# A measure counts as taken on a loaded machine when processes outside this benchmark used at least
# this share of all cores' time while it ran.
LOADED_SHARE = 0.05
COMMAND_TIMEOUT_S = 900.0  # any one CLI command or HTTP request; a hung one is a failure, not a slow result

# bench/run.py (and through it bench/network.py) imports these dicomguard internals at module level.
# The bench only uses their generators and helpers, so when the interpreter running the bench has a
# dicomguard in which they moved (or none at all), placeholders stand in and the JSON says so.
RUN_PY_IMPORTS: dict[str, dict[str, object]] = {
    "dicomguard": {"__version__": "unknown (not importable by the bench runner)"},
    "dicomguard.app.archive": {"Archive": None},
    "dicomguard.app.home": {"init_home": None},
}


def _stand_in_for_moved_internals() -> list[str]:
    stubbed = []
    for name, attributes in RUN_PY_IMPORTS.items():
        try:
            module = importlib.import_module(name)
            if all(hasattr(module, a) for a in attributes):
                continue
        except Exception:  # noqa: BLE001 - a tree in the middle of a refactoring may fail in any way
            pass
        stub = types.ModuleType(name)
        stub.__dict__.update(attributes)
        sys.modules[name] = stub
        stubbed.append(name)
    return stubbed


STUBBED = _stand_in_for_moved_internals()


NET = load_script("dicomguard_bench_network", "network.py")  # its Server, Orthanc target, HTTP helpers
BENCH = NET.BENCH
BenchError = NET.BenchError


# -- small helpers ------------------------------------------------------------------------


def _tail(text: str | bytes | None, n: int = 1500) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def stats(values: list[float]) -> dict[str, object]:
    """Every repetition's value with median, min, max and the spread (max - min) relative to the median."""
    med = statistics.median(values)
    return {"seconds": values, "median_s": med, "min_s": min(values), "max_s": max(values),
            "spread_pct": 100 * (max(values) - min(values)) / med if med else 0.0}


def throughput(values: list[float], instances: int, nbytes: int) -> dict[str, object]:
    row = stats(values)
    med = float(row["median_s"])  # type: ignore[arg-type]
    return row | {"instances_per_s": instances / med, "mb_per_s": nbytes / MB / med}


def rounds(warmup: int, reps: int) -> Iterator[tuple[int, bool]]:
    """(round index, timed?) for ``warmup`` untimed rounds, then ``reps`` timed ones."""
    for i in range(-warmup, reps):
        yield i, i >= 0


@dataclass
class Cli:
    """``PYTHON -m dicomguard`` against one home."""

    python: str
    home: Path
    cwd: Path

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DICOMGUARD_HOME", "DICOMGUARD_PASSPHRASE")}
        return env | {"DICOMGUARD_HOME": str(self.home), "DICOMGUARD_PASSPHRASE": BENCH.PASSPHRASE}

    def cmd(self, *args: str) -> list[str]:
        return [self.python, "-m", "dicomguard", *args]

    def run(self, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.cmd(*args), env=self.env, cwd=self.cwd, capture_output=True, text=True, check=False,
                              timeout=COMMAND_TIMEOUT_S)
        if proc.returncode not in ok:
            raise BenchError(f"dicomguard {' '.join(args)} exited with {proc.returncode}:\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}")
        return proc

    def json(self, *args: str) -> object:
        proc = self.run(*args)
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise BenchError(f"dicomguard {' '.join(args)}: no JSON on stdout ({exc}):\n{_tail(proc.stdout)}") from exc

    def timed(self, *args: str, capture: bool = False) -> tuple[float, subprocess.CompletedProcess[str]]:
        return timed_run(self.cmd(*args), self.env, self.cwd, capture)


def timed_run(cmd: list[str], env: dict[str, str] | None, cwd: Path, capture: bool = False) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall seconds of one subprocess (stdout captured or discarded; stderr kept for the error message)."""
    os.sync()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False, timeout=COMMAND_TIMEOUT_S)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"{shlex.join(cmd[:6])} ... exited with {proc.returncode}:\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}")
    return seconds, proc


def init_home(cli: Cli) -> dict[str, object]:
    """``dicomguard init --admin admin --json`` (passphrase from DICOMGUARD_PASSPHRASE); returns the home's [kdf] settings."""
    doc = cli.json("init", "--admin", "admin", "--json")
    if not isinstance(doc, dict) or doc.get("admin") != "admin":
        raise BenchError(f"dicomguard init: unexpected answer {doc!r}")
    with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
        return dict(tomllib.loads((cli.home / "config.toml").read_text(encoding="utf-8")).get("kdf", {}))
    return {}


class CpuWatch:
    """CPU time used on the whole machine while a measure ran, minus this process and its (reaped) children:
    what other processes took. From /proc/stat (Linux); absent elsewhere."""

    def __init__(self) -> None:
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float, float] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        t = os.times()
        ours = t.user + t.system + t.children_user + t.children_system
        return time.monotonic(), (user + nice + system + irq + softirq) / hz, ours, steal / hz

    def report(self) -> dict[str, object]:
        end = self._snapshot()
        if self.start is None or end is None:
            return {"available": False}
        wall = end[0] - self.start[0]
        busy, ours, steal = end[1] - self.start[1], end[2] - self.start[2], end[3] - self.start[3]
        foreign = max(0.0, busy - ours)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        share = foreign / (wall * cores) if wall > 0 else 0.0
        return {"wall_s": wall, "machine_busy_cpu_s": busy, "bench_cpu_s": ours, "foreign_cpu_s": foreign,
                "foreign_cpu_share": share, "steal_cpu_s": steal, "loaded": share >= LOADED_SHARE}


# -- inputs ---------------------------------------------------------------------------------


@dataclass
class Inputs:
    folder: Path  # the CT files of one study, what ``dicomguard import`` reads
    files: list[Path]
    study_uid: str
    sops: list[str]  # SOP Instance UIDs, in the order of ``files``

    @property
    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def make_inputs(root: Path, count: int) -> Inputs:
    """``count`` CT slices of one study from bench/run.py's seeded generator (the same bytes as the import bench)."""
    import numpy as np
    import pydicom

    files = BENCH.make_ct_series(root / "ct", count, np.random.default_rng(BENCH.SEED))
    study, sops = "", []
    for p in files:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        study = str(ds.StudyInstanceUID)
        sops.append(str(ds.SOPInstanceUID))
    return Inputs(root / "ct", files, study, sops)


def stow_parts(files: list[Path], round_index: int) -> tuple[list[bytes], str]:
    """The CT slices as a new study (study, series, frame of reference and instance UIDs derived from the seed
    and the round), so no repetition stores a duplicate; returns the Part 10 bytes and the study UID."""
    import pydicom
    from pydicom.uid import generate_uid

    def uid(*parts: object) -> str:
        return generate_uid(entropy_srcs=[str(BENCH.SEED), "service-layer-stow", str(round_index), *map(str, parts)])

    study, series = uid("study"), uid("series")
    parts = []
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, uid("frame")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("instance", i)
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        parts.append(buf.getvalue())
    return parts, study


# -- measures -------------------------------------------------------------------------------


@dataclass
class Context:
    python: str
    root: Path
    reps: int
    warmup: int
    help_runs: int
    ls_runs: int
    export_n: int
    stow_n: int
    kdf: dict[str, object] = field(default_factory=dict)
    _inputs: dict[int, Inputs] = field(default_factory=dict)
    _export_home: tuple[Cli, Inputs, float] | BaseException | None = None

    def inputs(self, count: int, whole_folder: bool = False) -> Inputs:
        """``count`` CT slices of one study, generated once; without ``whole_folder`` the first ``count`` of a larger
        set already made will do (the folder then holds more than ``files``)."""
        for have, inputs in self._inputs.items():
            if have == count or (have > count and not whole_folder):
                return inputs if have == count else Inputs(inputs.folder, inputs.files[:count], inputs.study_uid, inputs.sops[:count])
        print(f"  generating {count} CT slices ...", flush=True)
        self._inputs[count] = make_inputs(self.root / f"inputs-{count}", count)
        return self._inputs[count]

    def export_home(self) -> tuple[Cli, Inputs, float]:
        """A fresh home holding one study of ``export_n`` CT instances (imported untimed); shared by ls and export.
        Made once: when it fails, the measures that need it fail with the same error."""
        if isinstance(self._export_home, BaseException):
            raise BenchError(f"setting up the export home failed before: {self._export_home}")
        if self._export_home is None:
            try:
                inputs = self.inputs(self.export_n, whole_folder=True)
                print("  importing them into a fresh home (untimed) ...", flush=True)
                cli = Cli(self.python, self.root / "export-home", self.root)
                self.kdf = init_home(cli)
                start = time.perf_counter()
                summary = cli.json("import", str(inputs.folder), "--json")
                import_s = time.perf_counter() - start
                if not isinstance(summary, dict) or summary.get("stored") != len(inputs.files) or summary.get("rejected"):
                    raise BenchError(f"dicomguard import stored {summary!r}, expected {len(inputs.files)} stored")
            except Exception as exc:
                self._export_home = exc
                raise
            self._export_home = (cli, inputs, import_s)
        return self._export_home


def measure_help(ctx: Context) -> dict[str, object]:
    cli = Cli(ctx.python, ctx.root / "no-home", ctx.root)  # --help opens no home
    _, proc = cli.timed("--help", capture=True)
    if not all(word in proc.stdout for word in ("export", "import", "serve")):
        raise BenchError(f"dicomguard --help does not list its commands:\n{_tail(proc.stdout)}")
    bare = [ctx.python, "-c", "pass"]
    helps: list[float] = []
    passes: list[float] = []
    for i, is_timed in rounds(ctx.warmup, ctx.help_runs):
        order = ("help", "pass") if i % 2 == 0 else ("pass", "help")
        for what in order:
            secs = cli.timed("--help")[0] if what == "help" else timed_run(bare, cli.env, ctx.root)[0]
            if is_timed:
                (helps if what == "help" else passes).append(secs)
    h, p = stats(helps), stats(passes)
    hm, pm = float(h["median_s"]), float(p["median_s"])  # type: ignore[arg-type]
    return {"command": "PYTHON -m dicomguard --help", "dicomguard_help": h, "anchor_python_pass": p,
            "overhead_s": hm - pm, "times_python": hm / pm}


def measure_ls(ctx: Context) -> dict[str, object]:
    cli, inputs, _ = ctx.export_home()
    n = len(inputs.files)
    values: list[float] = []
    for _i, is_timed in rounds(ctx.warmup, ctx.ls_runs):
        secs, proc = cli.timed("ls", "studies", "--json", capture=True)
        rows = json.loads(proc.stdout)
        mine = [r for r in rows if r.get("uid") == inputs.study_uid]
        if len(rows) != 1 or len(mine) != 1 or mine[0].get("instances") != n:
            raise BenchError(f"dicomguard ls studies --json: expected one study {inputs.study_uid} of {n} instances, got {_tail(proc.stdout, 600)}")
        if is_timed:
            values.append(secs)
    return {"command": "PYTHON -m dicomguard ls studies --json", "study_instances": n, "dicomguard_ls": stats(values)}


BARE_EXPORT = """\
import sys
from pathlib import Path
import pydicom
paths = Path(sys.argv[1]).read_text().splitlines()
out = Path(sys.argv[2])
out.mkdir()
for i, p in enumerate(paths):
    pydicom.dcmwrite(out / f"{i}.dcm", pydicom.dcmread(p), enforce_file_format=True)
"""


def measure_export(ctx: Context) -> dict[str, object]:
    cli, inputs, import_s = ctx.export_home()
    n, nbytes = len(inputs.files), inputs.nbytes
    listing = ctx.root / "inputs.txt"
    listing.write_text("\n".join(map(str, inputs.files)) + "\n", encoding="utf-8")
    seconds: dict[str, list[float]] = {"export": [], "bare": []}
    for i, is_timed in rounds(ctx.warmup, ctx.reps):
        for method in (("export", "bare") if i % 2 == 0 else ("bare", "export")):
            out = ctx.root / f"{method}-out-{i}"
            try:
                if method == "export":
                    secs, proc = cli.timed("export", "--study", inputs.study_uid, str(out), "--json", capture=True)
                    doc = json.loads(proc.stdout)
                    on_disk = sorted(out.rglob("*"))
                    names = {p.name.removesuffix(".dcm") for p in on_disk if p.is_file()}
                    if len(doc.get("written", [])) != n or doc.get("failed") or names != set(inputs.sops):
                        raise BenchError(f"dicomguard export: {len(doc.get('written', []))} written, {len(doc.get('failed') or [])} failed, "
                                         f"{len(names)} files on disk, {len(names & set(inputs.sops))} of the {n} expected instances")
                else:
                    secs, _ = timed_run([ctx.python, "-c", BARE_EXPORT, str(listing), str(out)], cli.env, ctx.root)
                    if (written := sum(1 for p in out.iterdir() if p.is_file())) != n:
                        raise BenchError(f"bare pydicom read+write wrote {written} files, expected {n}")
            finally:
                shutil.rmtree(out, ignore_errors=True)
            if is_timed:
                seconds[method].append(secs)
    export, bare = throughput(seconds["export"], n, nbytes), throughput(seconds["bare"], n, nbytes)
    return {"command": "PYTHON -m dicomguard export --study UID OUTDIR --json", "input": {"instances": n, "bytes": nbytes},
            "dicomguard_export": export, "anchor_bare_pydicom": bare,
            "ratio_to_anchor": float(bare["median_s"]) / float(export["median_s"]),  # type: ignore[arg-type]
            "extras": {"import_s_untimed_setup": import_s}}


@contextlib.contextmanager
def dicomguard_server(ctx: Context, folder: Path) -> Iterator[tuple[str, Path, str, float]]:
    """``dicomguard serve`` on a fresh home with a technologist of department BENCH (CT) and a bearer token,
    all made with the CLI. Yields (DICOMweb base URL, CA file, token, start-up seconds)."""
    folder.mkdir(parents=True)
    cli = Cli(ctx.python, folder / "home", folder)
    kdf = init_home(cli)
    ctx.kdf = ctx.kdf or kdf
    user = cli.json("user", "add", TECH_USER, "--role", "technologist", "--department", DEPARTMENT, "--modality", "CT", "--json")
    if not isinstance(user, dict) or user.get("name") != TECH_USER:
        raise BenchError(f"dicomguard user add: unexpected answer {user!r}")
    token = cli.run("token", "create", "--user", TECH_USER, "--ttl", "1h").stdout.strip()
    if not token or len(token.split()) != 1:
        raise BenchError(f"dicomguard token create: expected one token on stdout, got {token[:200]!r}")
    dimse_port, https_port = NET.free_port(), NET.free_port()
    server = NET.Server("dicomguard", cli.cmd("serve", "--dimse-port", str(dimse_port), "--https-port", str(https_port),
                                              "--host", "127.0.0.1"), folder, cli.env)
    try:
        startup = server.wait_until(lambda: server.stdout_has("READY"), "READY line")
        yield f"https://127.0.0.1:{https_port}/dicomweb", cli.home / "tls" / "ca.pem", token, startup
    finally:
        server.stop()


def _orthanc_absent() -> str | None:
    if shutil.which(NET.orthanc_binary()) is None:
        return f"Orthanc not found ({NET.orthanc_binary()})"
    try:
        NET.dicomweb_plugin()
    except BenchError as exc:
        return str(exc)
    return None


def _stow(session, url: str, body: bytes, content_type: str) -> tuple[float, dict]:  # type: ignore[no-untyped-def]
    os.sync()
    start = time.perf_counter()
    r = session.post(url, data=body, headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                     timeout=COMMAND_TIMEOUT_S)
    secs = time.perf_counter() - start
    if r.status_code != 200:
        raise BenchError(f"STOW-RS {url}: HTTP {r.status_code}: {r.text[:800]}")
    return secs, r.json()


def measure_stow(ctx: Context) -> dict[str, object]:
    files = ctx.inputs(ctx.stow_n).files
    n = len(files)
    absent = _orthanc_absent()
    seconds: dict[str, list[float]] = {"dicomguard": [], "orthanc": []}
    body_bytes: list[int] = []
    extras: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        base, ca, token, startup = stack.enter_context(dicomguard_server(ctx, ctx.root / "stow-dicomguard"))
        extras["dicomguard_startup_s"] = startup
        dg = stack.enter_context(NET._http_session(token, ca))
        orthanc = None
        if absent is None:
            orthanc = stack.enter_context(NET.orthanc_target(ctx.root / "stow-orthanc"))
            extras["orthanc_startup_s"] = orthanc.startup_s
            plain = stack.enter_context(NET._http_session())
        stored_in_orthanc = 0
        for i, is_timed in rounds(ctx.warmup, ctx.reps):
            parts, study = stow_parts(files, i)
            body, content_type = NET.multipart_body(parts)
            del parts
            targets = ("dicomguard", "orthanc") if i % 2 == 0 else ("orthanc", "dicomguard")
            for target in targets:
                if target == "dicomguard":
                    secs, doc = _stow(dg, f"{base}/studies", body, content_type)
                    referenced = len(doc.get("00081199", {}).get("Value", []))
                    failed = len(doc.get("00081198", {}).get("Value", []))
                    r = dg.get(f"{base}/studies/{study}/instances", headers={"Accept": "application/dicom+json"}, timeout=COMMAND_TIMEOUT_S)
                    listed = len(r.json()) if r.status_code == 200 else 0
                    if referenced != n or failed or listed != n:
                        raise BenchError(f"dicomguard STOW-RS: {referenced} referenced, {failed} failed, QIDO-RS lists {listed} "
                                         f"(HTTP {r.status_code}); expected {n}")
                elif orthanc is not None:
                    secs, doc = _stow(plain, f"{orthanc.base}/dicom-web/studies", body, content_type)
                    stored_in_orthanc += n
                    referenced = len(doc.get("00081199", {}).get("Value", []))
                    held = NET._orthanc_instances(orthanc)
                    if referenced != n or held != stored_in_orthanc:
                        raise orthanc.server.fail(f"STOW-RS: {referenced} referenced of {n}; holds {held}, expected {stored_in_orthanc}")
                else:
                    continue
                if is_timed:
                    seconds[target].append(secs)
            if is_timed:
                body_bytes.append(len(body))
            del body
    nbytes = sum(p.stat().st_size for p in files)
    result: dict[str, object] = {
        "request": f'one POST /studies, multipart/related; type="application/dicom", {n} parts, a new study per round',
        "input": {"instances": n, "bytes": nbytes, "body_bytes": body_bytes},
        "dicomguard_stow": throughput(seconds["dicomguard"], n, nbytes)}
    if absent is None:
        orth = throughput(seconds["orthanc"], n, nbytes)
        result["anchor_orthanc_stow"] = orth
        result["ratio_to_anchor"] = float(orth["median_s"]) / float(result["dicomguard_stow"]["median_s"])  # type: ignore[index]
    else:
        result["anchor_orthanc_stow"] = {"absent": absent}
        result["ratio_to_anchor"] = None
    return result | {"extras": extras}


SUMMARY_WORDS = r"passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?"


def run_suite(tree: Path, extra_args: list[str], out_folder: Path) -> dict[str, object]:
    """The tree's own test suite as CI runs it; its wall time and the pytest summary line."""
    python = tree / ".venv" / "bin" / "python"
    if not python.exists():
        raise BenchError(f"{python} does not exist: the suite runs with the tree's own venv")
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra_args]
    log = out_folder / "suite.log"
    env = os.environ | {"CI": "true"}
    os.sync()
    start = time.perf_counter()
    with log.open("wb") as f:
        proc = subprocess.run(cmd, cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    text = log.read_text(errors="replace")
    lines = [ln.strip("= ").strip() for ln in text.splitlines() if re.search(rf"\d+ ({SUMMARY_WORDS})\b", ln) and " in " in ln]
    summary = lines[-1] if lines else ""
    counts = {word.rstrip("s") if word in ("errors", "warnings") else word: int(num)
              for num, word in re.findall(rf"(\d+) ({SUMMARY_WORDS})\b", summary)}
    if not summary:
        raise BenchError(f"pytest printed no summary line (exit {proc.returncode}):\n{text[-2000:]}")
    return {"command": shlex.join(cmd), "cwd": str(tree), "env": {"CI": "true"}, "seconds": seconds,
            "returncode": proc.returncode, "summary": summary, "counts": counts, "git": git_state(tree)}


# -- what was measured ------------------------------------------------------------------------


INFO_SCRIPT = """\
import importlib.metadata as md, importlib.util as u, json, platform, sys
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
spec = u.find_spec("dicomguard")
print(json.dumps({"python": platform.python_version(), "executable": sys.executable, "prefix": sys.prefix,
                  "dicomguard": version("dicomguard"), "pydicom": version("pydicom"),
                  "package": spec.origin if spec else None}))
"""


def measured_interpreter(python: str, cwd: Path) -> dict[str, object]:
    """Versions and package location of the measured interpreter, without importing dicomguard."""
    proc = subprocess.run([python, "-c", INFO_SCRIPT], capture_output=True, text=True, cwd=cwd, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"--python {python} does not run: {proc.stderr[-500:]}")
    info = json.loads(proc.stdout)
    if info["package"] is None:
        raise SystemExit(f"--python {python} has no dicomguard installed")
    return info


def tree_of(package: str | None) -> Path | None:
    if package is None:
        return None
    proc = subprocess.run(["git", "-C", str(Path(package).parent), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False)
    return Path(proc.stdout.strip()) if proc.returncode == 0 else None


def git_state(tree: Path | None) -> dict[str, object]:
    """The commit of the tree and how many paths differ from it (the tree may be edited while it is measured)."""
    if tree is None:
        return {"commit": None}

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=False, timeout=30)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    return {"tree": str(tree), "commit": git("rev-parse", "HEAD") or None, "subject": git("log", "-1", "--format=%s"),
            "uncommitted_paths": len(git("status", "--porcelain").splitlines())}


def machine_info(root: Path) -> dict[str, object]:
    import requests

    info = BENCH.machine_info(root)
    info["bench_runner_dicomguard"] = info.pop("dicomguard")  # the runner's, not the measured one's
    info.update({"cpu": NET._cpu_model(), "requests": requests.__version__,
                 "orthanc": NET._version([NET.orthanc_binary(), "--version"]),
                 "orthanc_dicomweb_plugin": NET._dpkg_version("orthanc-dicomweb")})
    return info


# -- main -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", default=sys.executable, help="interpreter whose installed dicomguard is measured (default: this one)")
    p.add_argument("--label", default="run", help="e.g. before / after: in the output file name and the JSON")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 repetition, no warm-up, 100 CT to export, 50 to STOW, 5/3 start-up runs")
    p.add_argument("--reps", type=int, help="timed repetitions of export and STOW (default 3; --quick: 1)")
    p.add_argument("--warmup", type=int, help="untimed rounds before each measure (default 1; --quick: 0)")
    p.add_argument("--help-runs", type=int, help="timed runs of --help and of the anchor (default 15; --quick: 5)")
    p.add_argument("--ls-runs", type=int, help="timed runs of ls (default 9; --quick: 3)")
    p.add_argument("--export-n", type=int, help="CT instances in the exported study (default 500; --quick: 100)")
    p.add_argument("--stow-n", type=int, help="CT instances per STOW-RS request (default 200; --quick: 50)")
    p.add_argument("--only", action="append", choices=MEASURES, help="run only this measure (repeatable)")
    p.add_argument("--suite", action="store_true", help="also run the tree's test suite (DIR/.venv/bin/python -m pytest, CI=true)")
    p.add_argument("--suite-args", default="", help='extra pytest arguments, e.g. --suite-args="-k test_config"')
    p.add_argument("--tree", type=Path, help="source tree measured (git commit; --suite); default: the tree of --python's dicomguard")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where inputs and homes go")
    p.add_argument("--out", type=Path, help="JSON results (default bench/results/service_layer-<label>-<date>.json)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="print two result files side by side; measures nothing")
    args = p.parse_args()
    quick = {"reps": 1, "warmup": 0, "help_runs": 5, "ls_runs": 3, "export_n": 100, "stow_n": 50}
    full = {"reps": 3, "warmup": 1, "help_runs": 15, "ls_runs": 9, "export_n": 500, "stow_n": 200}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def _medians(result: dict[str, object]) -> list[tuple[str, float, str]]:
    rows = []
    for key, value in result.items():
        if isinstance(value, dict) and "median_s" in value:
            extra = f"{value['instances_per_s']:.1f} inst/s, {value['mb_per_s']:.1f} MB/s" if "mb_per_s" in value else ""
            spread = f"{value['min_s']:.3f}-{value['max_s']:.3f}"
            rows.append((key, float(value["median_s"]), f"({spread}) {extra}".strip()))
    return rows


def print_report(report: dict[str, object]) -> None:
    results = report["results"]
    assert isinstance(results, dict)
    if results:
        print(f"\n{'measure':<14}{'what':<22}{'median s':>10}  (min-max) throughput")
    for name, res in results.items():
        if "error" in res:
            print(f"{name:<14}FAILED: {res['error'].splitlines()[0][:100]}")
            continue
        for key, med, rest in _medians(res):
            print(f"{name:<14}{key:<22}{med:>10.3f}  {rest}")
        if "overhead_s" in res:
            print(f"{'':<14}{'overhead vs python':<22}{res['overhead_s']:>10.3f}  ({res['times_python']:.1f}x a bare interpreter start)")
        if res.get("ratio_to_anchor") is not None:
            print(f"{'':<14}{'ratio_to_anchor':<22}{res['ratio_to_anchor']:>10.2f}  (anchor s / dicomguard s)")
        if res.get("cpu", {}).get("loaded"):
            print(f"{'':<14}WARNING: other processes used {res['cpu']['foreign_cpu_share']:.0%} of the CPU during this measure")
    if "suite" in report:
        s = report["suite"]
        print(f"\nsuite: {s.get('seconds', 0):.0f} s: {s.get('summary') or s.get('error')}"
              + (f" (pytest exit {s['returncode']})" if s.get("returncode") else ""))


def compare(before: Path, after: Path) -> None:
    a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (before, after))
    la, lb = str(a.get("label", "A"))[:15], str(b.get("label", "B"))[:15]
    print(f"{'measure':<14}{'what':<22}{la:>16}{lb:>16}{'second/first':>14}")
    for name, res_a in a["results"].items():
        res_b = b["results"].get(name, {})
        for label, res in ((la, res_a), (lb, res_b)):
            if "error" in res or not res:
                print(f"{name:<14}FAILED or missing in {label}: {res.get('error', '').splitlines()[0][:80] if res.get('error') else '-'}")
        for key in [k for k, v in res_a.items() if isinstance(v, dict) and "median_s" in v] + ["overhead_s", "times_python", "ratio_to_anchor"]:
            va, vb = res_a.get(key), res_b.get(key)
            va = va["median_s"] if isinstance(va, dict) else va
            vb = vb["median_s"] if isinstance(vb, dict) else vb
            if isinstance(va, float) and isinstance(vb, float):
                print(f"{name:<14}{key:<22}{va:>16.3f}{vb:>16.3f}{vb / va:>14.2f}")
    for r in (a, b):
        print(f"{r.get('label')}: commit {r['measured']['git'].get('commit')}, {r['measured']['git'].get('uncommitted_paths')} uncommitted paths, "
              f"foreign CPU share {r['load']['cpu'].get('foreign_cpu_share', float('nan')):.1%}, quick={r.get('quick')}")


def main() -> int:
    args = parse_args()
    if args.compare:
        compare(*args.compare)
        return 0
    python = os.path.abspath(args.python)  # not resolved: a venv's python is a symlink to the base interpreter
    selected = list(args.only or [m for m in MEASURES if m != "suite"]) + (["suite"] if args.suite and "suite" not in (args.only or []) else [])
    out = args.out or HERE / "results" / f"service_layer-{args.label}-{dt.date.today()}.json"
    started = time.perf_counter()
    load_before = os.getloadavg()
    overall = CpuWatch()
    measured = measured_interpreter(python, args.workdir)
    root = Path(tempfile.mkdtemp(prefix="dicomguard-slbench-", dir=args.workdir))
    tree = args.tree.resolve() if args.tree else tree_of(measured["package"])  # type: ignore[arg-type]
    overrides = {k: v for k, v in sorted(os.environ.items()) if k.startswith("DICOMGUARD_") and k not in ("DICOMGUARD_HOME", "DICOMGUARD_PASSPHRASE")}
    report: dict[str, object] = {
        "label": args.label, "quick": args.quick,
        "settings": {"reps": args.reps, "warmup": args.warmup, "help_runs": args.help_runs, "ls_runs": args.ls_runs,
                     "export_instances": args.export_n, "stow_instances": args.stow_n,
                     "dicomguard_env_overrides": overrides, "defaults": not overrides},
        "measured": measured | {"command": [python, "-m", "dicomguard"], "git": git_state(tree)},
        "runner": {"python": sys.executable, "script": str(Path(__file__).resolve()), "stubbed_modules": STUBBED},
    }
    results: dict[str, dict] = {}
    runners: dict[str, Callable[[Context], dict[str, object]]] = {
        "help_startup": measure_help, "ls_startup": measure_ls, "export_500": measure_export, "stow_200": measure_stow}
    ctx = Context(python, root, args.reps, args.warmup, args.help_runs, args.ls_runs, args.export_n, args.stow_n)
    try:
        report["machine"] = machine_info(root)
        print(f"measuring {python} -m dicomguard ({measured['dicomguard']}, tree {tree}, commit "
              f"{str(report['measured']['git'].get('commit'))[:12]}) in {root}; label {args.label!r}", flush=True)  # type: ignore[index]
        for name in selected:
            if name == "suite":
                continue
            print(f"{name} ...", flush=True)
            watch, t0 = CpuWatch(), time.perf_counter()
            try:
                results[name] = runners[name](ctx)
            except Exception as exc:  # noqa: BLE001 - recorded, the other measures still run
                results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
                print(f"  FAILED: {type(exc).__name__}: {str(exc)[:2000]}", flush=True)
            results[name]["cpu"] = watch.report()
            print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
        if "suite" in selected:
            print(f"suite: {tree}/.venv/bin/python -m pytest -q -p no:cacheprovider {args.suite_args} ...", flush=True)
            watch = CpuWatch()
            try:
                if tree is None:
                    raise BenchError("no source tree found for --python's dicomguard: give --tree")
                report["suite"] = run_suite(tree, shlex.split(args.suite_args), root)
            except Exception as exc:  # noqa: BLE001
                report["suite"] = {"error": f"{type(exc).__name__}: {exc}"}
            report["suite"]["cpu"] = watch.report()  # type: ignore[index]
        report["settings"]["kdf_in_home"] = ctx.kdf or "not read (no export home was made)"  # type: ignore[index]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["results"] = results
    report["load"] = {"loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpu": overall.report(),
                      "loaded_threshold_foreign_cpu_share": LOADED_SHARE}
    failed = [n for n, r in results.items() if "error" in r] + (["suite"] if "error" in report.get("suite", {}) else [])  # type: ignore[operator]
    report["ok"] = not failed
    report["total_run_s"] = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_report(report)
    if report["load"]["cpu"].get("loaded"):  # type: ignore[index]
        print(f"\nWARNING: the machine was loaded: other processes used {report['load']['cpu']['foreign_cpu_share']:.0%} "  # type: ignore[index]
              "of all cores' time during the run; these numbers are not for comparison.")
    print(f"\nresults written to {out} (run took {report['total_run_s']:.0f} s)" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
