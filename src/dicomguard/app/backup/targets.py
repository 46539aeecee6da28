"""The backup targets the settings name (``[[backup.target]]``)."""

from __future__ import annotations

from pathlib import Path

from dicomguard.app.stores import s3_bucket
from dicomguard.config import BackupTargetSettings, Settings, home_relative
from dicomguard.errors import ConfigurationError
from dicomguard.storage.backup_targets import BackupTarget, FolderTarget, S3Target


def open_target(t: BackupTargetSettings, home: Path) -> BackupTarget:
    if t.kind == "folder":
        return FolderTarget(t.name, home_relative(home, t.location))
    return S3Target(t.name, s3_bucket(t.s3, home), t.immutable_days)


def target_settings(settings: Settings, name: str | None) -> list[BackupTargetSettings]:
    """The named target, or all of them; a clear error when none is configured or the name is unknown."""
    targets = list(settings.backup.target)
    if not targets:
        raise ConfigurationError("no backup target is configured ([[backup.target]] in config.toml)")
    if name is None:
        return targets
    chosen = [t for t in targets if t.name == name]
    if not chosen:
        raise ConfigurationError(f"no backup target named {name!r} (configured: {', '.join(t.name for t in targets)})")
    return chosen
