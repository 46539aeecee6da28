"""Hostile requests against the HTTPS DICOMweb service: authentication, authorization, limits, traversal, injection, TLS.

Each refusal is checked for its status *and* for what it must not do: store
something, leak something, or skip the AccessRefused event of the audit trail.
"""

from __future__ import annotations

import socket
import ssl
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from dicomguard.core.access import Action
from dicomguard.core.events import AccessRefused, IntegrityViolation
from dicomguard.core.query import IndexQuery
from dicomguard.identity.tokens import token_digest
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import ApiToken, Instance, User
from dicomguard.web.stow import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH,
    DUPLICATE_SOP_INSTANCE,
)
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of, to_bytes
from tests.web.conftest import revoke_one, start_server
from tests.web.multipart_util import encode


def _stored(archive) -> list[str]:
    return [i.sop_instance_uid for i in IndexQuery(archive.ctx).instances()]


def _raw_status(web, path: str, token: str | None = None) -> int:
    """Send a request line byte for byte (HTTP clients normalise '..' away; attackers do not)."""
    port = int(web.url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=web.ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while b"\r\n" not in data:
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.fixture
def stored_ct(web):
    data = ct_series(ALICE, n=2)
    ds = dataset_of(data[0])
    for d in data:
        web.archive.operator.store.ingest(d)
    return data, (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


# -- authentication --------------------------------------------------------------------


def test_missing_malformed_and_query_string_tokens_are_401(web, stored_ct) -> None:
    study = stored_ct[1][0]
    with web.http() as http:
        r = http.get("/dicomweb/studies")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="dicomguard"'
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        assert http.get("/dicomweb/studies", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
        token = web.token("dr.q", "radiologist")
        assert http.get("/dicomweb/studies", params={"access_token": token}).status_code == 401
        assert http.get(f"/dicomweb/studies/{study}", headers={"Authorization": "Bearer"}).status_code == 401


@pytest.mark.parametrize("attack", ["expired", "tampered", "revoked", "disabled-user", "truncated", "other-archive"])
def test_invalid_tokens_are_401(web, stored_ct, attack) -> None:
    token = web.token("dr.victim", "radiologist")
    engine = web.archive.ctx.engine
    if attack == "expired":
        with write_session(engine) as s:
            s.execute(update(ApiToken).where(ApiToken.token_sha256 == token_digest(token)).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    elif attack == "tampered":
        token = token[:-1] + ("A" if token[-1] != "A" else "B")
    elif attack == "revoked":
        assert revoke_one(engine, token)
    elif attack == "disabled-user":
        with write_session(engine) as s:
            s.execute(update(User).where(User.name == "dr.victim").values(disabled=True))
    elif attack == "truncated":
        token = token[:20]
    elif attack == "other-archive":
        token = "dgt_" + "A" * 43
    with web.http(token) as http:
        for path in ("/dicomweb/studies", f"/dicomweb/studies/{stored_ct[1][0]}", "/metrics"):
            r = http.get(path)
            assert r.status_code == 401, (attack, path)
            assert r.headers["www-authenticate"] == 'Bearer realm="dicomguard", error="invalid_token"'
            assert r.json() == {"error": "unauthorized", "detail": "a valid bearer token is required"}


def test_token_works_until_revoked_at_next_request(web, stored_ct) -> None:
    token = web.token("dr.live", "radiologist")
    with web.http(token) as http:
        assert http.get("/dicomweb/studies").status_code == 200
        revoke_one(web.archive.ctx.engine, token)
        assert http.get("/dicomweb/studies").status_code == 401


# -- authorization ---------------------------------------------------------------------


def test_read_only_role_cannot_stow_and_refusal_is_recorded(web, events) -> None:
    ctype, body = encode(ct_series(ALICE, n=1))
    with web.http(web.token("dr.readonly", "radiologist")) as http:
        r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert _stored(web.archive) == []
    refused = [e for e in events if isinstance(e, AccessRefused)]
    assert [(e.principal.name, e.action, e.principal.address) for e in refused] == [("dr.readonly", Action.STORE, "127.0.0.1")]


def test_forbidden_reads_look_like_not_found_and_are_recorded(web, stored_ct, events) -> None:
    _, (study, series, sop) = stored_ct
    with web.http(web.token("root.admin", "admin")) as http:
        assert http.get("/dicomweb/studies").status_code == 204  # filtered, not an error
        for path in (f"/dicomweb/studies/{study}", f"/dicomweb/studies/{study}/series/{series}",
                     f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
                     f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata",
                     f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1"):
            r = http.get(path)
            assert r.status_code == 404 and r.json() == {"error": "not-found"}, path
    with web.http(web.token("dr.reader", "radiologist")) as http:
        unknown = http.get(f"/dicomweb/studies/{study}/series/{series}/instances/1.2.3.4.5")
        assert unknown.status_code == 404 and unknown.json() == {"error": "not-found"}  # same answer: no IDOR oracle
        # A known instance under another study's URL is not found either.
        assert http.get(f"/dicomweb/studies/1.2.3/series/{series}/instances/{sop}").status_code == 404
    refused = [e for e in events if isinstance(e, AccessRefused)]
    assert refused and all(e.principal.name == "root.admin" and e.action is Action.RETRIEVE for e in refused)


# -- STOW limits and framing -----------------------------------------------------------------


@pytest.fixture
def small_web(archive):
    net = archive.settings.network.model_copy(update={"max_request_bytes": 64 * 1024, "cors_origins": ["https://viewer.example.org"]})
    archive.ctx.settings = archive.settings.model_copy(update={"network": net})
    server, stop = start_server(archive)
    try:
        yield server
    finally:
        stop()


def test_oversized_stow_is_413_and_stores_nothing(small_web) -> None:
    ctype, body = encode(ct_series(ALICE, n=3, size=128))
    assert len(body) > 64 * 1024
    with small_web.http(small_web.token("tech.big", "technologist")) as http:
        r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 413
        # Without Content-Length (chunked), the limit is enforced while streaming.
        r = http.post("/dicomweb/studies", content=iter([body[i : i + 8192] for i in range(0, len(body), 8192)]), headers={"Content-Type": ctype})
        assert r.status_code == 413
        assert _stored(small_web.archive) == []
        ctype, body = encode(ct_series(ALICE, n=1, size=32))
        assert http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype}).status_code == 200


@pytest.mark.parametrize("damage", ["no-closing-boundary", "wrong-boundary", "garbage-after-boundary", "no-parts", "no-boundary-param"])
def test_broken_multipart_is_400_and_stores_nothing(web, damage) -> None:
    ctype, body = encode(ct_series(ALICE, n=2))
    if damage == "no-closing-boundary":
        body = body[: body.rindex(b"\r\n--")]
    elif damage == "wrong-boundary":
        ctype = ctype.replace("dgtestboundary", "otherboundary")
    elif damage == "garbage-after-boundary":
        body = body.replace(b"--dgtestboundary\r\nContent-Type", b"--dgtestboundaryXX\r\nContent-Type", 1)
    elif damage == "no-parts":
        body = b"--dgtestboundary--\r\n"
    elif damage == "no-boundary-param":
        ctype = 'multipart/related; type="application/dicom"'
    with web.http(web.token("tech.broken", "technologist")) as http:
        r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 400, (damage, r.text)
    assert _stored(web.archive) == []


def test_parts_are_stored_while_the_body_arrives_and_a_broken_body_leaves_no_blob(web) -> None:
    # ~300 KB parts: the first ones arrive whole long before the body ends, and are written at once (staged, ADR 0021).
    ctype, body = encode(ct_series(ALICE, n=6, size=384))
    body = body[: body.rindex(b"\r\n--")]  # no closing delimiter: the framing breaks only at the very end
    store = web.archive.ctx.store
    before = set(store.iter_ids())
    port = int(web.url.rsplit(":", 1)[1])
    token = web.token("tech.staged", "technologist")
    head = (f"POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    ctx = ssl.create_default_context(cafile=web.ca)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock, ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        tls.sendall(head + body[: len(body) * 3 // 4])
        for _ in range(300):  # polled, not timed: the first parts' blobs appear while the body is incomplete
            if set(store.iter_ids()) - before:
                break
            time.sleep(0.05)
        assert set(store.iter_ids()) - before, "no part was stored before the body ended"
        assert _stored(web.archive) == []  # written, not visible
        tls.sendall(body[len(body) * 3 // 4 :])
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert _stored(web.archive) == []
    assert set(store.iter_ids()) == before  # the broken body left nothing behind


@pytest.mark.parametrize("ctype", ["application/dicom", "application/json", 'multipart/related; type="application/dicom+json"; boundary=x', ""])
def test_wrong_media_type_is_415(web, ctype) -> None:
    with web.http(web.token("tech.media", "technologist")) as http:
        r = http.post("/dicomweb/studies", content=ct_series(ALICE, n=1)[0], headers={"Content-Type": ctype})
    assert r.status_code == 415
    assert _stored(web.archive) == []


def test_non_dicom_part_fails_alone(web) -> None:
    good = ct_series(ALICE, n=2)
    ctype, body = encode([good[0], b"this is not DICOM at all" * 10, good[1]])
    with web.http(web.token("tech.mixed", "technologist")) as http:
        r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 202 and r.headers["content-type"] == "application/dicom+json"
    doc = r.json()
    failed = doc["00081198"]["Value"]
    assert len(failed) == 1 and failed[0]["00081197"]["Value"] == [CANNOT_UNDERSTAND]
    assert len(doc["00081199"]["Value"]) == 2
    assert sorted(_stored(web.archive)) == sorted(dataset_of(d).SOPInstanceUID for d in good)


def test_part_with_other_media_type_fails_alone(web) -> None:
    good = ct_series(ALICE, n=1)
    ctype, body = encode(good)
    extra = b"\r\n--dgtestboundary\r\nContent-Type: text/html\r\n\r\n<script>alert(1)</script>"
    body = body.replace(b"\r\n--dgtestboundary--", extra + b"\r\n--dgtestboundary--")
    with web.http(web.token("tech.html", "technologist")) as http:
        r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 202
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [CANNOT_UNDERSTAND]
    assert _stored(web.archive) == [dataset_of(good[0]).SOPInstanceUID]


def test_study_mismatch_and_write_once_conflict(web) -> None:
    data = ct_series(ALICE, n=1)
    sop = dataset_of(data[0]).SOPInstanceUID
    ctype, body = encode(data)
    with web.http(web.token("tech.conflict", "technologist")) as http:
        r = http.post("/dicomweb/studies/1.2.3.4", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 409
        item = r.json()["00081198"]["Value"][0]
        assert item["00081197"]["Value"] == [DATASET_DOES_NOT_MATCH] and item["00081155"]["Value"] == [sop]
        assert _stored(web.archive) == []
        assert http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype}).status_code == 200
        assert http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype}).status_code == 200  # idempotent
        changed = dataset_of(data[0])
        changed.PixelData = bytes(len(changed.PixelData))
        ctype, body = encode([to_bytes(changed)])
        r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 409
        assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [DUPLICATE_SOP_INSTANCE]
    assert web.archive.operator.retrieve.instance(sop).data[128:] == data[0][128:]  # the stored object is untouched


# -- paths and queries ----------------------------------------------------------------------


def test_path_traversal_and_invalid_uids_are_400(web, stored_ct) -> None:
    _, (study, series, sop) = stored_ct
    token = web.token("dr.paths", "radiologist")
    inst = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    for path in (
        "/dicomweb/studies/..%2F..%2Fetc%2Fpasswd",
        "/dicomweb/studies/..%2f..%2fetc%2fpasswd/metadata",
        f"{inst}/../../x",
        f"/dicomweb/studies/{study}/series/{series}/instances/1.2.3/../../x",
        "/dicomweb/studies/%2e%2e/series",
        "/dicomweb/studies/1.2.3%00/series",
        "/dicomweb/studies/1.2.3\\..\\x",
        "/dicomweb/studies/../../../../etc/passwd",
        "/dicomweb/studies/1.2.abc",
        "/dicomweb/studies/1.02.3",
        "/dicomweb/studies/" + "1." * 40 + "1",
        f"{inst}/bulkdata/..%2Fkeys",
        f"{inst}/bulkdata/7fe0001",
        f"{inst}/frames/1%3B2",
    ):
        assert _raw_status(web, path, token) == 400, path
    assert _raw_status(web, f"{inst}/metadata", token) == 200


@pytest.mark.parametrize(
    "params",
    [
        {"PatientName": "' OR 1=1 --"},
        {"PatientID": "1; DROP TABLE instances; --"},
        {"PatientName": "*' UNION SELECT phi FROM patients --*"},
        {"PatientName": "ZEBRA\x00FINCH"},
        {"PatientName": "A" * 5000},
        {"PatientID": "A\\B"},
        {"StudyInstanceUID": "1.2.3' OR '1'='1"},
        {"StudyDate": "2024-01-01"},
        {"StudyDate": "20240101-20240102-20240103"},
        {"limit": "-1"},
        {"limit": "1e9"},
        {"offset": "abc"},
        {"fuzzymatching": "maybe"},
        {"includefield": "NotAnAttribute"},
        {"includefield": "../../etc/passwd"},
        {"Rows": "512"},
        {"PatientName;": "x"},
        {"nonsense": "1"},
        {"00100010.00100020": "x"},
        {"__class__": "x"},
    ],
)
def test_qido_injection_is_a_literal_or_400(web, stored_ct, params) -> None:
    with web.http(web.token("dr.inject", "radiologist")) as http:
        for path in ("/dicomweb/studies", "/dicomweb/series", "/dicomweb/instances"):
            r = http.get(path, params=params)
            assert r.status_code in (204, 400), (params, path, r.status_code, r.text)
            if r.status_code == 400:
                assert r.json()["error"] == "bad-request"
                assert "UNION" not in r.text and "DROP" not in r.text and "ZEBRA" not in r.text  # values never echoed


def test_query_string_and_path_too_long(web) -> None:
    with web.http(web.token("dr.long", "radiologist")) as http:
        assert http.get("/dicomweb/studies", params={"PatientName": "A" * 20000}).status_code == 414


def test_qido_unsupported_accept_is_406(web) -> None:
    with web.http(web.token("dr.xml", "radiologist")) as http:
        r = http.get("/dicomweb/studies", headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
        assert r.status_code == 406


# -- integrity -------------------------------------------------------------------------------


def test_tampered_object_is_withheld_with_an_explanation(web, stored_ct, events) -> None:
    _, (study, series, sop) = stored_ct
    with read_session(web.archive.ctx.engine) as s:
        blob = web.archive.ctx.store._path(s.get(Instance, sop).blob_id)
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    blob.write_bytes(bytes(raw))
    with web.http(web.token("dr.integrity", "radiologist")) as http:
        for path in (f"/dicomweb/studies/{study}/series/{series}/instances/{sop}", f"/dicomweb/studies/{study}",
                     f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered"):
            r = http.get(path)
            assert r.status_code == 500, path
            assert r.json()["error"] == "integrity-failure"
            assert "withheld" in r.json()["detail"] and b"DICM" not in r.content
    assert any(isinstance(e, IntegrityViolation) and e.sop_instance_uid == sop for e in events)


# -- TLS, headers, CORS, health, metrics, logs ----------------------------------------------------


def test_tls_1_1_is_refused_and_tls_1_2_works_without_client_certificate(web) -> None:
    port = int(web.url.rsplit(":", 1)[1])
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(web.ca)
    with pytest.warns(DeprecationWarning):
        old.minimum_version = ssl.TLSVersion.TLSv1
    with pytest.warns(DeprecationWarning):
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, pytest.raises((ssl.SSLError, ConnectionResetError)):
        old.wrap_socket(sock, server_hostname="127.0.0.1")
    tls12 = ssl.create_default_context(cafile=web.ca)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, tls12.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        assert tls.version() == "TLSv1.2"
        assert tls.cipher()[0].startswith(("ECDHE-", "TLS_"))


def test_cors_only_for_configured_origins(small_web) -> None:
    token = small_web.token("dr.cors", "radiologist")
    with small_web.http(token) as http:
        ok = http.get("/dicomweb/studies", headers={"Origin": "https://viewer.example.org"})
        assert ok.headers["access-control-allow-origin"] == "https://viewer.example.org"
        assert "access-control-allow-credentials" not in ok.headers
        evil = http.get("/dicomweb/studies", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in evil.headers
        pre = http.options("/dicomweb/studies", headers={"Origin": "https://viewer.example.org", "Access-Control-Request-Method": "GET",
                                                         "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 200 and "GET" in pre.headers["access-control-allow-methods"]


def test_no_cors_headers_by_default(web) -> None:
    with web.http(web.token("dr.nocors", "radiologist")) as http:
        r = http.get("/dicomweb/studies", headers={"Origin": "https://viewer.example.org"})
        assert not [h for h in r.headers if h.startswith("access-control-")]


def test_healthz_openapi_and_metrics(web, stored_ct) -> None:
    _, (study, series, sop) = stored_ct
    with web.http() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        paths = set(anonymous.get("/openapi.json").json()["paths"])
        assert paths == {"/healthz", "/metrics", "/auth/login", "/auth/refresh", "/auth/logout", "/auth/password",
                         "/auth/step-up", "/auth/break-glass", "/admin/erase", "/admin/users", "/admin/users/{name}",
                         "/admin/users/{name}/disable", "/admin/users/{name}/enable", "/admin/users/{name}/unlock",
                         "/admin/users/{name}/roles", "/admin/users/{name}/roles/{role}", "/admin/users/{name}/reset-mfa",
                         "/admin/users/{name}/recovery-codes", "/admin/devices", "/admin/devices/{ae_title}/revoke",
                         "/admin/gateway/allow-list", "/admin/gateway/allow-list/deny", "/admin/studies/{study}/access",
                         "/shares", "/shares/{share_id}", "/shares/{share_id}/revoke", "/incidents", "/incidents/{incident_id}",
                         "/incidents/{incident_id}/contain", "/incidents/{incident_id}/release", "/incidents/{incident_id}/scope",
                         "/incidents/{incident_id}/report", "/incidents/{incident_id}/close"}
        assert anonymous.get("/docs").status_code == 404
        assert anonymous.get("/metrics").status_code == 401
    with web.http(web.token("dr.m", "radiologist")) as http:
        http.get("/dicomweb/studies", params={"PatientName": "ZEBRA*"})
        http.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata")
        http.get("/dicomweb/studies/1.2.3.4.5.6.7.8.9")
        assert http.get("/metrics").status_code == 403
    for role in ("admin", "security_officer"):
        with web.http(web.token(f"m.{role.replace('_', '-')}", role)) as http:
            r = http.get("/metrics")
            assert r.status_code == 200
            text = r.text
            assert 'route="/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata"' in text
            assert 'route="/dicomweb/studies/{study}",status="404"' in text
            for secret in [study, series, sop, "1.2.3.4.5.6.7.8.9", *ALICE.secrets()]:
                assert secret not in text


def test_access_log_has_templates_not_phi(web, stored_ct, caplog) -> None:
    import logging

    _, (study, series, sop) = stored_ct
    caplog.set_level(logging.DEBUG)
    with web.http(web.token("dr.log", "radiologist")) as http:
        http.get("/dicomweb/studies", params={"PatientName": ALICE.name, "PatientID": ALICE.patient_id})
        http.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata")
        http.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered")
    # Server-side loggers only (httpx, the client, logs its own URLs).
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("dicomguard", "uvicorn", "fastapi", "starlette")))
    assert "GET /dicomweb/studies 200" in text
    assert "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata 200" in text
    for secret in ALICE.secrets():
        assert secret not in text
    assert sop not in text


def test_read_only_patients_of_others_never_leak_in_qido(web, stored_ct) -> None:
    web.archive.operator.store.ingest(ct_series(BOB, n=1, seed=5)[0])
    with web.http(web.token("dr.both", "radiologist")) as http:
        r = http.get("/dicomweb/studies", params={"PatientID": BOB.patient_id})
        assert [s["00100020"]["Value"] for s in r.json()] == [[BOB.patient_id]]
        assert ALICE.patient_id not in r.text


def test_plain_http_is_refused(web) -> None:
    port = int(web.url.rsplit(":", 1)[1])
    with httpx.Client(trust_env=False, timeout=5) as plain, pytest.raises(httpx.HTTPError):
        plain.get(f"http://127.0.0.1:{port}/healthz")


def _cut_study_stream(web, user: str, study_uid: str) -> tuple[bytes, int]:  # type: ignore[no-untyped-def]
    """A radiologist's WADO-RS study request whose stream the server cuts: what arrived, and the length announced."""
    received = b""
    with web.http(web.token(user, "radiologist")) as http, http.stream("GET", f"/dicomweb/studies/{study_uid}") as r:
        assert r.status_code == 200
        with pytest.raises(httpx.HTTPError):
            for chunk in r.iter_raw():
                received += chunk
        return received, int(r.headers["content-length"])


def test_integrity_failure_in_the_middle_of_a_stream_cuts_it(web, events) -> None:
    # Objects are read one at a time: the third is fetched and verified after the response started.
    data = ct_series(ALICE, n=3)
    for d in data:
        web.archive.operator.store.ingest(d)
    records = IndexQuery(web.archive.ctx).instances()
    last = records[-1]
    with read_session(web.archive.ctx.engine) as s:
        blob = web.archive.ctx.store._path(s.get(Instance, last.sop_instance_uid).blob_id)
    raw = bytearray(blob.read_bytes())
    raw[-40] ^= 0x80
    blob.write_bytes(bytes(raw))
    received, announced = _cut_study_stream(web, "dr.stream", last.study_uid)
    assert announced > len(received)  # the client knows it got less than announced
    assert received.count(b"Content-Type: application/dicom;") == 2
    assert not received.rstrip().endswith(b"--")  # never closed: the client cannot take it for a complete study
    assert any(isinstance(e, IntegrityViolation) and e.sop_instance_uid == last.sop_instance_uid for e in events)


def test_an_object_longer_than_its_index_row_announced_cuts_the_stream(web) -> None:
    # The body's length is announced from the index rows; an object that does not match its row is not sent.
    data = ct_series(ALICE, n=3)
    for d in data:
        web.archive.operator.store.ingest(d)
    last = IndexQuery(web.archive.ctx).instances()[-1]
    with write_session(web.archive.ctx.engine) as s:
        s.execute(update(Instance).where(Instance.sop_instance_uid == last.sop_instance_uid).values(size=Instance.size - 1))
    received, _ = _cut_study_stream(web, "dr.length", last.study_uid)
    assert received.count(b"Content-Type: application/dicom;") == 2
    assert last.sop_instance_uid.encode() not in received


def test_part_with_non_ascii_transfer_syntax_fails_alone(web) -> None:
    """Regression (hypothesis-found): a TS UID with a high-bit byte must be a per-part failure, not a 500."""
    bad, good = ct_series(ALICE, n=2)
    bad = bytearray(bad)
    bad[bad.index(b"1.2.840.10008.1.2.1\x00")] |= 0x80
    ctype, body = encode([bytes(bad), good])
    with web.http(web.token("tech.ts", "technologist")) as http:
        r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 202, r.text
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [CANNOT_UNDERSTAND]
    assert _stored(web.archive) == [dataset_of(good).SOPInstanceUID]
