"""DICOMweb end to end over real HTTPS with dicomweb-client: STOW, QIDO, WADO (PS3.18 10.4-10.6)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from dicomguard.web.media import OCTET_STREAM
from tests.conftest import pydicom_test_file
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of, us_multiframe
from tests.web.multipart_util import split

PREAMBLE = 128


@pytest.fixture
def loaded(web):
    """Alice: a 3-slice CT and a 4-frame RGB ultrasound; Bob: one CT slice; plus pydicom's JPEG 2000 file."""
    tech = web.dicomweb_client(web.token("tech.tina", "technologist"))
    ct = ct_series(ALICE, n=3)
    us = us_multiframe(ALICE, frames=4)
    bob = ct_series(BOB, n=1, seed=9)
    j2k = pydicom_test_file("JPEG2000.dcm").read_bytes()
    originals = ct + [us] + bob + [j2k]
    result = tech.store_instances([dataset_of(d) for d in originals])
    assert "FailedSOPSequence" not in result
    assert len(result.ReferencedSOPSequence) == len(originals)
    reader = web.dicomweb_client(web.token("dr.rita", "radiologist"))
    return web, reader, {dataset_of(d).SOPInstanceUID: d for d in originals}


def _uids(d: bytes) -> tuple[str, str, str]:
    ds = dataset_of(d)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def test_stow_response_lists_instances_with_retrieve_urls(web) -> None:
    data = ct_series(ALICE, n=2)
    study = dataset_of(data[0]).StudyInstanceUID
    result = web.dicomweb_client(web.token("tech.tom", "technologist")).store_instances([dataset_of(d) for d in data], study)
    # dicomweb-client sends "Host: 127.0.0.1" without the port: the port of the connection is used.
    assert result.RetrieveURL == f"{web.dicomweb}/studies/{study}"
    items = result.ReferencedSOPSequence
    assert {i.ReferencedSOPInstanceUID for i in items} == {dataset_of(d).SOPInstanceUID for d in data}
    assert all(i.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2" for i in items)
    assert all(i.RetrieveURL.startswith(f"{web.dicomweb}/studies/{study}/series/") for i in items)


def test_qido_all_levels(loaded) -> None:
    _, reader, originals = loaded
    studies = reader.search_for_studies()
    assert len(studies) == 4  # Alice CT, Alice US, Bob CT, the JPEG 2000 NM study
    alice_ct = next(d for d in originals.values() if dataset_of(d).PatientID == ALICE.patient_id and dataset_of(d).Modality == "CT")
    study, series, _ = _uids(alice_ct)
    series_found = reader.search_for_series(study)
    assert [s["0020000E"]["Value"][0] for s in series_found] == [series]
    assert series_found[0]["00080060"]["Value"] == ["CT"]
    assert series_found[0]["00201209"]["Value"] == [3]
    assert len(reader.search_for_series()) == 4
    assert len(reader.search_for_instances(study, series)) == 3
    assert len(reader.search_for_instances(study)) == 3
    assert len(reader.search_for_instances()) == len(originals)
    # /series carries study attributes too; /instances carries series and study ones.
    everything = reader.search_for_instances(search_filters={"PatientID": ALICE.patient_id})
    assert len(everything) == 4 and all(i["00100020"]["Value"] == [ALICE.patient_id] for i in everything)
    assert all("00080060" in i and "00081190" in i for i in everything)


def test_qido_matching_wildcards_ranges_lists(loaded) -> None:
    _, reader, originals = loaded
    ids = lambda found: sorted(s["00100020"]["Value"][0] for s in found)
    assert ids(reader.search_for_studies(search_filters={"PatientName": "ZEBRA*"})) == [ALICE.patient_id] * 2
    assert ids(reader.search_for_studies(search_filters={"PatientName": "zebrafinch^alicianna"})) == [ALICE.patient_id] * 2
    assert ids(reader.search_for_studies(search_filters={"PatientID": "PIDQX????BRAVO"})) == [BOB.patient_id]
    assert ids(reader.search_for_studies(search_filters={"00100020": BOB.patient_id})) == [BOB.patient_id]
    assert len(reader.search_for_studies(search_filters={"StudyDate": "20240301-20240310"})) == 3
    assert len(reader.search_for_studies(search_filters={"StudyDate": "20240306-"})) == 0
    assert len(reader.search_for_studies(search_filters={"StudyDate": "-20240305"})) == 4
    assert len(reader.search_for_studies(search_filters={"StudyDate": "20040826"})) == 1
    assert len(reader.search_for_studies(search_filters={"StudyTime": "1800-1900"})) == 1
    assert len(reader.search_for_studies(search_filters={"ModalitiesInStudy": "US"})) == 1
    assert len(reader.search_for_studies(search_filters={"ModalitiesInStudy": "US,CT"})) == 3
    assert len(reader.search_for_studies(search_filters={"AccessionNumber": ALICE.accession})) == 2
    two = [_uids(d)[0] for d in originals.values() if dataset_of(d).PatientID == BOB.patient_id]
    two.append(_uids(next(d for d in originals.values() if dataset_of(d).Modality == "US"))[0])
    found = reader.search_for_studies(search_filters={"StudyInstanceUID": ",".join(two)})
    assert sorted(s["0020000D"]["Value"][0] for s in found) == sorted(two)
    assert len(reader.search_for_series(search_filters={"Modality": "C?"})) == 2
    assert reader.search_for_studies(search_filters={"PatientName": "NOBODY*"}) == []


def test_qido_includefield_limit_offset(loaded) -> None:
    _, reader, _ = loaded
    plain = reader.search_for_studies(search_filters={"PatientID": ALICE.patient_id})
    assert "00100030" not in plain[0] and "00081030" not in plain[0]  # minimised by default
    wanted = reader.search_for_studies(search_filters={"PatientID": ALICE.patient_id}, fields=["PatientBirthDate", "00081030"])
    assert wanted[0]["00100030"]["Value"] == [ALICE.birth_date]
    assert wanted[0]["00081030"]["Value"] == ["CHEST SCREENING"]
    every = reader.search_for_studies(fields=["all"])
    assert len(every) == 4 and all("00100040" in s for s in every)
    first, second = reader.search_for_studies(limit=3), reader.search_for_studies(limit=3, offset=3)
    assert len(first) == 3 and len(second) == 1
    uids = [s["0020000D"]["Value"][0] for s in first + second]
    assert len(set(uids)) == 4
    assert reader.search_for_studies(offset=4) == []


def test_qido_warning_headers(loaded) -> None:
    web, _, _ = loaded
    token = web.token("dr.wes", "radiologist")
    with web.http(token) as http:
        r = http.get("/dicomweb/studies", params={"limit": "1", "fuzzymatching": "true"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+json")
        assert "fuzzymatching parameter is not supported" in r.headers["warning"]
        assert "additional results" in r.headers["warning"]
        assert http.get("/dicomweb/studies", params={"PatientID": "NOPE"}).status_code == 204


def test_wado_study_series_instance_are_bit_identical(loaded) -> None:
    web, reader, originals = loaded
    token = web.token("dr.bits", "radiologist")
    alice_ct = [d for d in originals.values() if dataset_of(d).Modality == "CT" and dataset_of(d).PatientID == ALICE.patient_id]
    study, series, sop = _uids(alice_ct[0])
    with web.http(token) as http:
        for path, expected in (
            (f"/dicomweb/studies/{study}", alice_ct),
            (f"/dicomweb/studies/{study}/series/{series}", alice_ct),
            (f"/dicomweb/studies/{study}/series/{series}/instances/{sop}", alice_ct[:1]),
        ):
            r = http.get(path, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
            assert r.status_code == 200, r.text
            assert r.headers["cache-control"] == "no-store"
            assert int(r.headers["content-length"]) == len(r.content)  # announced up front, not chunked
            parts = split(r.headers["content-type"], r.content)
            got = {dataset_of(p).SOPInstanceUID: p for _, p in parts}
            assert len(got) == len(expected)
            for original in expected:
                stored = got[dataset_of(original).SOPInstanceUID]
                assert stored[:PREAMBLE] == bytes(PREAMBLE)  # the archive zeroes the preamble
                assert stored[PREAMBLE:] == original[PREAMBLE:]
            assert all(h["content-type"].startswith("application/dicom; transfer-syntax=") for h, _ in parts)
    # dicomweb-client parses the same responses into datasets.
    datasets = reader.retrieve_series(study, series)
    assert sorted(d.SOPInstanceUID for d in datasets) == sorted(dataset_of(d).SOPInstanceUID for d in alice_ct)
    ds = reader.retrieve_instance(study, series, sop)
    assert ds.PixelData == dataset_of(alice_ct[0]).PixelData


def test_wado_jpeg2000_instance_round_trip(loaded) -> None:
    _, reader, _ = loaded
    j2k = pydicom_test_file("JPEG2000.dcm").read_bytes()
    study, series, sop = _uids(j2k)
    ds = reader.retrieve_instance(study, series, sop, media_types=(("application/dicom", "*"),))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"
    assert ds.PixelData == dataset_of(j2k).PixelData


def test_wado_metadata(loaded) -> None:
    web, reader, originals = loaded
    us = next(d for d in originals.values() if dataset_of(d).Modality == "US")
    study, series, sop = _uids(us)
    meta = reader.retrieve_instance_metadata(study, series, sop)
    assert meta["00100010"]["Value"] == [{"Alphabetic": ALICE.name}]
    assert meta["00280008"]["Value"] == [4]
    pixel = meta["7FE00010"]
    assert "InlineBinary" not in pixel
    assert pixel["BulkDataURI"] == f"{web.dicomweb}/studies/{study}/series/{series}/instances/{sop}/bulkdata/7FE00010"
    assert meta["00083002"]["Value"] == ["1.2.840.10008.1.2.1"]
    study_meta = reader.retrieve_study_metadata(study)
    assert [m["00080018"]["Value"][0] for m in study_meta] == [sop]
    ct = [d for d in originals.values() if dataset_of(d).Modality == "CT" and dataset_of(d).PatientID == ALICE.patient_id]
    cs, cse, _ = _uids(ct[0])
    assert len(reader.retrieve_series_metadata(cs, cse)) == 3
    bulk = reader.retrieve_bulkdata(pixel["BulkDataURI"])
    assert bulk == [dataset_of(us).PixelData]


def test_wado_frames_uncompressed_multiframe(loaded) -> None:
    web, reader, originals = loaded
    us = next(d for d in originals.values() if dataset_of(d).Modality == "US")
    study, series, sop = _uids(us)
    pixels = dataset_of(us).PixelData
    size = 48 * 64 * 3
    frames = reader.retrieve_instance_frames(study, series, sop, [1, 3])
    assert frames == [pixels[:size], pixels[2 * size : 3 * size]]
    token = web.token("dr.frames", "radiologist")
    with web.http(token) as http:
        r = http.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/4",
                     headers={"Accept": 'multipart/related; type="application/octet-stream"'})
        assert r.status_code == 200
        ((headers, payload),) = split(r.headers["content-type"], r.content)
        assert headers["content-type"] == f"{OCTET_STREAM}; transfer-syntax=1.2.840.10008.1.2.1"
        assert payload == pixels[3 * size :]
        base = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames"
        assert http.get(f"{base}/5").status_code == 404
        assert http.get(f"{base}/0").status_code == 400
        assert http.get(f"{base}/1;2").status_code == 400
        assert http.get(f"{base}/1", headers={"Accept": 'multipart/related; type="image/jp2"'}).status_code == 406


def test_wado_frames_jpeg2000_are_fragments_in_their_media_type(loaded) -> None:
    web, reader, _ = loaded
    j2k = pydicom_test_file("JPEG2000.dcm").read_bytes()
    study, series, sop = _uids(j2k)
    (frame,) = reader.retrieve_instance_frames(study, series, sop, [1], media_types=("image/jp2",))
    from pydicom.encaps import generate_frames

    expected = next(generate_frames(dataset_of(j2k).PixelData, number_of_frames=1))
    assert frame == expected
    assert frame[:4] in (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0c")  # J2K codestream or JP2 box
    token = web.token("dr.jp2", "radiologist")
    with web.http(token) as http:
        url = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1"
        r = http.get(url, headers={"Accept": "*/*"})
        ((headers, _),) = split(r.headers["content-type"], r.content)
        assert headers["content-type"] == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.91"
        # Decompression is never done to satisfy an octet-stream request (no transcoding).
        assert http.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'}).status_code == 406


def test_rendered_png_and_jpeg(loaded) -> None:
    web, reader, originals = loaded
    ct = next(d for d in originals.values() if dataset_of(d).Modality == "CT")
    study, series, sop = _uids(ct)
    png = reader.retrieve_instance_rendered(study, series, sop, media_types=("image/png",))
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (64, 64) and img.mode == "L"
    us = next(d for d in originals.values() if dataset_of(d).Modality == "US")
    s2, se2, i2 = _uids(us)
    jpeg = reader.retrieve_instance_frames_rendered(s2, se2, i2, [2], media_types=("image/jpeg",))
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG" and img.size == (64, 48) and img.mode == "RGB"
    j2k = pydicom_test_file("JPEG2000.dcm").read_bytes()
    s3, se3, i3 = _uids(j2k)
    token = web.token("dr.render", "radiologist")
    with web.http(token) as http:
        base = f"/dicomweb/studies/{s3}/series/{se3}/instances/{i3}"
        r = http.get(f"{base}/rendered", params={"viewport": "128,128", "window": "600,1200"}, headers={"Accept": "image/png"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == (32, 128)
        assert http.get(f"{base}/rendered", headers={"Accept": "image/gif"}).status_code == 406
        assert http.get(f"{base}/rendered", params={"annotation": "patient"}).status_code == 400
        assert http.get(f"{base}/frames/2/rendered").status_code == 404


def test_large_chunked_stow_round_trip(web) -> None:
    """> 1 MB: dicomweb-client switches to chunked transfer; parts cross spool segments and roll to disk."""
    big = us_multiframe(BOB, frames=48, rows=128, cols=128, seed=4)
    assert len(big) > 2 * 1024 * 1024
    tech = web.dicomweb_client(web.token("tech.big", "technologist"))
    tech.set_chunk_size(256 * 1024)
    result = tech.store_instances([dataset_of(big)])
    assert len(result.ReferencedSOPSequence) == 1
    study, series, sop = _uids(big)
    with web.http(web.token("dr.big", "radiologist")) as http:
        r = http.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}", headers={"Accept": "application/dicom"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        assert r.content[128:] == big[128:]
