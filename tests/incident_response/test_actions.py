"""Every incident route and the two-action CLI commands leave exactly what they say (one leaf per action)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from dicomguard.cli.main import app as cli_app
from tests.identity.conftest import add_user
from tests.test_every_action_recorded import _check_nothing, _check_one_action, _state
from tests.web.conftest import start_server


def _leaves(archive, before, n: int) -> None:  # type: ignore[no-untyped-def]
    assert _state(archive)[0] - before[0] == n


def test_each_incident_route_is_one_recorded_action(archive) -> None:  # type: ignore[no-untyped-def]
    officer = add_user(archive, "sec.sam", "security_officer")
    add_user(archive, "dr.z", "radiologist", "RADIOLOGY")
    server, stop = start_server(archive)
    try:
        with server.http() as http:
            login = http.post("/auth/login", json={"username": officer.name, "password": officer.password, "totp": officer.code()})
            bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
            before = _state(archive)
            opened = http.post("/incidents", json={"title": "night-time reads", "severity": "high"}, headers=bearer)
            assert opened.status_code == 201, opened.text
            _check_one_action(archive, before, 1, "POST /incidents")
            number = opened.json()["id"]
            for path in ("/incidents", f"/incidents/{number}"):
                before = _state(archive)
                assert http.get(path, headers=bearer).status_code == 200
                _check_nothing(archive, before, f"GET {path}")
            before = _state(archive)
            contained = http.post(f"/incidents/{number}/contain", json={"user": "dr.z", "reason": "reads at 3 am"}, headers=bearer)
            assert contained.status_code == 200, contained.text
            _check_one_action(archive, before, 1, "POST contain")
            assert http.post(f"/incidents/{number}/contain", json={"user": "dr.z", "device": "X", "reason": "both"},
                             headers=bearer).status_code == 400
            before = _state(archive)
            since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
            scoped = http.post(f"/incidents/{number}/scope", json={"user": "dr.z", "since": since}, headers=bearer)
            assert scoped.status_code == 200 and scoped.json()["patients"] == 0, scoped.text
            _leaves(archive, before, 2)  # the audit-trail read and the incident step
            before = _state(archive)
            report = http.get(f"/incidents/{number}/report", params={"format": "hipaa-164.404"}, headers=bearer)
            assert report.status_code == 200, report.text
            _check_one_action(archive, before, 1, "GET report")
            before = _state(archive)
            assert http.post(f"/incidents/{number}/close", json={"reason": "contained"}, headers=bearer).status_code == 400  # in force
            _check_nothing(archive, before, "refused close")
            before = _state(archive)
            step = contained.json()["step"]
            assert http.post(f"/incidents/{number}/release", json={"step": step, "reason": "cleared"}, headers=bearer).status_code == 200
            _check_one_action(archive, before, 1, "POST release")
            before = _state(archive)
            assert http.post(f"/incidents/{number}/close", json={"reason": "contained"}, headers=bearer).status_code == 200
            _check_one_action(archive, before, 1, "POST close")
            assert http.post(f"/incidents/{number}/close", json={"reason": "contained"}, headers=bearer).status_code == 400
        with server.http(server.token("dr.other", "radiologist")) as http:
            assert http.get("/incidents").status_code == 403
            assert http.post("/incidents", json={"title": "x"}).status_code == 403
    finally:
        stop()


def test_incident_verify_records_the_verification_and_its_step(archive) -> None:  # type: ignore[no-untyped-def]
    number = archive.operator.incidents.open("is the archive intact?")
    before = _state(archive)
    result = CliRunner().invoke(cli_app, ["incident", "verify", str(number)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _leaves(archive, before, 2)
    assert archive.operator.incidents.show(number).steps[-1].kind == "verify"


def test_incident_rotate_keys_records_the_rotation_and_its_step(archive) -> None:  # type: ignore[no-untyped-def]
    number = archive.operator.incidents.open("a copy of the key file may have leaked")
    before = _state(archive)
    result = CliRunner().invoke(cli_app, ["incident", "rotate-keys", str(number)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _leaves(archive, before, 2)  # keys-rotated and the incident step
    step = archive.operator.incidents.show(number).steps[-1]
    assert step.kind == "rotate-keys" and step.detail["keys_rewrapped"] >= 3
