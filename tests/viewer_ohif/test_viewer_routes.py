"""The viewer's routes without a browser: generated configuration, served set, traversal, headers, authentication.

Most tests use a small stand-in for OHIF's build (``fake_dist``) so they run
without the installed viewer; the last ones mount the real installation on the
archive's application (skipped, or failed under CI, when it is not installed).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from dicomguard.errors import ConfigurationError
from dicomguard.web.auth import authenticated_services
from dicomguard.web.media import Offer, choose_multipart, parse_accept
from dicomguard.web.viewer import (
    CONTENT_TYPES,
    NEVER_SERVED,
    app_config_js,
    content_security_policy,
    default_viewer_dir,
    viewer_router,
)

INLINE_1 = 'console.time("scriptToView"),window.PUBLIC_URL="/"'
INLINE_2 = "function browserImportFunction(n){return import(n)}window.PUBLIC_URL=\"/\""
HASHED_JS = "app.bundle.0123456789abcdef.js"


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@pytest.fixture
def fake_dist(tmp_path: Path) -> Path:
    """The shape of OHIF's dist/: entry page with inline scripts, hashed and plain files, folders, and things never served."""
    root = tmp_path / "viewer"
    (root / "assets" / "images").mkdir(parents=True)
    (root / "customizations" / "tools").mkdir(parents=True)
    (root / "index.html").write_text(
        '<!doctype html><html><head><script>' + INLINE_1 + '</script><link rel="manifest" href="/manifest.json">'
        '<script src="/app-config.js"></script><script>' + INLINE_2 + '</script>'
        f'<script defer src="/{HASHED_JS}"></script></head><body><div id="root"></div></body></html>'
    )
    (root / HASHED_JS).write_text("console.log('app');" * 200)
    (root / f"{HASHED_JS}.gz").write_bytes(gzip.compress((root / HASHED_JS).read_bytes()))
    (root / "app.bundle.css").write_text("body{color:#fff}")
    (root / "0ddf166f7a343eda.wasm").write_bytes(b"\0asm\1\0\0\0")
    (root / "manifest.json").write_text("{}")
    (root / "assets" / "favicon.ico").write_bytes(b"\0\0\1\0")
    (root / "assets" / "images" / "CT-Bone.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "app-config.js").write_text("window.config={dataSources:[{sourceName:'evil',configuration:{qidoRoot:'https://evil.example'}}]}")
    (root / "sw.js").write_text("importScripts('https://cdn.example/workbox.js')")
    (root / "silent-refresh.html").write_text("<script>parent.postMessage(location.href,'*')</script>")
    (root / "customizations" / "tools" / "ctPresets.jsonc").write_text("{}")
    (root / f"{HASHED_JS}.map").write_text("{}")
    (root / ".dicomguard-viewer").write_text("stamp")
    (root / ".hidden.js").write_text("hidden")
    (root / "README.md").write_text("not served: unknown suffix")
    (root / "weird name.js").write_text("not served: a name the path guard would refuse")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.js").write_text("SECRET-OUTSIDE")
    (root / "link.js").symlink_to(outside / "secret.js")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    return root


def _client(viewer_dir: Path | None, authenticate=lambda: None) -> TestClient:  # type: ignore[no-untyped-def]
    app = FastAPI()
    app.include_router(viewer_router(viewer_dir, authenticate=authenticate))
    return TestClient(app)


def _raw_get(app: FastAPI, raw_path: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, bytes]:
    """One GET through the ASGI interface with the request target exactly as given (HTTP clients normalise '..' away)."""
    path = raw_path.split(b"?", 1)[0]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "https",
        # As uvicorn: the path percent-decoded, raw_path as sent.
        "path": unquote(path.decode("latin-1")), "raw_path": path, "root_path": "", "query_string": b"",
        "headers": [(b"host", b"testserver"), *(headers or [])], "client": ("127.0.0.1", 5000), "server": ("testserver", 443),
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


def _config_via_node(origin: str) -> dict:
    """Run the generated app-config.js in node with ``window.location.origin = origin``; return ``window.config`` as JSON."""
    node = shutil.which("node")
    if node is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("node is not installed (scripts/install-viewer.sh needs it too)")
    script = (
        "const window = {location: {origin: process.argv[1]}};\n"
        + app_config_js()
        + "\nprocess.stdout.write(JSON.stringify(window.config));\n"
    )
    out = subprocess.run([node, "-e", script, origin], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


# -- the generated configuration -------------------------------------------------------------


def test_generated_config_has_only_the_archive_dicomweb_data_source() -> None:
    config = _config_via_node("https://archive.example:8443")
    (source,) = config["dataSources"]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    assert source["sourceName"] == config["defaultDataSourceName"] == "dicomweb"
    settings = source["configuration"]
    for root in ("qidoRoot", "wadoRoot", "wadoUriRoot"):
        assert settings[root] == "https://archive.example:8443/dicomweb"  # the page's own origin, nothing configured
    assert settings["qidoSupportsIncludeField"] is True
    assert settings["imageRendering"] == settings["thumbnailRendering"] == "wadors"
    assert settings["supportsWildcard"] is False
    assert settings["dicomUploadEnabled"] is False
    assert "requestOptions" not in settings  # no token configuration: same-origin credentials only
    assert config["showStudyList"] is False
    assert config["investigationalUseDialog"] == {"option": "never"}
    # Off: dynamic configuration, URL customizations, OIDC, other data sources.
    for key in ("dangerouslyUseDynamicConfig", "customizationUrlPrefixes", "oidc", "whiteLabeling"):
        assert key not in config
    text = app_config_js()
    for word in ("dicomlocal", "dicomjson", "dicomwebproxy", "http:", "https:", "//", "url="):
        assert word not in text.split("\n", 1)[1], word  # below the comment line: no URL, no other source


def test_generated_config_frames_accept_header_names_what_the_archive_serves() -> None:
    (source,) = _config_via_node("https://a.example")["dataSources"]
    (accept,) = source["configuration"]["acceptHeader"]
    ranges = parse_accept(accept)
    for media_type, syntax in [("application/octet-stream", "1.2.840.10008.1.2.1"), ("image/jp2", "1.2.840.10008.1.2.4.90"),
                               ("image/jls", "1.2.840.10008.1.2.4.80"), ("image/jpeg", "1.2.840.10008.1.2.4.70"),
                               ("image/dicom-rle", "1.2.840.10008.1.2.5"), ("image/jphc", "1.2.840.10008.1.2.4.201")]:
        chosen = choose_multipart(ranges, [Offer(media_type, syntax)])
        assert chosen is not None and chosen[0].media_type == media_type


def test_package_config_is_never_served(fake_dist: Path) -> None:
    client = _client(fake_dist)
    r = client.get("/app-config.js")
    assert r.status_code == 200
    assert "evil" not in r.text and r.text == app_config_js()
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"].startswith("text/javascript")


# -- what is served, and how -----------------------------------------------------------------


def test_entry_page_headers_and_inline_script_hashes(fake_dist: Path) -> None:
    r = _client(fake_dist).get("/viewer", params={"StudyInstanceUIDs": "1.2.3"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["cross-origin-opener-policy"] == "same-origin"
    csp = r.headers["content-security-policy"]
    assert csp == content_security_policy((_sha256(INLINE_1), _sha256(INLINE_2)))
    assert "'unsafe-eval'" not in csp and "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    assert "connect-src 'self';" in csp and "frame-ancestors 'none'" in csp
    assert 'rel="manifest"' not in r.text and f"/{HASHED_JS}" in r.text


def test_static_files_types_caching_and_compression(fake_dist: Path) -> None:
    client = _client(fake_dist)
    r = client.get(f"/{HASHED_JS}", headers={"accept-encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.content == (fake_dist / HASHED_JS).read_bytes()  # httpx decodes
    assert r.headers["content-type"] == CONTENT_TYPES[".js"]
    assert r.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert "sec-fetch-dest" in r.headers["vary"].lower()
    plain = client.get(f"/{HASHED_JS}", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == (fake_dist / HASHED_JS).read_bytes()
    assert client.get(f"/{HASHED_JS}", headers={"accept-encoding": "gzip;q=0"}).headers.get("content-encoding") is None

    css = client.get("/app.bundle.css")
    assert css.headers["cache-control"] == "private, no-cache"  # no content hash in the name: revalidate
    again = client.get("/app.bundle.css", headers={"if-none-match": css.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/0ddf166f7a343eda.wasm").headers["content-type"] == "application/wasm"
    assert client.get("/assets/images/CT-Bone.png").headers["content-type"] == "image/png"
    assert client.get("/assets/favicon.ico").status_code == 200
    assert client.get("/manifest.json").status_code == 200


def test_worker_scripts_alone_may_eval_and_no_service_worker(fake_dist: Path) -> None:
    client = _client(fake_dist)
    as_worker = client.get(f"/{HASHED_JS}", headers={"sec-fetch-dest": "worker"})
    assert as_worker.status_code == 200
    assert as_worker.headers["content-security-policy"] == content_security_policy(worker=True)
    assert "'unsafe-eval'" in as_worker.headers["content-security-policy"]
    as_script = client.get(f"/{HASHED_JS}", headers={"sec-fetch-dest": "script"})
    assert "'unsafe-eval'" not in as_script.headers["content-security-policy"]
    assert as_script.headers["etag"] != as_worker.headers["etag"]
    # A CSS or image file fetched "as a worker" gets no allowance.
    assert "'unsafe-eval'" not in client.get("/app.bundle.css", headers={"sec-fetch-dest": "worker"}).headers["content-security-policy"]
    for headers in ({"sec-fetch-dest": "serviceworker"}, {"service-worker": "script"}, {"sec-fetch-dest": "sharedworker"}):
        assert client.get(f"/{HASHED_JS}", headers=headers).status_code == 404


@pytest.mark.parametrize("path", [
    "/sw.js", "/silent-refresh.html", "/index.html", "/app-config.js.orig", f"/{HASHED_JS}.map", f"/{HASHED_JS}.gz",
    "/.hidden.js", "/.dicomguard-viewer", "/README.md", "/weird%20name.js", "/link.js", "/linked/secret.js",
    "/customizations/tools/ctPresets.jsonc", "/assets/", "/assets", "/assets/images", "/assets/images/", "/assets/nope.png",
    "/viewer/index.html", "/nope.js",
])
def test_unknown_and_never_served_files_are_404(fake_dist: Path, path: str) -> None:
    r = _client(fake_dist).get(path)
    assert r.status_code == 404, path
    assert b"SECRET-OUTSIDE" not in r.content


@pytest.mark.parametrize("raw", [
    b"/assets/../index.html", b"/assets/../../outside/secret.js", b"/assets/images/../../../../../etc/passwd",
    b"/assets/..%2f..%2foutside%2fsecret.js", b"/assets/%2e%2e/%2e%2e/outside/secret.js", b"/assets//etc/passwd",
    b"/assets/images/..", b"/assets/./favicon.ico", b"/linked/secret.js", b"/assets/..\\..\\outside\\secret.js",
    b"/assets/%00", b"/assets/favicon.ico%00.png",
])
def test_traversal_under_viewer_routes_is_404(fake_dist: Path, raw: bytes) -> None:
    app = FastAPI()
    app.include_router(viewer_router(fake_dist, authenticate=lambda: None))
    status, body = _raw_get(app, raw)
    assert status == 404, raw
    assert b"SECRET-OUTSIDE" not in body and b"root:" not in body


def test_every_route_needs_the_authentication(fake_dist: Path) -> None:
    def refuse() -> None:
        raise HTTPException(401, "no")

    client = _client(fake_dist, authenticate=refuse)
    for path in ("/viewer", "/app-config.js", f"/{HASHED_JS}", "/assets/favicon.ico", "/assets/nope.png"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert b"console.log" not in r.content and b"window.config" not in r.content


def test_reserved_names_and_missing_entry_are_refused(tmp_path: Path, fake_dist: Path) -> None:
    for reserved in ("dicomweb", "healthz", "shares", "s"):
        folder = fake_dist / reserved
        folder.mkdir()
        (folder / "x.js").write_text("x")
        with pytest.raises(ConfigurationError, match=reserved):
            viewer_router(fake_dist)
        shutil.rmtree(folder)
    (fake_dist / "metrics.js").write_text("fine: not the name metrics")
    viewer_router(fake_dist)
    with pytest.raises(ConfigurationError, match="index.html"):
        viewer_router(tmp_path / "empty")
    assert "index.html" in NEVER_SERVED and "app-config.js" in NEVER_SERVED


def test_not_installed_viewer_answers_404(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DICOMGUARD_VIEWER_DIR", str(tmp_path / "nothing-here"))
    assert default_viewer_dir() is None
    r = _client(None).get("/viewer")
    assert r.status_code == 404 and "not installed" in r.text


# -- the real installation on the archive's application -----------------------------------------


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_installed_viewer_on_the_archive_app(archive, viewer_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from dicomguard.web.app import create_app
    from tests.viewer_ohif.conftest import app_with_viewer, route_paths

    viewer_paths = route_paths(viewer_router(viewer_dir).routes)
    archive_paths = route_paths(create_app(archive).routes) - viewer_paths  # once the composition root mounts it
    # No viewer route shares a first path segment with an archive route (nor with the ones planned).
    first = lambda path: path.split("/")[1]  # noqa: E731
    assert not {first(p) for p in viewer_paths} & ({first(p) for p in archive_paths} | {"s", "shares"})

    app = app_with_viewer(archive, viewer_dir)
    client = TestClient(app, base_url="https://testserver")
    # Without credentials nothing of the viewer is served (the archive's own authentication).
    for path in ("/viewer", "/app-config.js", sorted(p for p in viewer_paths if p.endswith(".js"))[0]):
        assert client.get(path).status_code == 401, path

    app.dependency_overrides[authenticated_services] = lambda: None
    page = client.get("/viewer?StudyInstanceUIDs=1.2.3")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; script-src 'self' 'wasm-unsafe-eval' 'sha256-")
    assert page.headers["x-frame-options"] == "DENY" and "max-age" in page.headers["strict-transport-security"]
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["cache-control"] == "no-store"
    # Every file the entry page references is served from the installed set, under the same policy.
    references = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
    assert "/app-config.js" in references and any(r.startswith("/app.bundle.") for r in references)
    for ref in references:
        r = client.get(ref)
        assert r.status_code == 200, ref
        assert r.headers["content-security-policy"] == csp
    for path in ("/sw.js", "/google.js", "/silent-refresh.html", "/index.html", "/customizations/tools/ctPresets.jsonc"):
        assert client.get(path).status_code == 404, path
    # The archive's own routes still answer as before.
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").status_code == 200
    # Traversal through the whole stack: the path guard refuses first (400); the viewer never answers 200.
    for raw in (b"/assets/../app-config.js", b"/assets/%2e%2e/index.html", b"/assets/..%2f..%2fetc%2fpasswd"):
        status, _ = _raw_get(app, raw)
        assert status in (400, 404), raw
