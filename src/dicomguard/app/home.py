"""The archive's home folder: layout, ``init`` and sealed key files.

Layout::

    HOME/config.toml          settings (no secrets)
    HOME/keys/kek-<id>.sealed the KEK, sealed under the passphrase (argon2id)
    HOME/keys/recovery.pub    public half of the recovery key (its private half is printed once by init)
    HOME/blobs/               ciphertext blobs (storage.kind = "filesystem"; or an S3 bucket)
    HOME/index.db             SQLite index (embedded default; no plaintext PHI)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import inspect

from dicomguard.app.bootstrap import configure_libraries
from dicomguard.app.stores import create_blob_store
from dicomguard.config import (
    CONFIG_FILE,
    Settings,
    database_url,
    default_config_toml,
    load_settings,
)
from dicomguard.core.access import Principal
from dicomguard.core.events import SecurityConfigurationChanged
from dicomguard.core.keyring import PURPOSE_IDENTITY, Keyring
from dicomguard.crypto import recovery
from dicomguard.crypto.kek import KdfParams, Kek, check_passphrase_strength
from dicomguard.errors import ConfigurationError, HomeExistsError
from dicomguard.identity.users import NewUserSecrets, create_user
from dicomguard.index.db import make_engine, migrate, write_session
from dicomguard.index.models import WrappedKey
from dicomguard.pki.store import default_server_names, init_pki
from dicomguard.policy.engine import install_default_policies
from dicomguard.storage.filesystem import write_private_file

KEYS_DIR = "keys"


def sealed_kek_path(home: Path, kek_id: str) -> Path:
    return home / KEYS_DIR / f"kek-{kek_id}.sealed"


def recovery_public_path(home: Path) -> Path:
    return home / KEYS_DIR / "recovery.pub"


def recovery_public_key(home: Path) -> bytes | None:
    """The recovery key's public half, or None for a home made before recovery keys (``keys recovery-key`` adds one)."""
    try:
        raw = bytes.fromhex(recovery_public_path(home).read_text().strip())
    except FileNotFoundError:
        return None
    except ValueError:
        raise ConfigurationError(f"{recovery_public_path(home)} is damaged") from None
    if len(raw) != 32:
        raise ConfigurationError(f"{recovery_public_path(home)} is damaged")
    return raw


def write_recovery_key(home: Path) -> str:
    """Create the recovery key pair: the public half goes into the home, the printable private half is returned once."""
    printed, public = recovery.generate()
    write_private_file(recovery_public_path(home), public.hex().encode() + b"\n")
    return printed


def kdf_params(settings: Settings) -> KdfParams:
    k = settings.kdf
    return KdfParams(k.time_cost, k.memory_kib, k.parallelism)


@dataclass(frozen=True)
class InitResult:
    home: Path
    admin: NewUserSecrets
    recovery_key: str
    """Opens the archive's keys without the passphrase (restore); shown once, never stored in the home."""


def init_home(home: Path, passphrase: str, admin: str, database: str = "") -> InitResult:
    """Create a new archive home: config, sealed KEK, index schema, archive keys, first administrator.

    Refuses to touch an existing home or a database that already holds an archive.
    The creation is then the first record of the audit trail and the ledger (it
    cannot be recorded in its own transaction: the recorder's keys are created by it).
    """
    configure_libraries()
    if home.exists() and any(home.iterdir()):
        raise HomeExistsError(f"{home} exists and is not empty; refusing to overwrite it")
    check_passphrase_strength(passphrase)
    created = not home.exists()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        (home / CONFIG_FILE).write_text(default_config_toml(database), encoding="utf-8")
        settings = load_settings(home)
        # The storage this archive is created on (DICOMGUARD_STORAGE__* at init) is written down for every later start.
        (home / CONFIG_FILE).write_text(default_config_toml(database, settings.storage), encoding="utf-8")
        (home / KEYS_DIR).mkdir(mode=0o700)
        create_blob_store(settings, home)
        install_default_policies(home / settings.policy.directory)
        engine = make_engine(database_url(settings, home))
        try:
            if inspect(engine).has_table("archive_meta"):
                raise HomeExistsError("the configured database already holds an archive")
            migrate(engine)
            kek = Kek.generate()
            write_private_file(sealed_kek_path(home, kek.kek_id), kek.seal_with_passphrase(passphrase, kdf_params(settings)))
            recovery_key = write_recovery_key(home)
            with write_session(engine) as s:
                Keyring.bootstrap(s, kek)
                s.flush()
                identity = kek.unwrap(PURPOSE_IDENTITY, "archive", s.get(WrappedKey, PURPOSE_IDENTITY).wrapped)  # type: ignore[union-attr]
                secrets_ = create_user(s, identity, admin, "admin")
                init_pki(s, kek, home, settings.archive.ae_title, settings.tls.server_names or default_server_names())
        finally:
            engine.dispose()
    except BaseException:
        if created:
            shutil.rmtree(home, ignore_errors=True)
        else:
            for child in home.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    _record_creation(home, passphrase, admin, settings)
    return InitResult(home, secrets_, recovery_key)


def _record_creation(home: Path, passphrase: str, admin: str, settings: Settings) -> None:
    from dicomguard.app.archive import Archive  # the composition root, now that there is an archive to open

    with Archive.open(home, passphrase) as archive:
        archive.operator.operations.record_alone(SecurityConfigurationChanged(
            Principal.operator(), "archive", f"archive created (AE title {settings.archive.ae_title}); administrator account "
            f"{admin} created", datetime.now(UTC)))


def require_home(home: Path) -> None:
    if not (home / CONFIG_FILE).exists():
        raise ConfigurationError(f"no archive at {home}; run 'dicomguard init' or set DICOMGUARD_HOME")
