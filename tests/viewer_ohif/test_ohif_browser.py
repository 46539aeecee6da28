"""OHIF in a real browser against the archive: the study's image is rendered, nothing leaves the origin, the CSP holds.

Headless Debian Chromium loads ``/viewer?StudyInstanceUIDs=<uid>`` from the
archive's HTTPS server: an uncompressed CT as a stack and in MPR (volume
rendering), and a JPEG 2000 MR (decoded by OHIF's WebAssembly codec in a
worker, which exercises the worker policy). The test records every request the
page and its workers make and every Content-Security-Policy violation (a
``report-uri`` added to the served policies by the test, which also receives
the workers' violations; the page's ``securitypolicyviolation`` events; the
console), and waits until the viewport's canvas shows an image (many distinct
colours).
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.conftest import pydicom_test_file
from tests.dicom_factory import ALICE, DEPARTMENT, ct_series, dataset_of, to_bytes
from tests.viewer_ohif.conftest import sign_in_as

pytestmark = pytest.mark.slow

FIRST_IMAGE_TIMEOUT_S = 90

# Collects CSP violations from before the first script of every document.
_RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push({directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber});
});
"""

# Distinct colours in the first viewport's canvas (0: absent; 1 or 2: blank or uniform).
_CANVAS_COLOURS = """
() => {
  const canvas = document.querySelector('.cornerstone-viewport-element canvas, canvas.cornerstone-canvas');
  if (!canvas || !canvas.width || !canvas.height) return 0;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  if (!ctx) return 0;
  const {data} = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const colours = new Set();
  for (let i = 0; i < data.length; i += 4) colours.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  return colours.size;
}
"""
RENDERED_COLOURS = 32
"""A grey-level image (noise CT, MR) shows far more; a blank, uniform or error viewport at most a handful."""

# Headless Chromium has no GPU here: WebGL on the CPU (SwiftShader), which OHIF's renderer accepts.
CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


@dataclass
class ViewerRun:
    origin: str
    requests: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    console: list[str] = field(default_factory=list)
    violations: list[dict] = field(default_factory=list)
    colours: int = 0
    first_image_s: float = 0.0

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if not (u.startswith(self.origin + "/") or u.startswith(("data:", "blob:")))]

    def csp_console(self) -> list[str]:
        return [c for c in self.console if "Content Security Policy" in c or "Content-Security-Policy" in c]

    def dicomweb(self) -> dict[str, int]:
        return {urlsplit(u).path: s for u, s in self.statuses.items() if urlsplit(u).path.startswith("/dicomweb/")}


def open_in_viewer(chromium: Path, origin: str, queries: list[str], screenshot: str | None = None) -> list[ViewerRun]:
    """Open ``/viewer?<query>`` for each query in a fresh browser context (empty cache); one run per query."""
    from playwright.sync_api import sync_playwright

    runs = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            for i, query in enumerate(queries):
                run = ViewerRun(origin)
                # The archive's CA is self-signed for the test: certificate errors are ignored, nothing else.
                context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
                context.add_init_script(_RECORD_VIOLATIONS)
                context.on("request", lambda r, run=run: run.requests.append(r.url))
                context.on("response", lambda r, run=run: run.statuses.__setitem__(r.url, r.status))
                page = context.new_page()
                page.on("console", lambda m, run=run: run.console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e, run=run: run.console.append(f"pageerror: {e}"))
                started = time.monotonic()
                page.goto(f"{origin}/viewer?{query}", wait_until="domcontentloaded")
                while time.monotonic() < started + FIRST_IMAGE_TIMEOUT_S:
                    run.colours = page.evaluate(_CANVAS_COLOURS)
                    if run.colours >= RENDERED_COLOURS:
                        break
                    page.wait_for_timeout(100)
                run.first_image_s = time.monotonic() - started
                page.wait_for_timeout(1500)  # late requests (prefetch, thumbnails) and late reports
                run.violations = page.evaluate("window.__cspViolations")
                if screenshot:
                    page.screenshot(path=screenshot.replace(".png", f"-{i}.png"))
                context.close()
                runs.append(run)
        finally:
            browser.close()
    return runs


def _ct_volume(slices: int = 20, size: int = 128) -> list[bytes]:
    """A generated CT series with the geometry a volume (MPR) needs: orientation, spacing, frame of reference."""
    frame_of_reference = generate_uid()
    out = []
    for data in ct_series(ALICE, n=slices, size=size):
        ds = dataset_of(data)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1, 1]
        ds.SliceThickness = 1
        ds.FrameOfReferenceUID = frame_of_reference
        out.append(to_bytes(ds))
    return out


def _jpeg2000_mr() -> bytes:
    """pydicom's bundled 64x64 JPEG 2000 lossless MR, placed in the generated studies' department."""
    ds = dcmread(pydicom_test_file("MR_small_jp2klossless.dcm"))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    ds.InstitutionalDepartmentName = DEPARTMENT
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # the viewer does not depend on the index backend
def test_ohif_renders_studies_from_the_archive_only(viewer_web, chromium: Path) -> None:
    web, app = viewer_web.web, viewer_web.app
    ct = _ct_volume()
    mr = _jpeg2000_mr()
    for d in [*ct, mr]:
        web.archive.operator.store.ingest(d)
    sign_in_as(app, web.token("dr.rita", "radiologist"))
    ct_ds, mr_ds = dataset_of(ct[0]), dataset_of(mr)
    cases = [  # (label, dataset, query)
        ("CT stack, uncompressed", ct_ds, f"StudyInstanceUIDs={ct_ds.StudyInstanceUID}"),
        ("CT MPR (volume rendering)", ct_ds, f"StudyInstanceUIDs={ct_ds.StudyInstanceUID}&hangingprotocolId=mpr"),
        ("MR stack, JPEG 2000 (WebAssembly codec in a worker)", mr_ds, f"StudyInstanceUIDs={mr_ds.StudyInstanceUID}"),
    ]

    runs = open_in_viewer(chromium, web.url, [q for _, _, q in cases], screenshot=os.environ.get("DICOMGUARD_VIEWER_SCREENSHOT"))

    # Every violation, in the page or in a worker, reaches the report endpoint the test added to the policy.
    assert viewer_web.csp_reports == [], viewer_web.csp_reports
    for (label, ds, _), run in zip(cases, runs, strict=True):
        timers = "; ".join(c.removeprefix("timeEnd: ") for c in run.console if c.startswith("timeEnd: "))  # OHIF's own
        print(f"OHIF {label}: first image after {run.first_image_s:.2f} s, {len(run.requests)} requests ({timers})")
        log = "\n".join(run.console[-60:])
        assert run.colours >= RENDERED_COLOURS, f"{label}: no image after {run.first_image_s:.0f} s; console:\n{log}"
        assert run.foreign_requests() == [], f"{label}: requests left the origin"
        assert run.violations == [], f"{label}: CSP violations"
        assert run.csp_console() == [], f"{label}: CSP messages in the console"
        dicomweb = run.dicomweb()
        assert dicomweb.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata") == 200, dicomweb
        assert any("/frames/" in path for path in dicomweb), dicomweb
        assert set(dicomweb.values()) == {200}, dicomweb
        # Outside /dicomweb only the viewer's own files were requested, and all of them were served.
        others = {urlsplit(u).path: s for u, s in run.statuses.items() if not urlsplit(u).path.startswith("/dicomweb/")}
        assert others and all(s in (200, 304) for s in others.values()), others
