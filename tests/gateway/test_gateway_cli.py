"""``dicomguard gateway`` subcommands and start-up refusals (in-process, both index backends)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from dicomguard.cli.main import app
from tests.gateway.peers import PkiFiles, free_port

runner = CliRunner()


def test_allow_list_list_deny(home: Path) -> None:
    assert runner.invoke(app, ["gateway", "allow", "--ae", "CT_ROOM2", "--ip", "10.1.2.3"]).exit_code == 0
    assert "already allowed" in runner.invoke(app, ["gateway", "allow", "--ae", "CT_ROOM2", "--ip", "10.1.2.3"]).output
    listed = runner.invoke(app, ["gateway", "list", "--json"])
    assert [(e["ae_title"], e["ip"]) for e in json.loads(listed.stdout)] == [("CT_ROOM2", "10.1.2.3")]
    assert "CT_ROOM2" in runner.invoke(app, ["gateway", "list"]).stdout
    assert runner.invoke(app, ["gateway", "deny", "--ae", "CT_ROOM2", "--ip", "10.1.2.4"]).exit_code == 1
    assert runner.invoke(app, ["gateway", "deny", "--ae", "CT_ROOM2"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["gateway", "list", "--json"]).stdout) == []
    bad = runner.invoke(app, ["gateway", "allow", "--ae", "CT_ROOM2", "--ip", "10.1.2.0/24"])
    assert bad.exit_code == 2 and "not an IP address" in bad.output


def test_status_before_any_run(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DICOMGUARD_HOME", str(tmp_path))  # status reads files only: no archive, no passphrase
    monkeypatch.delenv("DICOMGUARD_PASSPHRASE")
    report = json.loads(runner.invoke(app, ["gateway", "status", "--json"]).stdout)
    assert report["running"] is False and report["state"] == "never started" and report["queue_length"] == 0
    assert "never started" in runner.invoke(app, ["gateway", "status"]).stdout


def test_requeue_with_nothing_dead(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DICOMGUARD_HOME", str(tmp_path))
    result = runner.invoke(app, ["gateway", "requeue"])
    assert result.exit_code == 0 and "0 dead letters" in result.output


def _run(*extra: str, pki: PkiFiles) -> tuple[int, str]:
    args = ["gateway", "--upstream", "127.0.0.1:1", "--upstream-ae", "UP", "--cert", str(pki.client_cert),
            "--key", str(pki.client_key), "--ca", str(pki.ca), "--listen", f"127.0.0.1:{free_port()}", *extra]
    result = runner.invoke(app, args)
    return result.exit_code, result.output


def test_refuses_to_start_insecurely(sqlite_home: Path, test_pki: PkiFiles, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["gateway", "--upstream", "127.0.0.1:1", "--upstream-ae", "UP"])
    assert missing.exit_code == 2 and "--cert" in missing.output and "mutual TLS" in missing.output
    code, output = _run("--listen", "0.0.0.0:11113", pki=test_pki)
    assert code == 2 and "one interface" in output
    loose = tmp_path / "loose.key"
    loose.write_bytes(test_pki.client_key.read_bytes())
    os.chmod(loose, 0o644)
    code, output = _run("--key", str(loose), pki=test_pki)
    assert code == 2 and "chmod 600" in output
    code, output = _run("--ca", str(tmp_path / "absent.pem"), pki=test_pki)
    assert code == 2 and "cannot read TLS files" in output
