"""The archive's home folder: layout, ``init`` and sealed key files.

Layout::

    HOME/config.toml          settings (no secrets)
    HOME/keys/kek-<id>.sealed the KEK, sealed under the passphrase (argon2id)
    HOME/blobs/               ciphertext blobs (filesystem backend)
    HOME/index.db             SQLite index (embedded default; no plaintext PHI)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect

from dicomguard.config import (
    CONFIG_FILE,
    database_url,
    default_config_toml,
    load_settings,
    storage_path,
)
from dicomguard.core.keyring import PURPOSE_IDENTITY, Keyring
from dicomguard.crypto.aead import derive_key  # noqa: F401  (re-exported for tests of the hierarchy)
from dicomguard.crypto.kek import KdfParams, Kek, check_passphrase_strength
from dicomguard.errors import ConfigurationError, HomeExistsError
from dicomguard.identity.users import NewUserSecrets, create_user
from dicomguard.index.db import make_engine, migrate, write_session
from dicomguard.index.models import WrappedKey
from dicomguard.pki.store import default_server_names, init_pki
from dicomguard.policy.engine import install_default_policies
from dicomguard.storage.filesystem import FilesystemBlobStore, fsync_dir

KEYS_DIR = "keys"


def sealed_kek_path(home: Path, kek_id: str) -> Path:
    return home / KEYS_DIR / f"kek-{kek_id}.sealed"


def write_private_file(path: Path, content: bytes) -> None:
    """Atomically write a file readable by the owner only (temp, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def kdf_params(settings) -> KdfParams:  # type: ignore[no-untyped-def]
    k = settings.kdf
    return KdfParams(k.time_cost, k.memory_kib, k.parallelism)


@dataclass(frozen=True)
class InitResult:
    home: Path
    admin: NewUserSecrets


def init_home(home: Path, passphrase: str, admin: str, database: str = "") -> InitResult:
    """Create a new archive home: config, sealed KEK, index schema, archive keys, first administrator.

    Refuses to touch an existing home or a database that already holds an archive.
    """
    if home.exists() and any(home.iterdir()):
        raise HomeExistsError(f"{home} exists and is not empty; refusing to overwrite it")
    check_passphrase_strength(passphrase)
    created = not home.exists()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        (home / CONFIG_FILE).write_text(default_config_toml(database), encoding="utf-8")
        settings = load_settings(home)
        (home / KEYS_DIR).mkdir(mode=0o700)
        FilesystemBlobStore(storage_path(settings, home)).create_layout()
        install_default_policies(home / settings.policy.directory)
        engine = make_engine(database_url(settings, home))
        try:
            if inspect(engine).has_table("archive_meta"):
                raise HomeExistsError("the configured database already holds an archive")
            migrate(engine)
            kek = Kek.generate()
            write_private_file(sealed_kek_path(home, kek.kek_id), kek.seal_with_passphrase(passphrase, kdf_params(settings)))
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
    return InitResult(home, secrets_)


def require_home(home: Path) -> None:
    if not (home / CONFIG_FILE).exists():
        raise ConfigurationError(f"no archive at {home}; run 'dicomguard init' or set DICOMGUARD_HOME")
