"""Fixtures of the sharing tests: an archive served over real HTTPS with studies, users and a recipient client."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.browser import browser  # noqa: F401  (the browser fixture of these tests)
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of, to_bytes
from tests.web.conftest import WebServer, start_server


@dataclass
class Shared:
    server: WebServer
    alice_study: str
    alice_series: list[str]
    bob_study: str
    objects: dict[str, bytes] = field(default_factory=dict)
    """Every stored object by SOP Instance UID."""

    @property
    def archive(self):  # type: ignore[no-untyped-def]
        return self.server.archive


def two_series_study(patient, seed: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    """A CT study of two series (4 + 2 images)."""
    first, second = ct_series(patient, n=4, size=32, seed=seed), ct_series(patient, n=2, size=32, seed=seed + 1)
    study = dataset_of(first[0]).StudyInstanceUID
    moved = []
    for data in second:
        ds = dataset_of(data)
        ds.StudyInstanceUID = study
        ds.SeriesNumber = 2
        moved.append(to_bytes(ds))
    return first + moved


@pytest.fixture
def shared(archive) -> Iterator[Shared]:  # type: ignore[no-untyped-def]
    """The archive over HTTPS with ALICE's study (two series: 4 + 2 CT images) and BOB's (3 images), department RADIOLOGY."""
    alice, bob = two_series_study(ALICE, 11), ct_series(BOB, n=3, size=32, seed=21)
    for data in alice + bob:
        archive.operator.store.ingest(data)
    series = list(dict.fromkeys(str(dataset_of(d).SeriesInstanceUID) for d in alice))
    objects = {str(dataset_of(d).SOPInstanceUID): d for d in alice + bob}
    server, stop = start_server(archive)
    try:
        yield Shared(server, str(dataset_of(alice[0]).StudyInstanceUID), series, str(dataset_of(bob[0]).StudyInstanceUID), objects)
    finally:
        stop()


def recipient(server: WebServer) -> httpx.Client:
    """A browser-like client with no credentials: what someone holding only the link has."""
    return httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=server.ca), timeout=30, trust_env=False,
                        follow_redirects=False)


def token_of(url: str) -> str:
    m = re.search(r"/s/([A-Za-z0-9_-]+)$", url)
    assert m, url
    return m.group(1)


def open_link(client: httpx.Client, url: str, pin: str) -> httpx.Response:
    token = token_of(url)
    return client.post(f"/s/{token}", data={"pin": pin}, headers={"Origin": str(client.base_url).rstrip("/")})
