"""De-identified release through the archive: ``deid`` on files, ``export --deidentify``, re-identification; each decided and recorded."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dicomguard.app.archive import Archive
from dicomguard.cli.main import app as cli_app
from dicomguard.core.access import AccessDenied, Principal, PrincipalKind
from dicomguard.deid.options import PRESETS
from dicomguard.index.db import read_session
from dicomguard.index.models import LedgerLeaf
from tests.audit.conftest import entries
from tests.conftest import PASSPHRASE
from tests.deidentification import phi_data
from tests.deidentification.burned_in import ECHO_TOKENS, echo_cine

runner = CliRunner()


def cli(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(cli_app, list(args), catch_exceptions=False)


def _spellings(value: str) -> set[bytes]:
    return {v.encode() for v in (value, value.upper(), value.replace("^", " "), value.upper().replace("^", " "))}


def _assert_no_phi(folder: Path, extra: tuple[str, ...] = ()) -> None:
    needles = set().union(*(_spellings(v) for v in (*phi_data.PLANTED, *extra)))
    for path in folder.rglob("*.dcm"):
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle!r} left in {path.name}"


def _dcmdump_reads(path: Path) -> None:
    if shutil.which("dcmdump") is None:
        pytest.skip("dcmtk's dcmdump is not installed")
    result = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and "E:" not in result.stderr, result.stderr


@pytest.fixture
def study_files(tmp_path: Path) -> Path:
    study = phi_data.make_study(count=3)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, ds in enumerate([*study.ct, study.sr]):
        (folder / f"obj{i}.dcm").write_bytes(phi_data.to_bytes(ds))
    cine, _ = echo_cine(frames=8)
    (folder / "echo.dcm").write_bytes(phi_data.to_bytes(cine))
    return folder


def _leaves(archive: Archive, event: str) -> list[dict]:
    with read_session(archive.ctx.engine) as s:
        docs = [json.loads(d) for d in s.scalars(select(LedgerLeaf.data).where(LedgerLeaf.kind == "event"))]
    return [d for d in docs if d.get("event") == event]


def test_deid_files_releases_clean_objects_and_records_the_release(home: Path, study_files: Path, tmp_path: Path,
                                                                   valid) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    r = cli("deid", str(study_files), "--out", str(out), "--preset", "research", "--project", "trial-a", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert len(summary["written"]) == 5 and summary["refused"] == []
    _assert_no_phi(out, ECHO_TOKENS)
    for path in out.rglob("*.dcm"):
        _dcmdump_reads(path)
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientID.startswith("DG-")
    provenance = json.loads((out / "deid-provenance.json").read_text())
    assert provenance["options"] == sorted(o.value for o in PRESETS["research"]) and len(provenance["objects"]) == 5
    with Archive.open(home, PASSPHRASE) as archive:
        [leaf] = _leaves(archive, "deidentified")
        assert leaf["pairs_sha256"] == provenance["pairs_sha256"] and leaf["released"] == 5 and leaf["refused"] == 0
        assert phi_data.PATIENT_ID not in json.dumps(leaf)  # the ledger never holds a Patient ID
        [export] = [e for e in entries(archive) if b"de-identified release" in e.xml]
        valid(export.xml)
        assert b"De-identified" in export.xml and phi_data.PATIENT_ID.encode() in export.xml  # sealed record names the source


def test_pseudonyms_are_stable_per_project_and_unlinkable_across_projects(home: Path, study_files: Path, tmp_path: Path) -> None:
    def names(project: str, run: str) -> set[str]:
        out = tmp_path / f"{project}-{run}"
        assert cli("deid", str(study_files), "--out", str(out), "--project", project, "--option", "clean-pixel-data").exit_code == 0
        return {str(p.relative_to(out)) for p in out.rglob("*.dcm")}

    first, again, other = names("trial-a", "1"), names("trial-a", "2"), names("trial-b", "1")
    assert first == again
    assert not {p.split("/")[0] for p in first} & {p.split("/")[0] for p in other}


def test_export_deidentified_then_reidentify(archive: Archive, tmp_path: Path) -> None:
    study = phi_data.make_study(count=2)
    for ds in [*study.ct, study.sr]:
        archive.operator.store.ingest(phi_data.to_bytes(ds))
    out = tmp_path / "export"
    r = cli("export", str(out), "--study", study.study_uid, "--deidentify", "--preset", "research", "--project", "registry")
    assert r.exit_code == 0, r.output
    _assert_no_phi(out)
    released = [pydicom.dcmread(p) for p in out.rglob("*.dcm")]
    assert len(released) == 3 and {d.StudyInstanceUID for d in released} != {study.study_uid}
    pseudonym = released[0].PatientID
    r = cli("deid", "--reidentify", pseudonym, "--project", "registry", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["patient_ids"] == [phi_data.PATIENT_ID]
    assert cli("deid", "--reidentify", pseudonym, "--project", "another").exit_code == 1
    events = [e["event"] for e in (_leaves(archive, "deidentified") + _leaves(archive, "reidentified") +
                                   _leaves(archive, "instances-accessed"))]
    assert events.count("deidentified") == 1 and events.count("reidentified") == 2


def test_a_bad_object_is_refused_by_name_and_the_rest_released(home: Path, study_files: Path, tmp_path: Path) -> None:
    good = (study_files / "obj0.dcm").read_bytes()
    (study_files / "truncated.dcm").write_bytes(good[: len(good) // 2])
    (study_files / "notes.txt").write_text("not DICOM")
    out = tmp_path / "out"
    r = cli("deid", str(study_files), "--out", str(out), "--option", "clean-pixel-data", "--json")
    assert r.exit_code == 1
    summary = json.loads(r.stdout)
    assert sorted(Path(f["source"]).name for f in summary["refused"]) == ["notes.txt", "truncated.dcm"]
    assert len(summary["written"]) == 5
    assert not list(out.rglob("*.part"))


def test_unknown_option_is_refused_before_anything_is_read(home: Path, study_files: Path, tmp_path: Path) -> None:
    r = cli("deid", str(study_files), "--out", str(tmp_path / "out"), "--option", "retain-everything")
    assert r.exit_code == 2 and "retain-everything" in r.output
    assert not (tmp_path / "out").exists()


def test_only_permitted_principals_release_or_reidentify(archive: Archive, tmp_path: Path) -> None:
    study = phi_data.make_study(count=2)
    archive.operator.store.ingest(phi_data.to_bytes(study.ct[0]))
    options = PRESETS["research"]
    for roles in (("radiologist",), ("researcher",), ("admin",)):
        services = archive.services(Principal(PrincipalKind.USER, f"u-{roles[0]}", frozenset(roles),
                                              attributes={"department": "radiology"}))
        with pytest.raises(AccessDenied):
            services.deid.export_study(study.study_uid, tmp_path / roles[0], options, "p")
        with pytest.raises(AccessDenied):
            services.deid.files([("x", phi_data.to_bytes(study.ct[0]))], tmp_path / roles[0], options, "p")
        with pytest.raises(AccessDenied):
            services.deid.reidentify("p", "DG-XXXX")
        assert not (tmp_path / roles[0]).exists()
