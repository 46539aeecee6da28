"""``dicomguard policy ...``, ``study ...`` and user/device policy attributes on the CLI (issue 5, point 3).

``policy test`` explains a decision (deciding policy ids, files, effect, the
attributes used) without printing PHI; ``policy check`` validates a folder
without starting; an invalid policy file in the home refuses to start the
archive (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dicomguard.app.archive import Archive
from dicomguard.cli.main import app
from dicomguard.crypto.blind_index import BlindField
from dicomguard.index.db import read_session
from dicomguard.index.models import Device, User
from dicomguard.policy.engine import install_default_policies
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, DEPARTMENT, ct_series

runner = CliRunner()

REFERRER = "REFERRER^QUENTINA"  # Referring Physician's Name of every generated object


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def decide(principal: str, action: str, resource: str, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = run("policy", "test", "--principal", principal, "--action", action, "--resource", resource, *extra, "--json")
    assert r.exit_code in (0, 1), r.output
    doc = json.loads(r.stdout)
    assert doc["allowed"] is (r.exit_code == 0)
    return r.exit_code, doc


def ids(doc: dict) -> list[str]:  # type: ignore[type-arg]
    return [p["id"] for p in doc["policies"]]


@pytest.fixture
def study(home: Path, tmp_path: Path) -> str:
    """One CT study of ALICE, imported by the operator: department RADIOLOGY from its header."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i, data in enumerate(ct_series(ALICE, n=2)):
        (folder / f"ct{i}.dcm").write_bytes(data)
    assert run("import", str(folder)).exit_code == 0
    (uid,) = [s["uid"] for s in json.loads(run("ls", "--json").stdout)]
    return uid


def _no_phi(text: str) -> None:
    for value in (ALICE.patient_id, ALICE.name, ALICE.name.split("^")[0], ALICE.accession, REFERRER, "QUENTINA"):
        assert value not in text, value


def test_policy_test_explains_allow_deny_labels_and_step_up(home: Path, study: str) -> None:
    assert run("user", "add", "dr.rad", "--role", "radiologist", "--department", DEPARTMENT).exit_code == 0
    assert run("user", "add", "dr.card", "--role", "radiologist", "--department", "CARDIOLOGY").exit_code == 0

    # same department: allowed, the deciding policy named with its file and effect
    code, doc = decide("user:dr.rad", "retrieve", f"study:{study}")
    assert code == 0 and doc["decision"] == "ALLOW"
    assert doc["policies"] == [{"id": "radiologist-read-own-department", "effect": "permit", "file": "radiologist.cedar",
                                "annotations": {"id": "radiologist-read-own-department"}}]
    assert doc["principal"]["attributes"]["department"] == DEPARTMENT and doc["principal"]["attributes"]["roles"] == ["radiologist"]
    assert doc["resource"]["attributes"]["department"] == DEPARTMENT and doc["resource"]["attributes"]["modalities"] == ["CT"]
    text = run("policy", "test", "--principal", "user:dr.rad", "--action", "retrieve", "--resource", f"study:{study}")
    assert text.exit_code == 0
    assert "ALLOW" in text.stdout and "radiologist-read-own-department" in text.stdout and "radiologist.cedar" in text.stdout
    _no_phi(text.stdout + json.dumps(doc))

    # another department: default deny, no deciding policy
    code, doc = decide("user:dr.card", "retrieve", f"study:{study}")
    assert code == 1 and doc["decision"] == "DENY" and doc["policies"] == [] and "default deny" in doc["reason"]
    text = run("policy", "test", "--principal", "user:dr.card", "--action", "query", "--resource", f"study:{study}")
    assert text.exit_code == 1 and "DENY" in text.stdout and "default deny" in text.stdout

    # a VIP label forbids, whatever permits; a clearance lifts it
    r = run("study", "label", study, "--add", "VIP", "--add", "teaching", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["labels"] == ["teaching", "vip"]
    code, doc = decide("user:dr.rad", "retrieve", f"study:{study}")
    assert code == 1 and ids(doc) == ["vip-needs-clearance"] and doc["policies"][0]["effect"] == "forbid"
    assert doc["policies"][0]["file"] == "guards.cedar" and doc["resource"]["attributes"]["labels"] == ["teaching", "vip"]
    assert run("user", "set", "dr.rad", "--clearance", "vip").exit_code == 0
    code, doc = decide("user:dr.rad", "retrieve", f"study:{study}")
    assert code == 0 and ids(doc) == ["radiologist-read-own-department"] and doc["principal"]["attributes"]["clearances"] == ["vip"]
    # break-glass for the study's patient: emergency read despite department and label, marked as such
    code, doc = decide("user:dr.card", "retrieve", f"study:{study}", "--emergency")
    assert code == 0 and ids(doc) == ["break-glass-emergency-read"] and doc["break_glass"] is True
    _no_phi(json.dumps(doc))
    assert run("study", "label", study, "--remove", "vip", "--remove", "teaching").exit_code == 0
    assert run("study", "label", study, "--add", "not a label!").exit_code == 2
    assert run("study", "label", "1.2.3.999", "--add", "vip").exit_code == 1

    # bulk retrieve step-up guard
    code, doc = decide("user:dr.rad", "retrieve", f"study:{study}", "--studies-in-window", "21")
    assert code == 1 and ids(doc) == ["step-up-bulk-retrieve"] and doc["step_up"] is True
    assert decide("user:dr.rad", "retrieve", f"study:{study}", "--studies-in-window", "21", "--mfa-age", "60")[0] == 0

    # moving the study to CARDIOLOGY swaps who reads it
    r = run("study", "department", study, "CARDIOLOGY", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"study_uid": study, "department": "CARDIOLOGY"}
    assert decide("user:dr.card", "query", f"study:{study}")[0] == 0
    assert decide("user:dr.rad", "query", f"study:{study}")[0] == 1
    assert run("study", "department", study, DEPARTMENT).exit_code == 0

    # step-up erase: an administrator needs a fresh TOTP; the Patient ID is never echoed
    code, doc = decide("user:admin", "erase", f"patient:{ALICE.patient_id}")
    assert code == 1 and ids(doc) == ["step-up-erase"] and doc["step_up"] is True
    assert doc["policies"][0]["annotations"]["step_up"] == "true"
    text = run("policy", "test", "--principal", "user:admin", "--action", "erase", "--resource", f"patient:{ALICE.patient_id}")
    assert text.exit_code == 1 and "step-up-erase" in text.stdout
    _no_phi(text.stdout + json.dumps(doc))
    code, doc = decide("user:admin", "erase", f"patient:{ALICE.patient_id}", "--mfa-age", "10")
    assert code == 0 and ids(doc) == ["admin-erase"] and doc["context"]["mfa_age"] == 10

    # the operator, other resources
    code, doc = decide("operator", "erase", f"patient:{ALICE.patient_id}")
    assert code == 0 and ids(doc) == ["operator-all"]
    assert decide("user:admin", "administer", "archive")[0] == 0
    assert decide("user:dr.rad", "audit-read", "audit-log")[0] == 1

    # usage errors exit 2 with a clear message
    r = run("policy", "test", "--principal", "user:dr.rad", "--action", "retrieve", "--resource", "study:1.2.3.999")
    assert r.exit_code == 2 and "unknown study" in r.output
    r = run("policy", "test", "--principal", "user:nobody", "--action", "retrieve", "--resource", f"study:{study}")
    assert r.exit_code == 2 and "nobody" in r.output
    r = run("policy", "test", "--principal", "user:dr.rad", "--action", "teleport", "--resource", f"study:{study}")
    assert r.exit_code == 2 and "unknown action" in r.output
    r = run("policy", "test", "--principal", "user:dr.rad", "--action", "erase", "--resource", "patient:NOBODY")
    assert r.exit_code == 2 and "unknown patient" in r.output
    r = run("policy", "test", "--principal", "someone", "--action", "query", "--resource", "archive")
    assert r.exit_code == 2


def test_devices_with_a_department(home: Path, study: str, tmp_path: Path) -> None:
    def add(ae: str, ops: str, *extra: str) -> None:
        r = run("device", "add", "--ae", ae, "--name", f"test {ae}", "--out", str(tmp_path / ae), "--operations", ops, *extra)
        assert r.exit_code == 0, r.output

    add("CARDWS", "echo,query,retrieve", "--department", "CARDIOLOGY")
    add("RADWS", "echo,query,retrieve", "--department", DEPARTMENT)
    add("PACS", "echo,query,retrieve")
    add("CTSTORE", "echo,store")
    listed = {d["ae_title"]: d for d in json.loads(run("device", "list", "--json").stdout)}
    assert listed["CARDWS"]["department"] == "CARDIOLOGY" and listed["PACS"]["department"] is None
    with Archive.open(home, PASSPHRASE) as archive, read_session(archive.ctx.engine) as s:
        assert s.get(Device, "RADWS").department == DEPARTMENT  # type: ignore[union-attr]

    code, doc = decide("device:CARDWS", "query", f"study:{study}")
    assert code == 1 and "default deny" in doc["reason"] and doc["principal"]["attributes"] == {
        "operations": ["echo", "query", "retrieve"], "department": "CARDIOLOGY"}
    code, doc = decide("device:RADWS", "retrieve", f"study:{study}")
    assert code == 0 and ids(doc) == ["device-retrieve"] and doc["policies"][0]["file"] == "devices.cedar"
    assert ids(decide("device:PACS", "query", f"study:{study}")[1]) == ["device-query"]  # archive-wide peer
    assert decide("device:CTSTORE", "query", f"study:{study}")[0] == 1
    assert ids(decide("device:CTSTORE", "store", "archive")[1]) == ["device-store"]
    r = run("policy", "test", "--principal", "device:NOSUCH", "--action", "query", "--resource", f"study:{study}")
    assert r.exit_code == 2 and "no device" in r.output


def test_user_attributes_are_stored_as_tokens_and_round_trip(home: Path, study: str) -> None:
    r = run("user", "add", "dr.ref", "--role", "referring_physician", "--department", "WARD7", "--site", "north",
            "--modality", "ct", "--modality", "US", "--referring-name", "referrer^quentina", "--clearance", "VIP", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["name"] == "dr.ref" and doc["department"] == "WARD7" and doc["password"] and doc["totp_secret"]
    with Archive.open(home, PASSPHRASE) as archive:
        token = archive.ctx.indexer.token(BlindField.REFERRING_PHYSICIAN, REFERRER).hex()
        with read_session(archive.ctx.engine) as s:
            stored = s.scalar(select(User.attributes).where(User.name == "dr.ref"))
    assert stored is not None
    assert json.loads(stored) == {"site": "north", "modalities": ["CT", "US"], "referring_token": token, "clearances": ["vip"]}
    assert "REFERRER" not in stored.upper() and "QUENTINA" not in stored.upper()
    assert doc["attributes"]["referring_token"] == token and "QUENTINA" not in r.stdout.upper()
    listed = {u["name"]: u for u in json.loads(run("user", "list", "--json").stdout)}
    assert listed["dr.ref"]["attributes"]["referring_token"] == token

    # the study's Referring Physician's Name matches the account's (as keyed hashes)
    code, decision = decide("user:dr.ref", "retrieve", f"study:{study}")
    assert code == 0 and ids(decision) == ["referring-physician-own-patients"]
    assert decision["resource"]["attributes"]["referring_token"] == token
    _no_phi(json.dumps(decision))

    # user set: changes only what is given; the web layer reads the same attributes
    r = run("user", "set", "dr.ref", "--referring-name", "OTHER^DOCTOR", "--site", "", "--json")
    assert r.exit_code == 0, r.output
    changed = json.loads(r.stdout)["attributes"]
    assert changed["department"] == "WARD7" and "site" not in changed and changed["modalities"] == ["CT", "US"]
    assert changed["referring_token"] != token
    assert decide("user:dr.ref", "retrieve", f"study:{study}")[0] == 1
    assert run("user", "set", "dr.ref", "--clear-modalities", "--clear-clearances", "--department", "").exit_code == 0
    from dicomguard.identity.users import decode_attributes

    with Archive.open(home, PASSPHRASE) as archive, read_session(archive.ctx.engine) as s:
        user = s.get(User, "dr.ref")
        assert user is not None and user.department is None
        assert decode_attributes(user.attributes) == {"referring_token": changed["referring_token"]}

    assert run("user", "set", "nobody", "--site", "x").exit_code == 1
    assert run("user", "set", "dr.ref").exit_code == 2  # nothing to change
    assert run("user", "set", "dr.ref", "--modality", "C T").exit_code == 2
    assert run("user", "add", "dr.bad", "--role", "radiologist", "--clearance", "no way").exit_code == 2


# -- check / list / refusing to start -------------------------------------------------


BROKEN = {
    "syntax": ("permit (principal, action, resource", "does not parse"),
    "type": ('permit (principal is User, action == Action::"query", resource is Study) when { principal.nonexistent == "x" };',
             "does not validate"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_policy_check_names_the_broken_file(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "policies"
    install_default_policies(folder)
    r = run("policy", "check", str(folder), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["valid"] is True
    assert [p["id"] for p in doc["files"]["radiologist.cedar"]] == ["radiologist-read-own-department"]
    assert {"id": "step-up-erase", "effect": "forbid", "file": "guards.cedar",
            "annotations": {"id": "step-up-erase", "step_up": "true"}} in doc["files"]["guards.cedar"]
    text = run("policy", "check", str(folder))
    assert text.exit_code == 0 and "radiologist-read-own-department" in text.stdout

    text, message = BROKEN[kind]
    (folder / "zz-local.cedar").write_text(text)
    r = run("policy", "check", str(folder))
    assert r.exit_code == 2 and "zz-local.cedar" in r.output and message in r.output
    r = run("policy", "check", str(folder), "--json")
    assert r.exit_code == 2 and json.loads(r.stdout)["valid"] is False
    assert run("policy", "check", str(tmp_path / "nowhere")).exit_code == 2


def test_broken_policy_in_the_home_refuses_to_start(home: Path) -> None:
    assert run("policy", "check").exit_code == 0  # default: HOME/policies
    listed = {p["id"]: p for p in json.loads(run("policy", "list", "--json").stdout)}
    assert listed["step-up-erase"]["annotations"]["step_up"] == "true" and listed["operator-all"]["file"] == "00-operator.cedar"
    assert listed["break-glass-emergency-read"]["effect"] == "permit"
    assert run("user", "list").exit_code == 0

    (home / "policies" / "zz-local.cedar").write_text(BROKEN["type"][0])
    for args in (("user", "list"), ("ls",), ("policy", "test", "--principal", "operator", "--action", "administer", "--resource", "archive")):
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "zz-local.cedar" in r.output and "does not validate" in r.output
    r = run("policy", "check")
    assert r.exit_code == 2 and "zz-local.cedar" in r.output
    (home / "policies" / "zz-local.cedar").unlink()
    assert run("user", "list").exit_code == 0
