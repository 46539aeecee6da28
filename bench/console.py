"""Console benchmark: the overview page and audit searches over an audit trail of 1 million events, over real HTTPS.

Workload (``bench/incident_scope.py``'s builder): 100 stored CT objects of 100 patients, 1,000 users with 3 real
accesses each, replicated to ``--events`` audit rows (default 1,000,000) spread over the last 30 days, with their
patient blind index. A security officer signs in through the console's real sign-in form (password + TOTP);
the server is ``serve``'s HTTPS server on 127.0.0.1.

Measured, after one warm-up, ``--reps`` times (default 5), medians with min-max:

* overview: time to first byte and to the last byte (httpx, TLS; the first request after the start, which
  counts the hours that are then cached, reported apart); and in Chromium (Playwright, Debian's
  ``/usr/bin/chromium``) the Navigation Timing TTFB and load-event end of the fully rendered page (stylesheet
  and icon included);
* audit search (each a POSTed form: decided, recorded as Audit Log Used, decrypted, rendered; newest 200):
  one user (1/1,000 of the trail), one patient, one event type over 7 days, the whole trail unfiltered;
* anchors in the same run: ``GET /healthz`` (the HTTPS round-trip floor) and the same user search as a direct
  service call (no HTTP, no HTML).

Targets (the console issue): overview TTFB < 300 ms; audit search < 1 s.

Usage: ``python bench/console.py [--events N] [--reps N] [--postgresql] [--out FILE]``; results in
``bench/results/console-DATE.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DICOMGUARD_UNSAFE_TEST_PASSWORD_HASH", "1")

import httpx  # noqa: E402
import pyotp  # noqa: E402

from bench.incident_scope import TARGET, build, scratch_database  # noqa: E402
from dicomguard.app.archive import Archive  # noqa: E402
from dicomguard.audit.store import AuditFilter  # noqa: E402
from dicomguard.core.keyring import PURPOSE_IDENTITY  # noqa: E402
from dicomguard.identity.users import create_user  # noqa: E402
from dicomguard.index.db import write_session  # noqa: E402
from tests.web.conftest import start_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
SEARCHES = {
    "user": {"user": TARGET},
    "patient": {"patient": "PIDBENCH0042"},
    "event-7d": {"event": "instances-accessed", "since": "7d"},
    "unfiltered": {},
}


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"median_ms": round(statistics.median(ms), 1), "min_ms": round(min(ms), 1), "max_ms": round(max(ms), 1)}


def _timed(reps: int, run: Callable[[], Any]) -> list[float]:
    run()  # warm-up
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        out.append(time.perf_counter() - t0)
    return out


def _sign_in(http: httpx.Client, origin: str, name: str, password: str, secret: str) -> tuple[str, float]:
    """Sign in through the form; (the session's form token, seconds of the first overview after the start)."""
    page = http.get("/console/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    r = http.post("/console/login", data={"csrf": token, "username": name, "password": password, "totp": pyotp.TOTP(secret).now()},
                  headers={"Origin": origin})
    assert r.status_code == 303 and r.headers["location"] == "/console/overview", r.text
    t0 = time.perf_counter()
    landing = http.get(r.headers["location"]).text  # counts the hours that are then cached
    first = time.perf_counter() - t0
    return re.search(r'name="csrf" value="([^"]+)"', landing).group(1), first  # type: ignore[union-attr]


def _browser(url: str, cookie: str, reps: int) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        return {"skipped": "no /usr/bin/chromium"}
    from playwright.sync_api import sync_playwright

    ttfb, loaded = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
        context.add_cookies([{"name": "__Host-dicomguard-console", "value": cookie, "url": url, "secure": True, "httpOnly": True,
                              "sameSite": "Strict"}])
        page = context.new_page()
        for n in range(reps + 1):
            page.goto(url + "/console/overview", wait_until="load")
            timing = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
            t = json.loads(timing)
            if n:  # the first is the warm-up
                ttfb.append((t["responseStart"] - t["requestStart"]) / 1000)
                loaded.append(t["loadEventEnd"] / 1000)
        browser.close()
    return {"ttfb": _stats(ttfb), "load_event_end": _stats(loaded)}


def run_backend(backend: str, events: int, reps: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"dg-console-{backend}-"))
    with scratch_database(backend) as database:
        archive, fill_s = build(work / "home", database, events, days=30, patients=True)
        try:
            return {"events": events, "fill_s": round(fill_s, 1), **measure(archive, reps)}
        finally:
            archive.close()


def measure(archive: Archive, reps: int) -> dict[str, Any]:
    with write_session(archive.ctx.engine) as s:
        officer = create_user(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), "sec.bench", "security_officer")
    server, stop = start_server(archive)
    out: dict[str, Any] = {}
    try:
        http = httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=server.ca), timeout=120, trust_env=False)
        csrf, first_overview = _sign_in(http, server.url, officer.name, officer.password, officer.totp_secret)
        out["healthz"] = _stats(_timed(reps, lambda: http.get("/healthz")))
        first_byte: list[float] = []

        def overview() -> None:
            t0 = time.perf_counter()
            with http.stream("GET", "/console/overview") as r:
                first_byte.append(time.perf_counter() - t0)
                r.read()
                assert r.status_code == 200, r.status_code

        whole = _timed(reps, overview)
        # The first overview after the start counts the completed hours and the week's pattern (then cached): reported apart.
        out["overview"] = {"ttfb": _stats(first_byte[1:]), "complete": _stats(whole), "first_after_start_ms": round(first_overview * 1000, 1)}
        out["overview_browser"] = _browser(server.url, http.cookies["__Host-dicomguard-console"], reps)
        out["search"] = {}
        for name, fields in SEARCHES.items():
            def search(fields: dict[str, str] = fields) -> None:
                r = http.post("/console/audit", data={"csrf": csrf, **fields}, headers={"Origin": server.url})
                assert r.status_code == 200 and 'id="audit-results"' in r.text, r.text[-300:]
            out["search"][name] = _stats(_timed(reps, search))
        out["search_service_user"] = _stats(_timed(reps, lambda: archive.operator.audit.search(
            AuditFilter(user=TARGET, limit=200, newest_first=True))))
        worst_search = max(v["median_ms"] for v in out["search"].values())
        out["targets"] = {"overview_ttfb_lt_300ms": out["overview"]["ttfb"]["median_ms"] < 300, "search_lt_1s": worst_search < 1000}
        http.close()
    finally:
        stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--postgresql", action="store_true", help="also on the PostgreSQL server at 127.0.0.1:5432")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / f"console-{dt.date.today()}.json"
    results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(), "cores": os.cpu_count(), "reps": args.reps, "backends": {}}
    for backend in ["sqlite"] + (["postgresql"] if args.postgresql else []):
        results["backends"][backend] = run_backend(backend, args.events, args.reps)
        print(backend, json.dumps(results["backends"][backend]), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
