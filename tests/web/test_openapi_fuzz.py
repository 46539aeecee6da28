"""The HTTPS API fuzzed end to end: schemathesis from its OpenAPI document, hypothesis on the DICOMweb routes it leaves out.

``/openapi.json`` is public by design (``web/app.py``: it documents the
non-DICOMweb endpoints, no Swagger UI), so schemathesis reads the document the
running server serves, over TLS. Every documented operation is called with
generated data (valid and invalid bodies, path and query parameters) under an
administrator's bearer token; each answer must be no 5xx and conform to the
document (status code, content type, headers, body schema).

No operation is excluded as destructive: the archive is a throwaway copy, the
administrator's API token cannot log out (only login sessions can; 401), cannot
step up and so cannot erase (RFC 9470 401), and cannot administer its own
account (``no-self-administration``, 403); generated account, device and study
names hit 404 or create throwaway records. A NUL in a login name (once a 500 on
PostgreSQL) is pinned by a test at the end of this file.

The DICOMweb routes (PS3.18 bodies OpenAPI cannot express) get mutated QIDO
query strings and STOW-RS bodies from the fuzz corpus (``tests/fuzz``): a 4xx
or a success, never a 5xx.
"""

from __future__ import annotations

import os
from urllib.parse import quote_from_bytes

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.dicom_factory import ALICE, ct_series
from tests.fuzz._harness import RANDOM, mutants, seed_bytes
from tests.fuzz.targets import BOUNDARY

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
_SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=not RANDOM)


def test_every_documented_operation_answers_as_documented(web) -> None:  # type: ignore[no-untyped-def]
    """Schemathesis drives each operation from its Python API (its lazy pytest loader needs a pytest private, gone in 9.2)."""
    token = web.token("fuzz.admin", "admin", department=None)
    api = schemathesis.openapi.from_url(web.url + "/openapi.json", verify=web.ca, timeout=30)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 20, "the OpenAPI document lost operations"
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(_SETTINGS, max_examples=max(3, EXAMPLES // 20))
            @given(operation.as_strategy(generation_mode=mode))
            def call(case) -> None:  # type: ignore[no-untyped-def]
                case.call_and_validate(base_url=web.url, headers={"Authorization": f"Bearer {token}"}, verify=web.ca,
                                       timeout=30, checks=CHECKS)

            try:
                call()
            except Unsatisfiable:
                pass  # no invalid request exists for it (no parameters, or every string is valid)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every operation is tried, all failures reported
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {exc}")
    assert not failures, "\n\n".join(failures)


def test_dicomweb_routes_answer_hostile_queries_and_bodies_without_a_server_error(web) -> None:  # type: ignore[no-untyped-def]
    reader, sender = web.token("dr.fuzz", "radiologist"), web.token("tech.fuzz", "technologist")
    stored = ct_series(ALICE, n=1, size=8)[0]
    d = b"--" + BOUNDARY.encode()
    bodies = [*seed_bytes("multipart"), d + b"\r\nContent-Type: application/dicom\r\n\r\n" + stored + b"\r\n" + d + b"--\r\n"]
    queries = [*seed_bytes("qido_params"), b"", b"includefield=all&limit=5&offset=0", b"Modality=CT&PatientName=ZEBRA*"]
    resources = ["/studies", "/series", "/instances", "/studies/1.2.3/series", "/studies/1.2.3/instances",
                 "/studies/1.2.3/series/1.2.4/instances"]
    with web.http(reader) as http, web.http(sender) as stow:

        @settings(_SETTINGS, max_examples=max(10, EXAMPLES // 2))
        @given(st.sampled_from(resources), st.one_of(st.sampled_from(queries), mutants(queries, max_size=4096), st.binary(max_size=64)))
        def search(resource: str, query: bytes) -> None:
            r = http.get(f"{web.dicomweb}{resource}?{quote_from_bytes(query, safe='=&')}", headers={"Accept": "application/dicom+json"})
            assert r.status_code in (200, 204, 400), (r.status_code, r.text[:200])

        @settings(_SETTINGS, max_examples=max(10, EXAMPLES // 4))
        @given(st.one_of(st.sampled_from(bodies), mutants(bodies, max_size=16384)))
        def store(body: bytes) -> None:
            r = stow.post(f"{web.dicomweb}/studies", content=body,
                          headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
                                   "Accept": "application/dicom+json"})
            assert r.status_code in (200, 202, 400, 409, 413, 415), (r.status_code, r.text[:200])

        store()  # first, so that searches find something
        search()


# Found by schemathesis on PostgreSQL: a NUL in a text field was a 500 (PostgreSQL refuses NUL in text).
NUL_BODIES = [
    ("/admin/devices", {"ae_title": "NULDEV", "name": "a\x00b"}),
    ("/admin/users", {"name": "dr.nul", "role": "radiologist", "department": "a\x00b"}),
    ("/admin/users", {"name": "dr.nul", "role": "radiologist", "modalities": ["C\nT"]}),
    ("/admin/studies/1.2.3/access", {"add_labels": ["v\x00ip"]}),
    ("/admin/gateway/allow-list", {"ae_title": "A\x00B", "ip": "10.0.0.1"}),
    ("/admin/erase", {"patient_id": "a\x00b", "reason": "x"}),
]


def test_control_characters_in_administration_bodies_are_refused_with_400(web) -> None:  # type: ignore[no-untyped-def]
    token = web.token("fuzz.admin", "admin", department=None)
    with web.http(token) as http:
        for path, body in NUL_BODIES:
            r = http.post(path, json=body)
            assert r.status_code == 400, (path, r.status_code, r.text[:200])


def test_a_nul_in_a_login_name_is_refused_like_any_wrong_login(web) -> None:  # type: ignore[no-untyped-def]
    with web.http() as http:
        r = http.post("/auth/login", json={"username": "a\x00b", "password": "x" * 12, "totp": "123456"})
    assert r.status_code == 401, (r.status_code, r.text[:200])
