"""The backup commands as an operator runs them, a run killed with SIGKILL, and a target whose disk is full."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomguard.app.archive import Archive
from dicomguard.app.backup.snapshot import list_snapshots
from dicomguard.cli.main import app as cli_app
from dicomguard.storage.backup_targets import FolderTarget
from tests.backup.conftest import add_folder_target, load
from tests.conftest import PASSPHRASE
from tests.dicom_factory import BOB, ct_series

runner = CliRunner()


def cli(*args: str, **env: str):  # type: ignore[no-untyped-def]
    return runner.invoke(cli_app, list(args), env=env or None, catch_exceptions=False)


@pytest.fixture
def loaded(home: Path, tmp_path: Path) -> Path:
    add_folder_target(home, tmp_path / "nas")
    with Archive.open(home, PASSPHRASE) as archive:
        load(archive)
    return home


def test_run_list_drill_status_restore(loaded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = cli("backup", "run", "--json")
    assert r.exit_code == 0, r.output
    [summary] = json.loads(r.stdout)
    assert summary["ok"] and summary["objects"] == 6 and summary["new_objects"] == 6 and summary["seconds"] > 0
    listed = json.loads(cli("backup", "list", "--json").stdout)
    assert [s["snapshot"] for s in listed] == [summary["snapshot"]] and listed[0]["recorded_in_ledger"]
    drilled = cli("backup", "drill", "--json")
    assert drilled.exit_code == 0, drilled.output
    assert json.loads(drilled.stdout)[0]["problems"] == []
    status = cli("backup", "status")
    assert status.exit_code == 1  # one folder on the same kind of disk is not 3-2-1-1-0
    assert "NOT met  3 copies" in status.output and "met  0 errors" in status.output
    # restore from the folder alone, as after losing the home and its configuration
    new_home = tmp_path / "restored"
    restored = cli("restore", "--folder", str(tmp_path / "nas"), "--home", str(new_home), "--json")
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["objects"] == 6
    monkeypatch.setenv("DICOMGUARD_HOME", str(new_home))
    verified = cli("verify", "--json")
    assert verified.exit_code == 0 and json.loads(verified.stdout)["ok"]
    # a second restore into a home that now exists is refused, the home untouched
    again = cli("restore", "--folder", str(tmp_path / "nas"), "--home", str(new_home))
    assert again.exit_code == 1 and "never overwrites" in again.output


def test_restore_by_target_name_from_a_kept_configuration(loaded: Path, tmp_path: Path) -> None:
    assert cli("backup", "run").exit_code == 0
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "config.toml").write_text((loaded / "config.toml").read_text())
    r = cli("restore", "--target", "nas", "--config", str(kept / "config.toml"), "--home", str(tmp_path / "r2"))
    assert r.exit_code == 0, r.output
    unknown = cli("restore", "--target", "tape", "--config", str(kept / "config.toml"), "--home", str(tmp_path / "r3"))
    assert unknown.exit_code == 2 and "no backup target named 'tape'" in unknown.output
    wrong = cli("restore", "--folder", str(tmp_path / "nas"), "--home", str(tmp_path / "r4"),
                DICOMGUARD_PASSPHRASE="not the archive passphrase")
    assert wrong.exit_code == 1 and "no key vault copy opens" in wrong.output
    assert not (tmp_path / "r4").exists()


@pytest.mark.slow
def test_a_run_killed_mid_copy_leaves_earlier_snapshots_whole_and_the_next_run_completes(home: Path, tmp_path: Path) -> None:
    add_folder_target(home, tmp_path / "nas")
    with Archive.open(home, PASSPHRASE) as archive:
        load(archive)
        [first] = archive.operator.backups.run()
        assert first.ok
        for d in ct_series(BOB, n=60, size=512, seed=31):  # about 30 MB of new blobs for the next run
            archive.operator.store.ingest(d)
    blobs = tmp_path / "nas" / "blobs"
    before = len(list(blobs.iterdir()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "DICOMGUARD_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "dicomguard", "backup", "run"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and len(list(blobs.iterdir())) <= before + 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    target = FolderTarget("nas", tmp_path / "nas")
    assert list_snapshots(target) == [first.result.snapshot_id]  # type: ignore[union-attr]  # nothing half-done looks complete
    with Archive.open(home, PASSPHRASE) as archive:
        [report] = archive.operator.backups.drill()
        assert report.ok and report.snapshot_id == first.result.snapshot_id, report.problems  # type: ignore[union-attr]
        [second] = archive.operator.backups.run()
        assert second.ok, second.error
        assert second.result and second.result.objects == 66
        [report] = archive.operator.backups.drill()
        assert report.ok and report.objects == 66, report.problems
    # what the killed writer left is invisible (never a name) and swept once it is an hour old
    assert not {n for n in target.names("blobs/") if ".partial-" in n}
    target.remove_partials(older_than_s=0)
    assert not [p for p in (tmp_path / "nas").rglob(".partial-*")]


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 3 MiB tmpfs: a real file system that fills up."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("cannot mount a tmpfs under CI (root is needed)")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_clearly_and_leaves_no_snapshot_that_looks_complete(home: Path, small_disk: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    add_folder_target(home, small_disk / "nas")
    with Archive.open(home, PASSPHRASE) as archive:
        for d in ct_series(BOB, n=12, size=512, seed=41):  # about 6 MB: more than the disk holds
            archive.operator.store.ingest(d)
        [outcome] = archive.operator.backups.run()
        assert not outcome.ok and "not enough space" in (outcome.error or "") and "nothing was written" in (outcome.error or "")
        # the same when the disk fills during the copy (its free space looked sufficient when the run began)
        monkeypatch.setattr(FolderTarget, "free_bytes", lambda self: 10**12)
        [outcome] = archive.operator.backups.run()
        assert not outcome.ok and "no space left" in (outcome.error or ""), outcome.error
        status = archive.operator.backups.status()
        assert status.targets[0].last_failure is not None and "space" in (status.targets[0].last_failure_reason or "")
        assert status.targets[0].last_backup is None
    target = FolderTarget("nas", small_disk / "nas")
    assert list_snapshots(target) == []
    assert not [p for p in (small_disk / "nas").rglob(".partial-*")]
