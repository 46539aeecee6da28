"""Hostile storers and token holders over HTTPS: identity conflicts per STOW part, existence oracles, password oracles."""

from __future__ import annotations

from pydicom.uid import generate_uid

from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of, to_bytes
from tests.web.multipart_util import encode


def _as(data: bytes, **values: object) -> bytes:
    ds = dataset_of(data)
    for k, v in values.items():
        setattr(ds, k, v)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return to_bytes(ds)


def test_stow_answers_the_conflict_per_part(web) -> None:  # type: ignore[no-untyped-def]
    alice = ct_series(ALICE, n=1)[0]
    web.archive.operator.store.ingest(alice)
    study = dataset_of(alice).StudyInstanceUID
    good, forged = ct_series(BOB, n=1, seed=5)[0], _as(ct_series(BOB, n=1, seed=6)[0], StudyInstanceUID=study)
    ctype, body = encode([good, forged])
    with web.http(web.token("t.stow", "technologist")) as http:
        r = http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 202, r.text
    failed = r.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[0xA900]]
    assert failed[0]["00081155"]["Value"] == [dataset_of(forged).SOPInstanceUID]


