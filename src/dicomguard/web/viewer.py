"""The OHIF viewer (the static app of ``@ohif/app``, installed by ``scripts/install-viewer.sh``) served by the archive.

A study opens at ``/viewer?StudyInstanceUIDs=<uid>``. Security properties:

1. Only this archive's data. The viewer's ``/app-config.js`` is generated here,
   never read from the package: one data source, OHIF's DICOMweb data source,
   whose QIDO, WADO-RS and WADO-URI roots are ``/dicomweb`` of the origin the
   page was loaded from (computed in the browser from ``location.origin``, so
   no host name is configured or reflected from a request). No local-files,
   DICOM JSON (``?url=``) or proxy data source exists, dynamic configuration
   (``?configUrl=``) and URL customizations (``?customization=``) stay off, there
   is no study list, no authentication configuration (the browser's same-origin
   credentials are the authentication) and no upload. The Content-Security-Policy
   (``connect-src 'self'``) makes the same promise in the browser: nothing is
   fetched from, and no script loaded from, another origin.
2. Only the installed app's files. The set of servable files is fixed when the
   router is built, from a walk of the viewer directory: regular files (no
   symbolic links, no hidden names), each resolved and checked to lie under the
   resolved root, with a suffix of :data:`CONTENT_TYPES` (each with a fixed
   media type, so ``nosniff`` holds). A request is answered from that set by
   exact lookup of its path: nothing else is read from disk, there is no
   directory listing, and no path (``..``, encoded or not) can reach a file
   outside it: an unknown path is 404. The package's own configuration, service
   worker, OIDC and Google pages, rewrite files and customization data are never
   served (see :data:`NEVER_SERVED`).
3. No clash with the archive's routes. Every route is an exact path (a file at
   the top level) or a prefix named after one of the app's folders: there is no
   catch-all, so routes the application adds before or after this router are
   not shadowed. A viewer whose top-level names collide with the archive's
   routes (:data:`RESERVED`) is refused when the router is built.
4. Behind the archive's authentication. Every viewer route depends on the
   authentication dependency (by default
   :func:`dicomguard.web.auth.authenticated_services`): a request that it
   refuses gets its 401 and no byte of the app.
5. Strict headers on every viewer response: the CSP of :func:`content_security_policy`
   (scripts only from this origin plus the SHA-256 of each inline script of the
   installed ``index.html``; WebAssembly compilation but no ``eval`` in the page;
   fetches, images, fonts, media and workers from this origin only; no plugins,
   frames, forms or ``<base>``; not frameable), ``Cross-Origin-Opener-Policy``
   and ``Cross-Origin-Resource-Policy: same-origin``. A dedicated worker's script
   (``Sec-Fetch-Dest: worker``) is answered with the same policy plus
   ``'unsafe-eval'``, which OHIF's image codecs need (Emscripten bindings compile
   their glue with ``new Function``): a worker is governed by its own script's
   CSP, so the allowance never reaches the page, whose DOM a worker cannot touch.
   No file is served as a service worker or shared worker script (404), so no
   script can take over the origin's requests or outlive the page. Styles may be
   inline (OHIF and its toast library inject ``<style>`` elements); with every
   fetch, image and font confined to this origin, injected CSS cannot send data
   elsewhere. The entry page and the generated configuration are ``no-store``;
   the app's files (public code, no patient data) may be cached privately: for a
   year when their name carries a content hash, revalidated (ETag) otherwise. The
   app's manifest link is removed from the entry page: browsers fetch manifests
   without credentials, which the authentication would refuse.

Files are served pre-compressed (``<name>.gz`` made by the install script) to
clients that accept gzip: the app is ~170 MB uncompressed. The served set is read
once; reinstalling the viewer needs a restart.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, Response

from dicomguard.errors import ConfigurationError
from dicomguard.web.auth import authenticated_services
from dicomguard.web.uids import DICOMWEB_PREFIX

VIEWER_PATH = "/viewer"
"""OHIF's route of its default (longitudinal) mode: the page a share link opens."""

CONFIG_PATH = "/app-config.js"
"""Where OHIF's ``index.html`` loads its configuration from (its PUBLIC_URL is ``/``)."""

VIEWER_DIR_ENV = "DICOMGUARD_VIEWER_DIR"

RESERVED = frozenset({
    "dicomweb", "auth", "admin", "healthz", "metrics", "openapi.json", "docs", "redoc",
    "s", "shares", "viewer", "index.html",
})
"""Top-level names the archive uses or will use: an installed viewer may not serve a file or folder so named."""

NEVER_SERVED = frozenset({
    "index.html",           # only through /viewer, with the headers and rewrite of this module
    "app-config.js",        # generated here
    "sw.js",                # a service worker at the origin's root scope (imports Workbox from a CDN)
    "google.js",            # a configuration for Google Cloud Healthcare
    "silent-refresh.html",  # OIDC page
    "oidc-client.min.js",
    "serve.json", "_headers", "_redirects",  # rewrite rules of other servers
    "customizations",       # ?customization= data files (the feature is off)
})
"""Top-level names of the package that are never served, whatever the install script left in place."""

CONTENT_TYPES: dict[str, str] = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".xml": "application/xml",
}
"""The suffixes served, with their media types; other files of the directory are not served."""

_HASHED_NAME = re.compile(r"(^|[.\-_])[0-9a-f]{16,}\.[a-z0-9]+$")
_INLINE_SCRIPT = re.compile(r"<script\b(?P<attrs>[^>]*)>(?P<body>.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
_MANIFEST_LINK = re.compile(r"<link\b[^>]*\brel=[\"']?manifest[\"']?[^>]*>", re.IGNORECASE)

FRAME_ACCEPT = ", ".join(
    f"multipart/related; type={media_type}; transfer-syntax=*"
    for media_type in ("application/octet-stream", '"image/jls"', '"image/jp2"', '"image/jphc"', '"image/jpeg"',
                       '"image/dicom-rle"')
)
"""Accept header of the viewer's frame requests (a single string: OHIF sets it as given)."""

IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"
NO_STORE = "no-store"


def default_viewer_dir() -> Path | None:
    """``$DICOMGUARD_VIEWER_DIR``, else the install script's default; None unless it holds an ``index.html``."""
    configured = os.environ.get(VIEWER_DIR_ENV)
    if configured:
        folder = Path(configured)
    else:
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        folder = Path(data) / "dicomguard" / "viewer"
    return folder if (folder / "index.html").is_file() else None


def app_config_js() -> str:
    """The viewer's whole configuration: this origin's DICOMweb as its only data source (no functions, no URLs)."""
    data_source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "dicomweb",
        "configuration": {
            "friendlyName": "dicomguard",
            "name": "dicomguard",
            "qidoRoot": "__ROOT__",
            "wadoRoot": "__ROOT__",
            "wadoUriRoot": "__ROOT__",
            "qidoSupportsIncludeField": True,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": False,
            "supportsReject": False,
            "supportsStow": False,
            "dicomUploadEnabled": False,
            "staticWado": False,
            "singlepart": False,
            "omitQuotationForMultipartRequest": True,
            # Frames as stored (the archive never transcodes): native ones as octet-stream, encapsulated ones in
            # their own media type (PS3.18 Table 8.7.3-5), for the syntaxes OHIF's image loader decodes.
            "acceptHeader": [FRAME_ACCEPT],
            "bulkDataURI": {"enabled": True},
        },
    }
    config: dict[str, Any] = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": False,
        "investigationalUseDialog": {"option": "never"},
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "maxNumberOfWebWorkers": 3,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 10},
        "showErrorDetails": "dev",
        "defaultDataSourceName": "dicomweb",
        "dataSources": [data_source],
    }
    body = json.dumps(config, indent=2).replace('"__ROOT__"', "root")
    return (
        "// Generated by dicomguard: this origin's DICOMweb is the viewer's only data source.\n"
        "(function () {\n"
        "  'use strict';\n"
        f"  var root = window.location.origin + {json.dumps(DICOMWEB_PREFIX)};\n"
        f"  window.config = {body};\n"
        "})();\n"
    )


def content_security_policy(script_hashes: tuple[str, ...] = (), *, worker: bool = False) -> str:
    """The viewer's CSP; ``script_hashes``: ``'sha256-...'`` sources of the entry page's inline scripts.

    ``worker``: the policy of a dedicated worker's script (a worker is governed by
    the CSP of its own script's response), which adds ``'unsafe-eval'``: OHIF's
    image codecs are Emscripten builds whose bindings (embind) compile their
    glue with ``new Function``. The page itself never gets ``'unsafe-eval'``.
    """
    script_src = " ".join(("'self'", "'wasm-unsafe-eval'", *(("'unsafe-eval'",) if worker else ()), *script_hashes))
    return "; ".join((
        "default-src 'none'",
        f"script-src {script_src}",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "worker-src 'self'",
        "media-src 'self'",
        "manifest-src 'none'",
        "object-src 'none'",
        "frame-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ))


def inline_script_hashes(html: str) -> tuple[str, ...]:
    """CSP hash sources (SHA-256, base64) of every inline ``<script>`` body of ``html``."""
    out = []
    for m in _INLINE_SCRIPT.finditer(html):
        if re.search(r"\bsrc\s*=", m.group("attrs"), re.IGNORECASE):
            continue
        digest = hashlib.sha256(m.group("body").encode("utf-8")).digest()
        out.append(f"'sha256-{base64.b64encode(digest).decode('ascii')}'")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class _Asset:
    path: Path
    media_type: str
    etag: str
    gzip: Path | None
    cache_control: str


def _walk(root: Path) -> dict[str, _Asset]:
    """URL path (``/a/b.js``) -> asset, for every servable file under ``root`` (see property 2)."""
    assets: dict[str, _Asset] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (here / d).is_symlink())
        for name in sorted(files):
            media_type = CONTENT_TYPES.get(os.path.splitext(name)[1].lower())
            if media_type is None or name.startswith("."):
                continue
            candidate = here / name
            if candidate.is_symlink() or not candidate.is_file():
                continue
            resolved = candidate.resolve()
            if not resolved.is_relative_to(root):
                continue
            relative = resolved.relative_to(root).as_posix()
            if relative.split("/", 1)[0] in NEVER_SERVED:
                continue
            if not re.fullmatch(r"[A-Za-z0-9._\-/]+", relative):
                continue  # nothing the path guard would refuse, nothing that needs escaping
            stat = resolved.stat()
            compressed = resolved.with_name(resolved.name + ".gz")
            gzip = compressed if compressed.is_file() and not compressed.is_symlink() else None
            assets["/" + relative] = _Asset(
                path=resolved,
                media_type=media_type,
                etag=f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"',
                gzip=gzip,
                cache_control=IMMUTABLE if _HASHED_NAME.search(name) else REVALIDATE,
            )
    return assets


def _accepts_gzip(request: Request) -> bool:
    """RFC 9110 12.5.3: ``gzip`` listed with a non-zero quality (``*`` is not taken as gzip)."""
    for item in request.headers.get("accept-encoding", "").split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding.lower() != "gzip":
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def _not_installed() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get(VIEWER_PATH)
    def viewer_missing() -> Response:
        raise HTTPException(404, "the viewer is not installed on this archive")

    return router


def viewer_router(
    viewer_dir: Path | None,
    *,
    authenticate: Callable[..., Any] = authenticated_services,
) -> APIRouter:
    """Routes of the viewer installed in ``viewer_dir`` (None: ``/viewer`` answers 404 "not installed").

    ``authenticate``: the FastAPI dependency every viewer route depends on (the
    archive's authentication). Raises :class:`ConfigurationError` if the folder
    holds no ``index.html`` or names a reserved top-level path.
    """
    if viewer_dir is None:
        return _not_installed()
    root = Path(viewer_dir).resolve()
    index_file = root / "index.html"
    if not index_file.is_file():
        raise ConfigurationError(f"no index.html in the viewer directory {root}")
    html = _MANIFEST_LINK.sub("", index_file.read_text(encoding="utf-8"))
    index_body = html.encode("utf-8")
    csp = content_security_policy(inline_script_hashes(html))
    config_body = app_config_js().encode("utf-8")
    assets = _walk(root)
    clashes = sorted({p.split("/", 2)[1] for p in assets} & RESERVED)
    if clashes:
        raise ConfigurationError(f"the viewer directory {root} would serve reserved paths: {', '.join(clashes)}")

    common = {
        "Content-Security-Policy": csp,
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    worker_csp = content_security_policy(worker=True)
    router = APIRouter(include_in_schema=False, dependencies=[Depends(authenticate)])

    @router.get(VIEWER_PATH)
    def viewer_index() -> Response:
        return Response(index_body, media_type="text/html; charset=utf-8", headers=common | {"Cache-Control": NO_STORE})

    @router.get(CONFIG_PATH)
    def viewer_config() -> Response:
        return Response(config_body, media_type="text/javascript; charset=utf-8", headers=common | {"Cache-Control": NO_STORE})

    def serve(request: Request, path: str) -> Response:
        asset = assets.get(path)
        destination = request.headers.get("sec-fetch-dest", "").lower()
        if asset is None or destination in ("serviceworker", "sharedworker") or "service-worker" in request.headers:
            raise HTTPException(404, "no such file")  # no service worker (nor shared worker) from the viewer's files
        as_worker = destination == "worker" and asset.media_type.startswith("text/javascript")
        compressed = asset.gzip if asset.gzip is not None and _accepts_gzip(request) else None
        etag = asset.etag[:-1] + ("-w" if as_worker else "") + ('-gz"' if compressed else '"')
        headers = common | {"Cache-Control": asset.cache_control, "ETag": etag, "Vary": "Accept-Encoding, Sec-Fetch-Dest"}
        if as_worker:
            headers["Content-Security-Policy"] = worker_csp
        if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
            return Response(status_code=304, headers=headers)
        if compressed is not None:
            headers["Content-Encoding"] = "gzip"
            return FileResponse(compressed, media_type=asset.media_type, headers=headers)
        return FileResponse(asset.path, media_type=asset.media_type, headers=headers)

    top_files = sorted(p for p in assets if p.count("/") == 1)
    top_folders = sorted({p.split("/", 2)[1] for p in assets if p.count("/") > 1})
    for path in top_files:
        router.add_api_route(path, _file_endpoint(serve, path), methods=["GET"], name=f"viewer-file:{path}")
    for folder in top_folders:
        router.add_api_route(f"/{folder}/{{rest:path}}", _folder_endpoint(serve, folder), methods=["GET"],
                             name=f"viewer-folder:{folder}")
    return router


def _file_endpoint(serve: Callable[[Request, str], Response], path: str) -> Callable[[Request], Response]:
    def endpoint(request: Request) -> Response:
        return serve(request, path)

    return endpoint


def _folder_endpoint(serve: Callable[[Request, str], Response], folder: str) -> Callable[[Request, str], Response]:
    def endpoint(request: Request, rest: str) -> Response:
        return serve(request, f"/{folder}/{rest}")

    return endpoint
