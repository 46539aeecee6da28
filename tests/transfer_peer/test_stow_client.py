"""The STOW-RS client against real peers on loopback: dicomguard over mutual TLS, Orthanc behind stunnel,
and scripted peers for the answers that real peers only give when they are in trouble."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

from dicomguard.core.query import IndexQuery
from dicomguard.pki.tls import client_context as pem_client_context
from dicomguard.transfer import (
    InstanceStatus,
    NotAuthorized,
    PayloadTooLarge,
    PeerBusy,
    PeerUnreachable,
    PermanentTransferError,
    RequestRejected,
    ResponseNotUnderstood,
    RetryableTransferError,
    TlsFailure,
    TransferError,
    client_context,
    multipart_body,
    send_instances,
)
from dicomguard.web.stow import CANNOT_UNDERSTAND, DUPLICATE_SOP_INSTANCE
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of, to_bytes
from tests.transfer_peer.conftest import issued_pem
from tests.transfer_peer.peers import refused_port


def _uids(objects: list[bytes]) -> list[str]:
    return [str(dataset_of(o).SOPInstanceUID) for o in objects]


def _stored(archive) -> set[str]:  # type: ignore[no-untyped-def]
    return {i.sop_instance_uid for i in IndexQuery(archive.ctx).instances()}


def _bearer(peer, name: str = "site.a", role: str = "technologist") -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {peer.web.token(name, role)}"}


# -- a dicomguard peer, mutual TLS ---------------------------------------------------------------


def test_a_study_reaches_a_dicomguard_peer_over_mutual_tls(mtls_peer) -> None:
    objects = ct_series(ALICE, n=3)
    ctx = client_context(mtls_peer.client.ca, mtls_peer.client.cert, mtls_peer.client.key)
    outcome = send_instances(mtls_peer.web.dicomweb, (o for o in objects), ssl_context=ctx, headers=_bearer(mtls_peer), timeout_s=30)
    assert outcome.http_status == 200 and outcome.parts_sent == 3 and not outcome.provenance_sent
    assert outcome.all_stored(_uids(objects)) and outcome.failed == {} and outcome.unattributed == ()
    assert all(o.status is InstanceStatus.STORED and o.retrieve_url for o in outcome.instances.values())
    assert _stored(mtls_peer.web.archive) == set(_uids(objects))
    uid = _uids(objects)[1]
    assert mtls_peer.web.archive.operator.retrieve.instance(uid).data[128:] == objects[1][128:]
    # A memoryview is sent as is; sending again is idempotent (same bytes: stored, not a conflict).
    again = send_instances(mtls_peer.web.dicomweb, [memoryview(objects[1])], ssl_context=ctx, headers=_bearer(mtls_peer, "site.a2"))
    assert again.http_status == 200 and again.stored == [uid]


@pytest.mark.parametrize("certificate", ["none", "another CA"])
def test_the_dicomguard_peer_refuses_a_client_without_its_certificate(mtls_peer, other_pki, certificate) -> None:
    """Refused, nothing stored. uvicorn (asyncio) closes without sending the TLS alert, so under TLS 1.3 the
    client sees only a closed connection, indistinguishable from a dropped one: retryable (see the scripted
    and stunnel peers below, whose alert makes it permanent)."""
    if certificate == "none":
        ctx = pem_client_context(mtls_peer.client.ca.read_bytes())  # trusts the peer, presents nothing
    else:
        ctx = client_context(mtls_peer.client.ca, other_pki.client.cert, other_pki.client.key)
    with pytest.raises(TransferError):
        send_instances(mtls_peer.web.dicomweb, ct_series(ALICE, n=1), ssl_context=ctx, headers=_bearer(mtls_peer), timeout_s=10)
    assert _stored(mtls_peer.web.archive) == set()


@pytest.mark.parametrize("certificate", ["none", "another CA"])
def test_a_peer_alert_refusing_our_certificate_is_permanent(scripted, pki, other_pki, certificate) -> None:
    peer = scripted(mutual=True)
    if certificate == "none":
        ctx = pem_client_context(pki.ca_pem)
    else:
        ctx = client_context(pki.client.ca, other_pki.client.cert, other_pki.client.key)
    with pytest.raises(TlsFailure) as caught:
        send_instances(peer.url, ct_series(ALICE, n=1), ssl_context=ctx, timeout_s=10)
    assert not caught.value.retryable and peer.requests == []


def test_a_peer_certificate_from_another_ca_is_a_permanent_failure(mtls_peer, other_pki) -> None:
    ctx = client_context(other_pki.client.ca, mtls_peer.client.cert, mtls_peer.client.key)  # wrong trust anchor
    with pytest.raises(TlsFailure, match="certificate did not verify") as caught:
        send_instances(mtls_peer.web.dicomweb, ct_series(ALICE, n=1), ssl_context=ctx, headers=_bearer(mtls_peer), timeout_s=10)
    assert isinstance(caught.value, PermanentTransferError) and not caught.value.retryable
    assert _stored(mtls_peer.web.archive) == set()


@pytest.mark.parametrize("token", ["wrong", None])
def test_a_refused_credential_is_permanent(mtls_peer, token) -> None:
    ctx = client_context(mtls_peer.client.ca, mtls_peer.client.cert, mtls_peer.client.key)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with pytest.raises(NotAuthorized) as caught:
        send_instances(mtls_peer.web.dicomweb, ct_series(ALICE, n=2, size=256), ssl_context=ctx, headers=headers, timeout_s=10)
    assert caught.value.status == 401 and not caught.value.retryable


def test_a_principal_that_may_not_store_is_permanent(mtls_peer) -> None:
    ctx = client_context(mtls_peer.client.ca, mtls_peer.client.cert, mtls_peer.client.key)
    with pytest.raises(NotAuthorized) as caught:
        send_instances(mtls_peer.web.dicomweb, ct_series(ALICE, n=1), ssl_context=ctx,
                       headers=_bearer(mtls_peer, "dr.reader", "radiologist"), timeout_s=10)
    assert caught.value.status == 403
    assert _stored(mtls_peer.web.archive) == set()


def test_per_object_failures_of_a_202_are_mapped_to_their_uids(mtls_peer) -> None:
    """One stored, one conflicting duplicate (0x0111), one unreadable part (0xC000, no UID): 202."""
    archive = mtls_peer.web.archive
    first, second = ct_series(ALICE, n=2)
    archive.operator.store.ingest(first)
    conflicting = dataset_of(first)
    conflicting.PixelData = bytes(len(conflicting.PixelData))
    ctx = client_context(mtls_peer.client.ca, mtls_peer.client.cert, mtls_peer.client.key)
    outcome = send_instances(mtls_peer.web.dicomweb, [to_bytes(conflicting), second, b"not DICOM at all " * 20],
                             ssl_context=ctx, headers=_bearer(mtls_peer))
    first_uid, second_uid = _uids([first, second])
    assert outcome.http_status == 202 and outcome.parts_sent == 3
    assert outcome.stored == [second_uid]
    failed = outcome.failed[first_uid]
    assert (failed.status, failed.reason, failed.retryable) == (InstanceStatus.FAILED, DUPLICATE_SOP_INSTANCE, False)
    assert [(u.status, u.reason, u.sop_instance_uid) for u in outcome.unattributed] == [(InstanceStatus.FAILED, CANNOT_UNDERSTAND, "")]
    assert not outcome.all_stored([first_uid, second_uid])
    assert archive.operator.retrieve.instance(first_uid).data[128:] == first[128:]  # the archived object is untouched


def test_all_failed_is_a_409_outcome_not_an_exception(mtls_peer) -> None:
    archive = mtls_peer.web.archive
    objects = ct_series(BOB, n=2)
    for o in objects:
        archive.operator.store.ingest(o)
    changed = []
    for o in objects:
        ds = dataset_of(o)
        ds.PixelData = bytes(len(ds.PixelData))
        changed.append(to_bytes(ds))
    ctx = client_context(mtls_peer.client.ca, mtls_peer.client.cert, mtls_peer.client.key)
    outcome = send_instances(mtls_peer.web.dicomweb, changed, ssl_context=ctx, headers=_bearer(mtls_peer))
    assert outcome.http_status == 409 and outcome.stored == []
    assert {u: o.reason for u, o in outcome.failed.items()} == {u: DUPLICATE_SOP_INSTANCE for u in _uids(objects)}


def test_an_iterable_that_fails_midway_stores_nothing(mtls_peer) -> None:
    objects = ct_series(ALICE, n=2)

    def broken() -> Iterator[bytes]:
        yield objects[0]
        raise OSError("the archive could not read the next object")  # not to be taken for a network error

    ctx = client_context(mtls_peer.client.ca, mtls_peer.client.cert, mtls_peer.client.key)
    with pytest.raises(OSError, match="could not read") as caught:
        send_instances(mtls_peer.web.dicomweb, broken(), ssl_context=ctx, headers=_bearer(mtls_peer))
    assert not isinstance(caught.value, TransferError)
    # The unterminated body is refused as a whole; the next request is unaffected.
    outcome = send_instances(mtls_peer.web.dicomweb, objects[1:], ssl_context=ctx, headers=_bearer(mtls_peer, "site.b"))
    assert outcome.stored == _uids(objects[1:])
    assert _stored(mtls_peer.web.archive) == set(_uids(objects[1:]))


# -- Orthanc (DICOMweb plugin) behind stunnel with mutual TLS -----------------------------------


@pytest.mark.slow  # Orthanc and stunnel as subprocesses
def test_orthanc_stores_a_study_and_ignores_the_provenance_part(orthanc_stow, pki) -> None:
    objects = ct_series(ALICE, n=3)
    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    manifest = b'{"format":"dicomguard-provenance/1"}'
    outcome = send_instances(orthanc_stow.url, iter(objects), ssl_context=ctx, provenance=manifest, timeout_s=30)
    assert outcome.http_status == 200 and outcome.provenance_sent
    assert outcome.all_stored(_uids(objects))
    assert orthanc_stow.sop_instance_uids() == set(_uids(objects))


@pytest.mark.slow
def test_orthanc_behind_stunnel_refuses_a_client_of_another_ca(orthanc_stow, pki, other_pki) -> None:
    ctx = client_context(pki.client.ca, other_pki.client.cert, other_pki.client.key)
    with pytest.raises(TlsFailure):
        send_instances(orthanc_stow.url, ct_series(ALICE, n=1), ssl_context=ctx, timeout_s=10)
    assert orthanc_stow.sop_instance_uids() == set()


# -- the network and the peer's state ------------------------------------------------------------


def test_a_receiver_that_is_down_is_retryable(pki) -> None:
    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    with pytest.raises(PeerUnreachable, match="refused") as caught:
        send_instances(f"https://127.0.0.1:{refused_port()}/dicomweb", ct_series(ALICE, n=1), ssl_context=ctx, timeout_s=5)
    assert caught.value.retryable and isinstance(caught.value, RetryableTransferError)


def test_a_peer_that_never_answers_times_out_retryably(scripted, pki) -> None:
    peer = scripted(mode="silent")
    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    with pytest.raises(PeerUnreachable, match="timed out"):
        send_instances(peer.url, ct_series(ALICE, n=1), ssl_context=ctx, timeout_s=0.5)


def test_a_connection_reset_while_sending_is_retryable(scripted, pki) -> None:
    peer = scripted(mode="reset")
    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    with pytest.raises(PeerUnreachable) as caught:
        send_instances(peer.url, ct_series(ALICE, n=20, size=256), ssl_context=ctx, timeout_s=10)
    assert caught.value.retryable


def test_a_peer_certificate_for_another_name_is_a_permanent_failure(scripted, pki) -> None:
    peer = scripted(server=issued_pem(pki.ca, ["archive.site-b.example"]))
    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    with pytest.raises(TlsFailure, match="mismatch"):
        send_instances(peer.url, ct_series(ALICE, n=1), ssl_context=ctx, timeout_s=10)
    assert peer.requests == []


@pytest.mark.parametrize(
    ("status", "headers", "expected", "retry_after"),
    [
        (503, {"Retry-After": "7"}, PeerBusy, 7.0),
        (429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, PeerBusy, 0.0),  # a date in the past: now
        (429, {"Retry-After": "9999999"}, PeerBusy, 86400.0),  # clamped to a day
        (500, {}, PeerBusy, None),
        (502, {"Retry-After": "soon"}, PeerBusy, None),
        (408, {}, PeerBusy, None),
        (413, {}, PayloadTooLarge, None),
        (415, {}, RequestRejected, None),
        (400, {}, RequestRejected, None),
        (501, {}, RequestRejected, None),
        (307, {"Location": "https://elsewhere.example/dicomweb/studies"}, RequestRejected, None),
    ],
)
def test_http_statuses_are_classified(scripted, pki, status, headers, expected, retry_after) -> None:
    peer = scripted(status=status, headers={"Content-Type": "application/json", **headers}, body=b'{"error":"scripted"}')
    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    with pytest.raises(expected) as caught:
        send_instances(peer.url, ct_series(ALICE, n=1), ssl_context=ctx, timeout_s=10)
    err = caught.value
    assert err.status == status and err.retryable is issubclass(expected, RetryableTransferError)
    assert getattr(err, "retry_after_s", None) == retry_after
    assert "scripted" in err.detail and "scripted" not in str(err)  # the peer's words go to detail only
    assert len(peer.requests) == 1  # a redirect is not followed


def test_a_401_sent_before_the_body_was_read_is_what_counts(scripted, pki) -> None:
    peer = scripted(status=401, mode="early", headers={"Content-Type": "application/json", "WWW-Authenticate": "Bearer"})
    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    with pytest.raises(NotAuthorized):
        send_instances(peer.url, ct_series(ALICE, n=30, size=512), ssl_context=ctx, timeout_s=10)


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("text/html", b"<html>ok</html>"),
        ("application/dicom+json", b"not json"),
        ("application/dicom+json", b'{"00081199": {"vr": "SQ", "Value": [1]}}'),
        ("application/dicom+json", b'{"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": ["x"]}}]}}'),
        ("application/dicom+json", b'{"00081199": {"vr": "SQ", "Value": [{"00081150": {"vr": "UI", "Value": ["1.2"]}}]}}'),
    ],
)
def test_an_answer_that_is_not_a_store_response_is_permanent(scripted, pki, ctype, body) -> None:
    peer = scripted(status=200, headers={"Content-Type": ctype}, body=body)
    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    with pytest.raises(ResponseNotUnderstood):
        send_instances(peer.url, ct_series(ALICE, n=1), ssl_context=ctx, timeout_s=10)


def test_warnings_and_other_failures_in_a_response(scripted, pki) -> None:
    body = (b'{"00081199": {"vr": "SQ", "Value": [{"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},'
            b' "00081155": {"vr": "UI", "Value": ["1.2.3.4"]}, "00081196": {"vr": "US", "Value": [45056]}}]},'
            b' "0008119A": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [272]}}]}}')
    peer = scripted(status=202, body=body)
    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    outcome = send_instances(peer.url, ct_series(ALICE, n=1), ssl_context=ctx, timeout_s=10)
    assert outcome.warnings["1.2.3.4"].reason == 0xB000 and outcome.stored == ["1.2.3.4"]
    assert [u.reason for u in outcome.unattributed] == [0x0110]
    assert not outcome.all_stored(["1.2.3.4"])


def test_bad_urls_and_reserved_headers_are_refused_before_connecting(pki) -> None:
    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    for url in ("http://127.0.0.1:1/dicomweb", "https://user:pw@127.0.0.1:1/dicomweb", "https://127.0.0.1:1/dicomweb?x=1", "https:///dicomweb"):
        with pytest.raises(ValueError):
            send_instances(url, [b"x"], ssl_context=ctx)
    for name in ("Content-Type", "transfer-encoding", "Host", "Content-Length"):
        with pytest.raises(ValueError):
            send_instances("https://127.0.0.1:1/dicomweb", [b"x"], ssl_context=ctx, headers={name: "x"})
    lax = ssl.create_default_context(cafile=str(pki.client.ca))
    lax.check_hostname = False
    with pytest.raises(ValueError, match="host name"):
        send_instances("https://127.0.0.1:1/dicomweb", [b"x"], ssl_context=lax)


def test_an_object_holding_the_boundary_abandons_the_request(scripted, pki, monkeypatch) -> None:
    monkeypatch.setattr(multipart_body, "new_boundary", lambda: "dicomguard-fixed")
    monkeypatch.setattr("dicomguard.transfer.stow_client.new_boundary", lambda: "dicomguard-fixed")
    peer = scripted()
    ctx = client_context(pki.client.ca, pki.client.cert, pki.client.key)
    smuggler = b"DICM\r\n--dicomguard-fixed\r\nContent-Type: application/dicom\r\n\r\nsmuggled"
    with pytest.raises(RetryableTransferError, match="boundary"):
        send_instances(peer.url, [ct_series(ALICE, n=1)[0], smuggler], ssl_context=ctx, timeout_s=10)
    peer.close()
    assert len(peer.requests) == 1 and not peer.requests[0].complete  # the body was left unterminated
