"""Share-link benchmark: ``share create`` to the recipient's first rendered frame in a real browser, and ZIP download speed.

Workloads (seeded): a 500-instance CT study (512x512, 16-bit, random pixels: 0.5 MB each, ~263 MB) and one
55 MB echo cine (US multi-frame, RGB 800x600, 38 frames), stored untimed in a fresh archive served over HTTPS on
loopback (``serve_https``, the production listener).

Measured per repetition, in one run:

* ``create_s``: ``shares.create`` (decided, recorded, token and PIN made) for the CT study.
* ``first_frame_s``: Debian's chromium (Playwright, headless) submits the PIN and waits until the first rendered
  frame on the study page is decoded (``naturalWidth > 0``). Target: < 2 s after the PIN.
* ``zip_mb_s``: the recipient's ``GET /s/download`` (stored ZIP with a DICOMDIR) read to the end by curl (its own
  process), MB/s of response bytes. Target: >= 100 MB/s on loopback.
* anchor ``wado_mb_s``: the same study by WADO-RS (``GET /dicomweb/studies/{uid}``, multipart/related) with a bearer
  token on the same server in the same run: what the archive's plain retrieval costs; the ratio zip/wado shows what
  packaging as media costs.

Usage: ``python bench/share.py [--quick] [--reps N] [--out FILE]`` (``--quick``: 50 CT instances, 2 reps).
Results: ``bench/results/share-<date>.json`` (medians, min and max of every measure, ratios).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DICOMGUARD_UNSAFE_TEST_PASSWORD_HASH", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from dicomguard.app.archive import Archive  # noqa: E402
from dicomguard.app.home import init_home  # noqa: E402
from dicomguard.core.keyring import PURPOSE_IDENTITY  # noqa: E402
from dicomguard.identity.tokens import create_token  # noqa: E402
from dicomguard.identity.users import create_user  # noqa: E402
from dicomguard.index.db import write_session  # noqa: E402
from dicomguard.pki.store import CA_FILE, TLS_DIR  # noqa: E402
from dicomguard.web.auth import SHARE_COOKIE  # noqa: E402
from dicomguard.web.server import serve_https  # noqa: E402
from tests.dicom_factory import ALICE, BOB, _base, to_bytes  # noqa: E402

PASSPHRASE = "benchmark passphrase, throwaway archive"
CHROMIUM = "/usr/bin/chromium"


def ct_study(n: int, seed: int = 3) -> list[bytes]:
    rng = np.random.default_rng(seed)
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(n):
        ds = _base(ALICE, "1.2.840.10008.5.1.4.1.1.2", "CT", study, series)
        ds.InstanceNumber = i + 1
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 1, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = rng.integers(-1000, 3000, (512, 512), dtype=np.int16).tobytes()
        out.append(to_bytes(ds))
    return out


def echo_cine(frames: int = 38, seed: int = 4) -> bytes:
    rng = np.random.default_rng(seed)
    ds = _base(BOB, "1.2.840.10008.5.1.4.1.1.3.1", "US", generate_uid(), generate_uid())
    ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = 600, 800
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = rng.integers(0, 255, (frames, 600, 800, 3), dtype=np.uint8).tobytes()
    return to_bytes(ds)


def curl_mb_s(url: str, ca: str, headers: dict[str, str]) -> float:
    """Download ``url`` with curl (to /dev/null) and return MB/s of the response body (MB = 10^6 bytes)."""
    argv = ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", "--cacert", ca]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    size, seconds = subprocess.run([*argv, url], check=True, capture_output=True, text=True).stdout.split()
    return int(size) / 1e6 / float(seconds)


def summary(values: list[float]) -> dict[str, Any]:
    return {"runs": values, "median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    reps = args.reps or (2 if args.quick else 5)
    n_ct = 50 if args.quick else 500
    out = args.out or ROOT / "bench" / "results" / f"share-{dt.date.today()}{'-quick' if args.quick else ''}.json"
    work = Path(tempfile.mkdtemp(prefix="dg-share-bench-"))
    home = work / "home"
    init_home(home, PASSPHRASE, "admin")
    archive = Archive.open(home, PASSPHRASE)
    ct, cine = ct_study(n_ct), echo_cine()
    for outcome in archive.operator.store.ingest_many([(str(i), (lambda d=d: d)) for i, d in enumerate([*ct, cine])]):
        assert outcome.error is None, outcome.error
    import pydicom

    studies = {"ct": str(pydicom.dcmread(__import__("io").BytesIO(ct[0])).StudyInstanceUID),
               "echo": str(pydicom.dcmread(__import__("io").BytesIO(cine)).StudyInstanceUID)}
    sizes = {"ct": sum(map(len, ct)), "echo": len(cine)}
    with write_session(archive.ctx.engine) as s:
        create_user(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), "bench.rad", "radiologist", department="RADIOLOGY")
        token = create_token(s, "bench.rad", dt.timedelta(hours=4))
    port = 18443
    ready, stop = threading.Event(), threading.Event()
    threading.Thread(target=serve_https, args=(archive, "127.0.0.1", port), kwargs={"ready": ready, "stop": stop}, daemon=True).start()
    assert ready.wait(30)
    url = f"https://127.0.0.1:{port}"
    ca = str(home / TLS_DIR / CA_FILE)
    verify = ssl.create_default_context(cafile=ca)
    results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(), "quick": args.quick, "reps": reps, "cores": os.cpu_count(),
                               "ct_instances": n_ct, "bytes": sizes}
    create_s, first_frame_s = [], []
    zip_rates: dict[str, list[float]] = {"ct": [], "echo": []}
    wado_rates: dict[str, list[float]] = {"ct": [], "echo": []}
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        for _ in range(reps):
            t0 = time.perf_counter()
            created = archive.operator.shares.create(studies["ct"], recipient="bench", recipient_kind="internal", download=True)
            create_s.append(time.perf_counter() - t0)
            context = browser.new_context(ignore_https_errors=True)
            page = context.new_page()
            page.goto(f"{url}/s/{created.token}")
            page.fill("#pin", created.pin)
            t0 = time.perf_counter()
            page.click("button[type=submit]")
            while not page.evaluate("() => { const i = document.querySelector('img.frame'); return !!i && i.complete && i.naturalWidth > 0; }"):
                time.sleep(0.01)
            first_frame_s.append(time.perf_counter() - t0)
            context.close()
            for kind in ("ct", "echo"):
                share = archive.operator.shares.create(studies[kind], recipient="bench", recipient_kind="internal", download=True)
                with httpx.Client(base_url=url, verify=verify, timeout=300, trust_env=False) as http:
                    opened = http.post(f"/s/{share.token}", data={"pin": share.pin}, headers={"Origin": url})
                    assert opened.status_code == 303, opened.text
                    cookie = f"{SHARE_COOKIE}={opened.cookies[SHARE_COOKIE]}"
                # The client is curl in its own process: the server keeps this process's interpreter to itself.
                zip_rates[kind].append(curl_mb_s(f"{url}/s/download", ca, {"Cookie": cookie}))
                wado_rates[kind].append(curl_mb_s(f"{url}/dicomweb/studies/{studies[kind]}", ca, {
                    "Authorization": f"Bearer {token}", "Accept": 'multipart/related; type="application/dicom"'}))
        browser.close()
    stop.set()
    results["create_s"] = summary(create_s)
    results["first_frame_after_pin_s"] = summary(first_frame_s)
    for kind in ("ct", "echo"):
        results[f"zip_{kind}_mb_s"] = summary(zip_rates[kind])
        results[f"wado_{kind}_mb_s"] = summary(wado_rates[kind])
        results[f"ratio_zip_to_wado_{kind}"] = statistics.median(zip_rates[kind]) / statistics.median(wado_rates[kind])
    results["targets"] = {"first_frame_after_pin_s < 2": results["first_frame_after_pin_s"]["median"] < 2,
                          "zip_ct_mb_s >= 100": results["zip_ct_mb_s"]["median"] >= 100,
                          "zip_echo_mb_s >= 100": results["zip_echo_mb_s"]["median"] >= 100}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: (v["median"], v["min"], v["max"]) if isinstance(v, dict) and "median" in v else v
                      for k, v in results.items() if k not in ("bytes",)}, indent=1))
    archive.close()


if __name__ == "__main__":
    main()
