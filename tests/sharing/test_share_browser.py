"""A real browser (Playwright driving Debian's chromium, nothing downloaded) opens a share link end to end.

The recipient opens the link, enters the PIN, sees the study's images rendered, and
downloads the ZIP, whose files are byte-identical to the archive's; the de-identified
variant's files pass the de-identification checks. The page runs no script, loads
nothing from another origin and violates no Content-Security-Policy.
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import pydicom
import pytest

from tests.sharing.conftest import Shared


def _open(browser, shared: Shared, created):  # type: ignore[no-untyped-def]
    context = browser.new_context(ignore_https_errors=True, accept_downloads=True)
    page = context.new_page()
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.goto(f"{shared.server.url}/s/{created.token}")
    page.fill("#pin", created.pin)
    page.click("button[type=submit]")
    page.wait_for_url("**/s/view")
    _wait_for_images(page)
    return context, page, requests, problems


def _wait_for_images(page, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Every frame on the page loaded and decoded (polled from here: the page's CSP forbids the eval of wait_for_function)."""
    deadline = time.monotonic() + timeout_s
    check = "() => Array.from(document.querySelectorAll('img.frame')).every(i => i.complete && i.naturalWidth > 0)"
    while not page.evaluate(check):
        assert time.monotonic() < deadline, "the rendered frames did not load"
        time.sleep(0.05)


def _zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert "DICOMDIR" in z.namelist()
        return {str(pydicom.dcmread(io.BytesIO(z.read(n))).SOPInstanceUID): z.read(n) for n in z.namelist() if n != "DICOMDIR"}


def test_a_recipient_opens_the_link_sees_the_images_and_downloads_the_study(browser, shared: Shared, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    created = shared.archive.operator.shares.create(shared.alice_study, recipient="Dr. B, second opinion", recipient_kind="internal",
                                                    download=True)
    context, page, requests, problems = _open(browser, shared, created)
    frames = page.eval_on_selector_all("img.frame", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(frames) == 6 and all(w == 32 for w in frames)
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "study.zip"
    info.value.save_as(saved)
    members = _zip_members(saved.read_bytes())
    alice = {u: d for u, d in shared.objects.items() if pydicom.dcmread(io.BytesIO(d)).StudyInstanceUID == shared.alice_study}
    assert members == alice
    assert all(url.startswith(shared.server.url) for url in requests), [u for u in requests if not u.startswith(shared.server.url)]
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    # The session cookie is not readable by scripts and is sent to this origin only.
    cookies = context.cookies()
    assert [(c["httpOnly"], c["secure"], c["sameSite"]) for c in cookies] == [(True, True, "Strict")]
    assert page.evaluate("document.cookie") == ""
    context.close()


def test_a_deidentified_link_downloads_only_clean_copies(browser, shared: Shared, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    created = shared.archive.operator.shares.create(shared.alice_study, recipient="AI vendor, validation set", recipient_kind="research",
                                                    download=True)
    assert created.deidentified_by_policy
    context, page, _, _ = _open(browser, shared, created)
    assert "de-identified" in page.inner_text("dl.study")
    assert "ZEBRAFINCH" not in page.content()
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "copy.zip"
    info.value.save_as(saved)
    members = _zip_members(saved.read_bytes())
    assert len(members) == 6 and not set(members) & set(shared.objects)  # new UIDs: nothing of the original
    for data in members.values():
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.PatientIdentityRemoved == "YES" and ds.StudyInstanceUID == created.served_study_uid
        assert b"ZEBRAFINCH" not in data and b"PIDQX7731ALPHA" not in data and b"Quixotic" not in data
    context.close()


@pytest.mark.slow
def test_the_recipient_opens_the_study_in_the_ohif_viewer_with_the_share_session(browser, shared: Shared) -> None:  # type: ignore[no-untyped-def]
    """The viewer (when installed) reads through the recipient's cookie: only the shared study, every request same-origin."""
    from dicomguard.web.viewer import default_viewer_dir

    if default_viewer_dir() is None:
        if os.environ.get("CI"):
            pytest.fail("the OHIF viewer is not installed (scripts/test.sh runs scripts/install-viewer.sh)")
        pytest.skip("the OHIF viewer is not installed (scripts/install-viewer.sh)")
    created = shared.archive.operator.shares.create(shared.alice_study, recipient="Dr. B", recipient_kind="internal")
    context, page, requests, _ = _open(browser, shared, created)
    dicomweb: list[tuple[str, int]] = []
    page.on("response", lambda r: dicomweb.append((r.url, r.status)) if "/dicomweb/" in r.url else None)
    with page.expect_response(lambda r: "/metadata" in r.url and r.status == 200, timeout=120_000):
        page.click("#open-viewer")
    assert all(url.startswith(shared.server.url) for url in requests)
    assert dicomweb and all(status in (200, 204) for _, status in dicomweb), dicomweb
    assert all(shared.bob_study not in url for url, _ in dicomweb)
    context.close()
