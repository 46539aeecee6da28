"""``serve`` runs backups and drills on schedule, raises a Security Alert for a failing or overdue target, and exports gauges."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from dicomguard.app.archive import Archive
from dicomguard.index.db import read_session
from dicomguard.index.models import BackupRun, LedgerLeaf
from tests.backup.conftest import add_folder_target, load
from tests.conftest import PASSPHRASE
from tests.serve_process import serve_process, stop_gracefully
from tests.web.conftest import start_server


def _schedule(home: Path, every_hours: float, drill_every_days: float) -> None:
    config = home / "config.toml"
    text = re.sub(r"(?m)^every_hours = .*$", f"every_hours = {every_hours}", config.read_text())
    text = re.sub(r"(?m)^drill_every_days = .*$", f"drill_every_days = {drill_every_days}", text)
    config.write_text(text)


@pytest.mark.slow
def test_serve_backs_up_drills_and_alerts_on_schedule(home: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the broken target's folder should be")
    add_folder_target(home, tmp_path / "nas")
    add_folder_target(home, blocker / "nas", name="broken")
    _schedule(home, every_hours=0.0005, drill_every_days=0.00003)  # 1.8 s and 2.6 s
    with Archive.open(home, PASSPHRASE) as archive:
        load(archive)
    with serve_process() as proc:
        deadline = time.monotonic() + 90
        kinds: set[tuple[str, str, bool]] = set()
        while time.monotonic() < deadline:
            with Archive.open(home, PASSPHRASE) as archive, read_session(archive.ctx.engine) as s:
                kinds = {(r.target, r.kind, r.ok) for r in s.scalars(select(BackupRun))}
                events = [json.loads(d)["event"] for d in s.scalars(select(LedgerLeaf.data).where(LedgerLeaf.kind == "event"))]
            if {("nas", "backup", True), ("nas", "drill", True), ("broken", "backup", False)} <= kinds and "backup-failed" in events:
                break
            time.sleep(0.5)
        stop_gracefully(proc)
    assert {("nas", "backup", True), ("nas", "drill", True), ("broken", "backup", False)} <= kinds
    assert events.count("backup-completed") >= 1 and events.count("backup-drilled") >= 1 and "backup-failed" in events


def test_metrics_export_backup_gauges(archive, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    add_folder_target(home, tmp_path / "nas")
    with Archive.open(home, PASSPHRASE) as configured:
        load(configured)
        assert configured.operator.backups.run()[0].ok
        web, stop = start_server(configured)
        try:
            with web.http(web.token("sec.sam", "security_officer")) as http:
                body = http.get("/metrics").text
            with web.http(web.token("dr.rita", "radiologist")) as http:
                assert http.get("/metrics").status_code == 403
        finally:
            stop()
    line = next(ln for ln in body.splitlines() if ln.startswith('dicomguard_backup_last_success_timestamp_seconds{target="nas"}'))
    assert abs(float(line.split()[-1]) - time.time()) < 300
    assert 'dicomguard_backup_overdue{target="nas"} 1' in body  # never drilled yet
    assert "dicomguard_backup_rules_met 0" in body  # one folder, never drilled: no 3-2-1-1-0 rule is met
