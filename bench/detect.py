"""Access-anomaly detection benchmark: misuse caught per kind, false alerts, explained share, throughput, latency.

For each seed a simulated hospital (``tests/detect/simulator.py``: 160 staff in 11
departments, 4,000 patients plus staff, households and neighbours, 28 days of
baseline and 14 days of scoring, two intruders of each of the eleven misuse kinds
injected into the scoring period) is scored twice:

* in memory: ``Detector.fit`` on the baseline, then ``Detector.observe`` on every
  scoring event, each call timed (latency percentiles, events/s of observe alone);
* end to end: the events written as PS3.15 XML lines (every fifth one wrapped in
  RFC 5424 syslog) and the context as the three CSVs, then ``detect_offline``
  (parsing included; events/s over all events, baseline and scoring), with the
  CPU seconds of this process and of the parsing workers (wall time on a shared
  machine depends on the other load; CPU time much less).

An intruder is caught when an alert names their user and overlaps their misuse
(from an hour before its first event to a day after its last). A false alert is an
alert that overlaps no intruder's misuse; rates are per 1,000 active user-days of
the scoring period. The explained share counts normal (non-injected) access events.
Seeds 1-3 were used while tuning, seeds 4-6 were not: both are reported.

Usage: ``python bench/detect.py [--seeds 1 2 3 4 5 6] [--offline-reps 3] [--out FILE]``; offline scoring runs
``--offline-reps`` times per seed and worker count, and the run of median throughput is the one reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from dicomguard.detect import Detector, detect_offline
from tests.detect.simulator import MISUSE_KINDS, simulate, write_audit, write_context

TUNING_SEEDS = (1, 2, 3)


def _overlaps(a, m) -> bool:
    return a.user == m.user and a.end >= m.start - timedelta(hours=1) and a.start <= m.end + timedelta(days=1)


def _lxml_anchor(path: Path) -> float:
    """Lines/s of lxml alone parsing every line of the trail in one process (same hardened parser): the floor's anchor."""
    from lxml import etree

    from dicomguard.detect.events import _PARSER, _xml_of

    lines = [line.rstrip(b"\r\n") for line in path.read_bytes().splitlines() if line.strip()]
    t = time.perf_counter()
    for line in lines:
        etree.fromstring(_xml_of(line), _PARSER)
    return len(lines) / (time.perf_counter() - t)


def _timed_offline(*args: object, **kw: object) -> tuple[list, dict]:
    """detect_offline plus the CPU seconds it used, in this process and in its worker processes: on a shared machine
    wall time depends on the other load, CPU time much less."""
    import resource

    cpu, children = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    alerts, stats = detect_offline(*args, **kw)  # type: ignore[arg-type]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats["cpu_seconds_main"] = time.process_time() - cpu
    stats["cpu_seconds_workers"] = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return alerts, stats


def _median_run(runs: list[tuple[list, dict]]) -> tuple[list, dict]:
    """The run of median throughput (the middle one of an odd count), with every run's events/s alongside."""
    ordered = sorted(runs, key=lambda r: r[1]["events_per_second"])
    alerts, stats = ordered[len(ordered) // 2]
    return alerts, {**stats, "events_per_second_of_each_run": [r[1]["events_per_second"] for r in runs]}


def run_seed(seed: int, offline: bool, reps: int = 3) -> dict:
    sim = simulate(seed)
    d = Detector(sim.context)
    t = time.perf_counter()
    d.fit(sim.baseline)
    fit_s = time.perf_counter() - t
    lat: list[float] = []
    normal = normal_explained = 0
    t_all = time.perf_counter()
    for e in sim.scoring:
        before_acc, before_exp = d._accesses, d._explained
        t0 = time.perf_counter()
        d.observe(e)
        lat.append(time.perf_counter() - t0)
        if e.event_id not in sim.misuse_event_ids and d._accesses > before_acc:
            normal += 1
            normal_explained += d._explained - before_exp
    observe_s = time.perf_counter() - t_all
    d.flush()
    caught: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for m in sim.misuse:
        total[m.kind] += 1
        caught[m.kind] += any(_overlaps(a, m) for a in d.alerts)
    false = [a for a in d.alerts if not any(_overlaps(a, m) for m in sim.misuse)]
    user_days = len({(e.user, e.time.date()) for e in sim.scoring})
    lat.sort()
    out = {
        "seed": seed, "tuning_seed": seed in TUNING_SEEDS, "events": len(sim.events), "scoring_events": len(sim.scoring),
        "users": len(sim.context.users), "patients": len(sim.context.patients), "scoring_user_days": user_days,
        "threshold": d.threshold, "calibration": d.calibration,
        "caught": {k: caught[k] for k in MISUSE_KINDS}, "intruders": {k: total[k] for k in MISUSE_KINDS},
        "alerts": len(d.alerts), "false_alerts": len(false), "false_per_1000_user_days": 1000 * len(false) / user_days,
        "false_alert_kinds": dict(Counter(a.kind for a in false)),
        "normal_explained_share": normal_explained / normal if normal else 1.0,
        "fit_seconds": fit_s, "observe_events_per_second": len(sim.scoring) / observe_s,
        "observe_latency_ms": {"p50": 1000 * lat[len(lat) // 2], "p99": 1000 * lat[int(len(lat) * 0.99)], "max": 1000 * lat[-1]},
    }
    if offline:
        with tempfile.TemporaryDirectory() as tmp:
            write_context(sim.context, Path(tmp) / "ctx")
            write_audit(sim.events, Path(tmp) / "audit.log", syslog_every=5)
            anchor = _lxml_anchor(Path(tmp) / "audit.log")
            args = ([Path(tmp) / "audit.log"], Path(tmp) / "ctx", sim.baseline_until)
            _, serial = _median_run([_timed_offline(*args, workers=1) for _ in range(reps)])
            alerts, stats = _median_run([_timed_offline(*args) for _ in range(reps)])
        out["offline"] = {k: v for k, v in stats.items() if k != "calibration"}
        out["offline_one_process"] = {k: v for k, v in serial.items() if k != "calibration"}
        out["offline_alerts"] = len(alerts)
        out["anchor_lxml_parse_events_per_second"] = anchor
        out["offline_vs_anchor"] = stats["events_per_second"] / anchor
    return out


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    ap.add_argument("--no-offline", action="store_true")
    ap.add_argument("--offline-reps", type=int, default=3, help="detect_offline runs per seed and worker count (the median run is kept)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    runs = []
    for seed in args.seeds:
        r = run_seed(seed, not args.no_offline, args.offline_reps)
        runs.append(r)
        print(f"seed {seed}: caught {sum(r['caught'].values())}/{sum(r['intruders'].values())}, false/1000 {r['false_per_1000_user_days']:.2f} "
              f"{r['false_alert_kinds']}, explained {r['normal_explained_share']:.3f}, "
              f"p99 {r['observe_latency_ms']['p99']:.3f} ms, observe {r['observe_events_per_second']:.0f} ev/s"
              + (f", offline {r['offline']['events_per_second']:.0f} ev/s ({r['offline']['workers']} workers; one process "
                 f"{r['offline_one_process']['events_per_second']:.0f}; lxml parse alone {r['anchor_lxml_parse_events_per_second']:.0f}; "
                 f"read/fit/after reading {r['offline']['parse_seconds']:.2f}/{r['offline']['fit_seconds']:.2f}/"
                 f"{r['offline']['after_parse_seconds']:.2f} s, in order {r['offline']['in_order']}; CPU main {r['offline']['cpu_seconds_main']:.2f} s, "
                 f"workers {r['offline']['cpu_seconds_workers']:.2f} s)"
                 if 'offline' in r else ""), flush=True)
    summary: dict = {"per_kind_caught_share": {}}
    for k in MISUSE_KINDS:
        shares = [r["caught"][k] / r["intruders"][k] for r in runs if r["intruders"][k]]
        summary["per_kind_caught_share"][k] = {**_summary(shares), "caught": sum(r["caught"][k] for r in runs),
                                               "intruders": sum(r["intruders"][k] for r in runs)}
    for group, sel in (("all", runs), ("tuning_seeds", [r for r in runs if r["tuning_seed"]]),
                       ("held_out_seeds", [r for r in runs if not r["tuning_seed"]])):
        if not sel:
            continue
        summary[group] = {
            "caught_share": _summary([sum(r["caught"].values()) / sum(r["intruders"].values()) for r in sel]),
            "false_per_1000_user_days": _summary([r["false_per_1000_user_days"] for r in sel]),
            "normal_explained_share": _summary([r["normal_explained_share"] for r in sel]),
            "observe_events_per_second": _summary([r["observe_events_per_second"] for r in sel]),
            "observe_p99_ms": _summary([r["observe_latency_ms"]["p99"] for r in sel]),
        }
        if all("offline" in r for r in sel):
            summary[group]["offline_events_per_second"] = _summary([r["offline"]["events_per_second"] for r in sel])
            summary[group]["offline_one_process_events_per_second"] = _summary(
                [r["offline_one_process"]["events_per_second"] for r in sel])
            summary[group]["anchor_lxml_parse_events_per_second"] = _summary([r["anchor_lxml_parse_events_per_second"] for r in sel])
            summary[group]["offline_vs_anchor"] = _summary([r["offline_vs_anchor"] for r in sel])
    result = {"date": dt.date.today().isoformat(), "python": sys.version.split()[0], "summary": summary, "runs": runs}
    out = args.out or ROOT / "bench" / "results" / f"detect-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(summary, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
