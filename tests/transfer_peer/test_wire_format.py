"""What goes on the wire, read back by the archive's own STOW-RS parser; and the client's memory bound."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

from dicomguard.transfer import build_provenance, client_context, send_instances, verify_provenance
from dicomguard.web.multipart import MultipartReader
from tests.dicom_factory import ALICE, ct_series, dataset_of
from tests.web.multipart_util import boundary_of


def test_request_head_and_parts_as_the_receiving_route_sees_them(archive, scripted, pki) -> None:
    """Head: POST {root}/studies, multipart/related; type="application/dicom", chunked, Accept DICOM JSON.
    Body: one application/dicom part per object, bit for bit, then the provenance part; read back by
    ``web/multipart.py`` and the manifest verified against the parts, as the receiving route will."""
    uids = [archive.operator.store.ingest(o).sop_instance_uid for o in ct_series(ALICE, n=3)]
    objects = [archive.operator.retrieve.instance(u).data for u in uids]
    manifest = build_provenance(archive.ledger.origin, {u: archive.ledger.prove_instance(u) for u in uids})
    peer = scripted(capture=True)
    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    send_instances(peer.url + "/", objects, ssl_context=ctx, provenance=manifest, headers={"Authorization": "Bearer t0k3n"})
    (got,) = peer.requests
    assert got.request_line == "POST /dicomweb/studies HTTP/1.1" and got.complete
    h = got.headers
    assert h["content-type"].startswith('multipart/related; type="application/dicom"; boundary=dicomguard-')
    assert (h["transfer-encoding"], h["accept"], h["authorization"]) == ("chunked", "application/dicom+json", "Bearer t0k3n")
    assert "content-length" not in h and "expect" not in h
    reader = MultipartReader(boundary_of(h["content-type"]))
    try:
        assert got.body is not None
        reader.feed(got.body)
        parts = reader.finish()
        assert [p.content_type for p in parts] == ["application/dicom"] * 3 + ["application/vnd.dicomguard.provenance+json"]
        assert [p.content.read() for p in parts[:3]] == objects
        received = {str(dataset_of(p.content.read()).SOPInstanceUID): p.content.read() for p in parts[:3]}
        proven = verify_provenance(parts[3].content.read(), archive.ledger.verifier.to_verifier_key(), received)
        assert list(proven) == uids
    finally:
        reader.close()


def test_two_hundred_megabytes_go_out_in_bounded_memory(scripted, pki) -> None:
    """200 objects of 1 MB, each made when asked for and dropped after sending: peak traced memory stays
    within a few objects, far below the 200 MB of the request."""
    size, count = 1_000_000, 200
    peer = scripted()

    def objects() -> Iterator[bytes]:
        for i in range(count):
            yield i.to_bytes(4, "big") * (size // 4)

    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    tracemalloc.start()
    try:
        outcome = send_instances(peer.url, objects(), ssl_context=ctx, provenance=b"{}", timeout_s=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (got,) = peer.requests
    assert got.complete and got.delimiters == count + 2  # a delimiter before each part and the closing one
    assert got.body_bytes > count * size and outcome.parts_sent == count and outcome.http_status == 200
    assert peak < 10 * size, f"peak traced memory {peak / 1e6:.1f} MB"
