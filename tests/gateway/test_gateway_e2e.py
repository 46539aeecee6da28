"""End to end, real peers: dcmtk storescu (legacy modality, plaintext) -> gateway subprocess -> Orthanc (DICOM TLS).

Issue 4, point 4: an allow-listed modality stores in plaintext and the object
arrives upstream over mutual TLS; a non-listed AE title or address is refused
(A-ASSOCIATE-RJ, PS3.8 9.3.4) and nothing is queued; with the upstream down the
objects are acknowledged, queued encrypted, survive a gateway restart and all
arrive exactly once when the upstream comes back.
"""

from __future__ import annotations

import hashlib
import io
import json
import signal
import socket
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from typer.testing import CliRunner

from dicomguard.cli.main import app
from dicomguard.gateway.runner import SPOOL_SUBDIR
from tests.dicom_factory import ALICE, BOB, ct_series, us_multiframe
from tests.gateway.peers import GATEWAY_AE, MODALITY_AE, dcmtk, storescu, wait_until, write_objects

pytestmark = pytest.mark.slow  # the gateway with real modalities and upstreams

runner = CliRunner()


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _without_meta(part10: bytes) -> bytes:
    """The encoded dataset after the File Meta Information, which each receiver writes itself.

    PS3.10 7.1: preamble, "DICM", then (0002,0000) File Meta Information Group Length (UL).
    """
    assert part10[128:132] == b"DICM" and part10[132:138] == b"\x02\x00\x00\x00UL"
    return part10[144 + int.from_bytes(part10[140:144], "little") :]


def queued_files(home: Path) -> list[Path]:
    return sorted((home / "gateway-queue" / "items").glob("*.dgq"))


def test_allow_listed_modality_stores_plaintext_and_objects_arrive_over_tls(home, orthanc, gateway_factory, tmp_path):
    orthanc.start()
    cli("gateway", "allow", "--ae", MODALITY_AE, "--ip", "127.0.0.1")
    objects = ct_series(ALICE, n=3) + [us_multiframe(BOB)]
    files = write_objects(tmp_path / "modality", objects)
    gw = gateway_factory(home, orthanc.dicom_port)
    gw.start()

    result = storescu(gw.port, files)
    assert result.returncode == 0, result.stderr

    stored = wait_until(lambda: len(orthanc.instances()) == len(objects) and orthanc.sop_instance_uids(), 20, what="arrival upstream")
    for data in objects:
        uid = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
        upstream = orthanc.get(f"/instances/{stored[uid]}/file")
        assert _without_meta(upstream) == _without_meta(data)  # forwarded byte for byte
    assert len(stored) == len(objects)

    # Orthanc's DICOM port speaks TLS only: a plaintext association cannot even start,
    # so the objects above can only have arrived over TLS.
    plain = dcmtk("echoscu", "-aet", GATEWAY_AE, "-aec", "ORTHANC", "127.0.0.1", str(orthanc.dicom_port))
    assert plain.returncode != 0

    wait_until(lambda: gw.report()["delivered"] == len(objects), 5, what="status to count the deliveries")
    assert queued_files(home) == []
    assert gw.stop() == 0


def test_unlisted_ae_title_or_address_is_refused_and_nothing_is_queued(home, gateway_factory, tmp_path):
    cli("gateway", "allow", "--ae", MODALITY_AE, "--ip", "127.0.0.1")
    cli("gateway", "allow", "--ae", "OTHER_US", "--ip", "127.0.0.2")  # allowed, but only from 127.0.0.2
    files = write_objects(tmp_path / "modality", ct_series(ALICE, n=2))
    gw = gateway_factory(home, 1)  # no upstream needed: accepted objects would stay queued
    gw.start()

    for calling in ("STRANGER", "OTHER_US"):  # unknown title; known title from the wrong address
        result = storescu(gw.port, files, calling=calling)
        assert result.returncode != 0
        assert "Association Rejected" in result.stderr and "Calling AE Title Not Recognized" in result.stderr, result.stderr
        echo = dcmtk("echoscu", "-aet", calling, "-aec", GATEWAY_AE, "127.0.0.1", str(gw.port))
        assert echo.returncode != 0 and "Calling AE Title Not Recognized" in echo.stderr
    assert queued_files(home) == []
    wait_until(lambda: gw.report()["refused_associations"] == 4, 5, what="refusals to be counted")

    # Positive controls: the same title from its allowed source address, and the listed modality.
    ae = AE("OTHER_US")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", gw.port, ae_title=GATEWAY_AE, bind_address=("127.0.0.2", 0))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert storescu(gw.port, files[:1]).returncode == 0
    assert len(queued_files(home)) == 1

    # A modality removed from the list is refused from then on.
    cli("gateway", "deny", "--ae", MODALITY_AE)
    assert "Calling AE Title Not Recognized" in storescu(gw.port, files[:1]).stderr
    assert gw.stop() == 0
    log = gw.log()
    assert "'STRANGER' at 127.0.0.1 rejected: not allow-listed" in log
    for secret in ALICE.secrets():
        assert secret not in log


def test_upstream_down_then_back_everything_arrives_once_even_across_a_restart(home, orthanc, gateway_factory, tmp_path):
    cli("gateway", "allow", "--ae", MODALITY_AE, "--ip", "127.0.0.1")
    objects = ct_series(ALICE, n=5)
    files = write_objects(tmp_path / "modality", objects)
    gw = gateway_factory(home, orthanc.dicom_port)  # Orthanc not started: the upstream is down
    gw.start()

    result = storescu(gw.port, files)
    assert result.returncode == 0, result.stderr  # acknowledged: durably queued
    queued = queued_files(home)
    assert len(queued) == len(objects)
    wait_until(lambda: gw.report()["upstream_failures"] >= 2, 10, what="retries against the dead upstream")

    # Encrypted at rest: no identifying value in any queue file, no plaintext spool left.
    for path in queued:
        raw = path.read_bytes()
        for secret in ALICE.secrets():
            assert secret.encode() not in raw
        assert b"DICM" not in raw
    # The default spool is a private folder on the memory file system, empty once each object is queued.
    spool = Path("/dev/shm") / f"{SPOOL_SUBDIR}-{hashlib.sha256(str(home.absolute()).encode()).hexdigest()[:12]}"
    assert spool.stat().st_mode & 0o777 == 0o700 and list(spool.iterdir()) == []
    assert not (home / "gateway-queue" / "dicomguard-gateway-spool").exists()  # nothing plaintext under the home

    status = runner.invoke(app, ["gateway", "status", "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert report["running"] is True
    assert report["queue_length"] == len(objects)
    assert report["queue_bytes"] == sum(p.stat().st_size for p in queued)
    assert report["oldest_item_age_s"] is not None
    assert report["last_error"] and report["state"] == "backing-off"
    assert report["dead_letters"] == 0
    assert "backing-off" in runner.invoke(app, ["gateway", "status"]).stdout

    # Restart the gateway while the items are queued: they are still there and still delivered.
    assert gw.stop() == 0
    assert len(queued_files(home)) == len(objects)
    assert json.loads(runner.invoke(app, ["gateway", "status", "--json"]).stdout)["running"] is False
    gw2 = gateway_factory(home, orthanc.dicom_port)
    gw2.start()

    orthanc.start()  # the upstream comes back
    wait_until(lambda: queued_files(home) == [], 20, what="the queue to drain")
    stored = orthanc.sop_instance_uids()
    expected = {str(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID) for d in objects}
    assert set(stored) == expected  # everything arrived, nothing else
    wait_until(lambda: gw2.report()["delivered"] >= len(objects), 5, what="the status file to catch up")
    assert gw2.report()["delivered"] == len(objects)  # each sent (and confirmed) exactly once
    assert json.loads(orthanc.get("/statistics"))["CountInstances"] == len(objects)

    # Order preserved: Orthanc's change log lists the instances in the order the modality sent them.
    changes = json.loads(orthanc.get("/changes?limit=100"))["Changes"]
    arrived = [c["ID"] for c in changes if c["ChangeType"] == "NewInstance"]
    sent_order = [stored[str(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID)] for d in objects]
    assert arrived == sent_order
    assert gw2.stop() == 0


def test_pass_through_answers_with_the_upstream_and_keeps_nothing(sqlite_home, orthanc, gateway_factory, tmp_path):
    home = sqlite_home
    cli("gateway", "allow", "--ae", MODALITY_AE, "--ip", "127.0.0.1")
    objects = ct_series(ALICE, n=2)
    files = write_objects(tmp_path / "modality", objects)
    gw = gateway_factory(home, orthanc.dicom_port, ["--pass-through", "--spool", "memory"])
    gw.start()

    down = storescu(gw.port, files[:1], "-v")  # upstream down: the modality is told to retry later
    assert down.returncode != 0 and "Refused: OutOfResources" in down.stderr, down.stderr
    orthanc.start()
    up = storescu(gw.port, files)
    assert up.returncode == 0, up.stderr
    assert len(orthanc.instances()) == len(objects)  # confirmed upstream before the modality got Success
    assert not (home / "gateway-queue" / "items").exists() or queued_files(home) == []
    assert gw.stop() == 0


def test_sigterm_lets_an_open_association_finish_and_refuses_new_ones(sqlite_home, gateway_factory, tmp_path):
    home = sqlite_home
    cli("gateway", "allow", "--ae", MODALITY_AE, "--ip", "127.0.0.1")
    gw = gateway_factory(home, 1)
    gw.start()
    ae = AE(MODALITY_AE)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", gw.port, ae_title=GATEWAY_AE)
    assert assoc.is_established
    proc = gw.proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)

    wait_until(lambda: gw.report()["state"] == "stopping", 10, what="the gateway to start shutting down")
    with pytest.raises(ConnectionError):  # no longer accepting
        socket.create_connection(("127.0.0.1", gw.port), timeout=2).close()
    ds = pydicom.dcmread(io.BytesIO(ct_series(ALICE, n=1)[0]))
    assert assoc.send_c_store(ds).Status == 0x0000  # the store in flight is still taken in
    assoc.release()
    assert proc.wait(15) == 0
    assert len(queued_files(home)) == 1
    assert json.loads(gw.status_path.read_text())["state"] == "stopped"


def test_a_dicomguard_upstream_accepts_the_gateway_only_as_a_registered_device(sqlite_home, gateway_factory, tmp_path):
    """Upstream = dicomguard's own DIMSE-TLS service: the gateway is a device bound to its AE title (zero trust)."""
    from dicomguard.app.archive import Archive
    from dicomguard.app.home import init_home
    from dicomguard.dimse.server import DimseService
    from tests.conftest import PASSPHRASE
    from tests.gateway.peers import PkiFiles, private_file

    init_home(tmp_path / "upstream", PASSPHRASE, "admin")
    upstream = Archive.open(tmp_path / "upstream", PASSPHRASE)
    creds = upstream.operator.devices.add(GATEWAY_AE, "legacy gateway", operations=("echo", "store"))
    pki = PkiFiles(tmp_path / "gateway-device")
    pki.folder.mkdir()
    pki.client_cert.write_bytes(creds.cert_pem)
    private_file(pki.client_key, creds.key_pem or b"")
    pki.ca.write_bytes(creds.ca_pem)
    svc = DimseService(upstream, "127.0.0.1", 0)
    svc.start()
    try:
        cli("gateway", "allow", "--ae", MODALITY_AE, "--ip", "127.0.0.1")
        objects = ct_series(ALICE, n=2)
        files = write_objects(tmp_path / "modality", objects)
        gw = gateway_factory(sqlite_home, svc.port, pki=pki, upstream_ae=upstream.settings.archive.ae_title)
        gw.start()
        assert storescu(gw.port, files).returncode == 0
        wait_until(lambda: queued_files(sqlite_home) == [], 20, what="delivery to the dicomguard upstream")
        for data in objects:
            uid = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
            assert _without_meta(upstream.operator.retrieve.instance(uid).data) == _without_meta(data)

        # Revoke the gateway's device upstream: nothing more is accepted from it, and nothing is lost.
        upstream.operator.devices.revoke(GATEWAY_AE)
        time.sleep(1.2)  # the upstream re-reads revocation at most once a second per association (dimse.session)
        more = write_objects(tmp_path / "later", ct_series(ALICE, n=1, seed=5))
        assert storescu(gw.port, more).returncode == 0
        failures = gw.report()["upstream_failures"]
        wait_until(lambda: gw.report()["upstream_failures"] >= failures + 2, 10, what="refused deliveries")
        assert len(queued_files(sqlite_home)) == 1
        assert gw.stop() == 0
    finally:
        svc.stop(grace_s=1)
        upstream.close()
