"""Pinned CLI of the ledger issue: verify, ledger checkpoint/witness/prove/check-proof/public-key."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dicomguard.cli.main import app
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of

runner = CliRunner()


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_verify_prove_witness_round_trip(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i, d in enumerate(ct_series(ALICE, n=2) + ct_series(BOB, n=1, seed=3)):
        (src / f"{i}.dcm").write_bytes(d)
    assert run("import", str(src)).exit_code == 0

    r = run("verify", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["ok"] and report["objects_checked"] == 3 and report["tree_size"] == 1 + 3  # the archive's creation, 3 objects

    witness_dir = tmp_path / "witness"
    r = run("ledger", "checkpoint", "--export", str(witness_dir))
    assert r.exit_code == 0
    (cp_file,) = witness_dir.iterdir()
    assert cp_file.read_text().splitlines()[1] == "5"  # and the first verify's record
    assert run("ledger", "witness", "--import", str(cp_file)).exit_code == 0

    key = tmp_path / "ledger.pub"
    assert run("ledger", "public-key", "--out", str(key)).exit_code == 0
    uid = dataset_of((src / "1.dcm").read_bytes()).SOPInstanceUID
    bundle = tmp_path / "proof.json"
    assert run("ledger", "prove", "--instance", uid, "--out", str(bundle)).exit_code == 0
    r = run("ledger", "check-proof", str(bundle), "--public-key", str(key), "--dicom", str(src / "1.dcm"), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["leaf"]["sop_instance_uid"] == uid
    r = run("ledger", "check-proof", str(bundle), "--public-key", str(key), "--dicom", str(src / "0.dcm"))
    assert r.exit_code == 1 and "does not verify" in r.output

    r = run("verify", "--since", str(cp_file), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["objects_checked"] == 0
    r = run("verify", "--sample", "2", "--trusted-checkpoint", str(cp_file), "--public-key", str(key), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["objects_checked"] == 2

    # tamper: delete a blob file; verify exits 1 and names the object
    blobs = [p for p in (home / "blobs").rglob("*") if p.is_file()]
    blobs[0].unlink()
    r = run("verify", "--json")
    assert r.exit_code == 1
    problems = json.loads(r.stdout)["problems"]
    assert [p["kind"] for p in problems] == ["blob-missing"]
