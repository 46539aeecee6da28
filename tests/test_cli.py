"""The pinned CLI interface: names, --json output and exit codes (0 ok, 1 rejected/failed, 2 usage/config)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomguard.cli.main import app
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of, us_multiframe

runner = CliRunner()


def run(*args: str, **kw):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False, **kw)


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_db_url: str) -> Path:
    home = tmp_path / "cli-home"
    monkeypatch.setenv("DICOMGUARD_HOME", str(home))
    if empty_db_url:
        monkeypatch.setenv("DICOMGUARD_DATABASE__URL", empty_db_url)
    return home


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "incoming" / "nested"
    folder.mkdir(parents=True)
    for i, data in enumerate(ct_series(ALICE, n=3)):
        (folder / f"ct{i}.dcm").write_bytes(data)
    (folder.parent / "us.dcm").write_bytes(us_multiframe(BOB))
    return folder.parent


def test_init_prints_one_time_secrets_and_refuses_to_overwrite(fresh_home: Path, empty_db_url: str) -> None:
    r = run("init", "--admin", "alice", "--json", *(["--database", empty_db_url] if empty_db_url else []))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc) == {"home", "admin", "password", "totp_secret", "recovery_key"}
    assert doc["admin"] == "alice" and len(doc["password"]) >= 16 and len(doc["totp_secret"]) >= 16
    assert doc["recovery_key"].startswith("DGRK-")
    from dicomguard.crypto.recovery import parse_key

    recovery = parse_key(doc["recovery_key"])
    # the secrets are not written anywhere in the home (the recovery key's public half is)
    for p in fresh_home.rglob("*"):
        if p.is_file():
            raw = p.read_bytes()
            assert doc["password"].encode() not in raw and doc["totp_secret"].encode() not in raw
            assert recovery not in raw and recovery.hex().encode() not in raw
    again = run("init", "--admin", "bob")
    assert again.exit_code == 2 and "refusing to overwrite" in again.output


def test_init_refuses_a_short_passphrase(fresh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMGUARD_PASSPHRASE", "short")
    r = run("init", "--admin", "alice")
    assert r.exit_code == 2 and "at least 12" in r.output
    assert not fresh_home.exists()


def test_import_ls_show_export_erase(fresh_home: Path, files: Path, tmp_path: Path, empty_db_url: str) -> None:
    assert run("init", "--admin", "alice", *(["--database", empty_db_url] if empty_db_url else [])).exit_code == 0
    (files / "notes.txt").write_text("not dicom")
    r = run("import", str(files), "--json")
    assert r.exit_code == 1, "a rejected file makes the exit code 1"
    summary = json.loads(r.stdout)
    assert summary["stored"] == 4 and summary["duplicate"] == 0 and summary["rejected"] == 1
    assert summary["rejections"][0]["reason"] == "not-dicom" and summary["rejections"][0]["path"].endswith("notes.txt")
    (files / "notes.txt").unlink()
    r = run("import", str(files), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["duplicate"] == 4

    studies = json.loads(run("ls", "--json").stdout)
    assert sorted(s["patient_id"] for s in studies) == sorted([ALICE.patient_id, BOB.patient_id])
    patients = json.loads(run("ls", "patients", "--name", "zebra*", "--json").stdout)
    assert [p["patient_id"] for p in patients] == [ALICE.patient_id]
    ct_study = next(s for s in studies if s["patient_id"] == ALICE.patient_id)
    assert ct_study["instances"] == 3 and ct_study["modalities"] == ["CT"]
    series = json.loads(run("ls", "series", "--study", ct_study["uid"], "--json").stdout)
    assert len(series) == 1 and series[0]["instances"] == 3
    instances = json.loads(run("ls", "instances", "--series", series[0]["uid"], "--json").stdout)
    assert len(instances) == 3 and all(len(i["pixel_sha256"]) == 64 for i in instances)
    shown = json.loads(run("show", ct_study["uid"], "--json").stdout)
    assert shown["level"] == "study" and len(shown["series_list"]) == 1
    assert run("show", "1.2.3.999", "--json").exit_code == 1

    out = tmp_path / "export"
    r = run("export", "--study", ct_study["uid"], str(out), "--json")
    assert r.exit_code == 0
    written = json.loads(r.stdout)["written"]
    assert len(written) == 3
    originals = {dataset_of(p.read_bytes()).SOPInstanceUID: p.read_bytes() for p in (files / "nested").iterdir()}
    for path in written:
        data = Path(path).read_bytes()
        assert data[128:] == originals[dataset_of(data).SOPInstanceUID][128:]
    assert run("export", str(out)).exit_code == 2  # no selector: usage error

    assert run("erase", "--patient", ALICE.patient_id, "--reason", "test").exit_code == 2  # needs --yes
    r = run("erase", "--patient", ALICE.patient_id, "--reason", "GDPR request", "--yes", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["instances"] == 3
    assert run("export", "--study", ct_study["uid"], str(tmp_path / "again")).exit_code == 1
    assert [s["patient_id"] for s in json.loads(run("ls", "--json").stdout)] == [BOB.patient_id]
    assert run("erase", "--patient", "NOBODY", "--reason", "x", "--yes").exit_code == 1


def test_keys_rotate_and_wrong_passphrase(fresh_home: Path, files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("init", "--admin", "alice").exit_code == 0
    assert run("import", str(files)).exit_code == 0
    r = run("keys", "rotate")
    assert r.exit_code == 0 and "re-wrapped" in r.output
    assert len(json.loads(run("ls", "instances", "--json").stdout)) == 4
    monkeypatch.setenv("DICOMGUARD_PASSPHRASE", "definitely the wrong one")
    r = run("ls")
    assert r.exit_code == 2 and "cannot unseal" in r.output


def test_passphrase_from_file_must_be_private(fresh_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import PASSPHRASE

    assert run("init", "--admin", "alice").exit_code == 0
    monkeypatch.delenv("DICOMGUARD_PASSPHRASE")
    secret = tmp_path / "pass"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o644)
    monkeypatch.setenv("DICOMGUARD_PASSPHRASE_FILE", str(secret))
    r = run("ls")
    assert r.exit_code == 2 and "readable by others" in r.output
    secret.chmod(0o600)
    assert run("ls").exit_code == 0


def test_commands_without_a_home_are_configuration_errors(fresh_home: Path) -> None:
    r = run("ls")
    assert r.exit_code == 2 and "dicomguard init" in r.output


def test_keys_rotate_can_change_the_passphrase(fresh_home: Path, files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("init", "--admin", "alice").exit_code == 0
    assert run("import", str(files)).exit_code == 0
    assert run("keys", "rotate", "--change-passphrase").exit_code == 2  # needs DICOMGUARD_NEW_PASSPHRASE
    monkeypatch.setenv("DICOMGUARD_NEW_PASSPHRASE", "a brand new long passphrase")
    r = run("keys", "rotate", "--change-passphrase")
    assert r.exit_code == 0, r.output
    assert run("ls").exit_code == 2  # the old passphrase no longer opens the archive
    monkeypatch.setenv("DICOMGUARD_PASSPHRASE", "a brand new long passphrase")
    assert len(json.loads(run("ls", "instances", "--json").stdout)) == 4
