"""Backups on real targets: a folder (and a size-limited tmpfs for the full-disk case), and SeaweedFS with Object Lock."""

from __future__ import annotations

from pathlib import Path

from dicomguard.app.archive import Archive
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, BOB, ct_series, us_multiframe
from tests.storage.conftest import seaweedfs  # noqa: F401  (the session's S3 server)


def add_folder_target(home: Path, folder: Path, name: str = "nas", **extra: object) -> None:
    lines = [f'\n[[backup.target]]\nname = "{name}"\nkind = "folder"\nlocation = "{folder}"']
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in extra.items()]
    with (home / "config.toml").open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def add_s3_target(home: Path, server, bucket: str, name: str = "locked", immutable_days: int = 1, **extra: object) -> None:  # type: ignore[no-untyped-def]
    creds = server.credentials_file(home / f"{name}-s3.credentials")
    lines = [f'\n[[backup.target]]\nname = "{name}"\nkind = "s3"\nimmutable_days = {immutable_days}']
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in extra.items()]
    lines += ["[backup.target.s3]", f'endpoint = "{server.https_endpoint}"', f'bucket = "{bucket}"', f'credentials_file = "{creds}"',
              f'ca_file = "{server.ca_file}"']
    with (home / "config.toml").open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def load(archive: Archive) -> tuple[list[str], list[str]]:
    """Alice: a CT series; Bob: a CT series and an echo cine. Returns their SOP Instance UIDs."""
    alice = [archive.operator.store.ingest(d).sop_instance_uid for d in ct_series(ALICE, n=3)]
    bob = [archive.operator.store.ingest(d).sop_instance_uid for d in ct_series(BOB, n=2, seed=9)]
    bob.append(archive.operator.store.ingest(us_multiframe(BOB, frames=6)).sop_instance_uid)
    return alice, bob


def reopen(home: Path, passphrase: str = PASSPHRASE) -> Archive:
    return Archive.open(home, passphrase)
