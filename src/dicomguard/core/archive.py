"""The archive facade: one object that every adapter (CLI, DIMSE, DICOMweb) calls.

``Archive.open`` unseals the KEK, brings the schema up to date and recovers
interrupted ingests; the methods are the core services.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path

from dicomguard.audit.trail import AuditTrail
from dicomguard.config import (
    Settings,
    database_url,
    load_settings,
    resolve_home,
    storage_path,
)
from dicomguard.core.access import Principal
from dicomguard.core.client import ArchiveClient
from dicomguard.core.context import ArchiveContext
from dicomguard.core.events import EventBus, KeysRotated
from dicomguard.core.home import (
    KEYS_DIR,
    kdf_params,
    require_home,
    sealed_kek_path,
    write_private_file,
)
from dicomguard.core.ingest import recover_interrupted_ingests
from dicomguard.core.keyring import PURPOSE_INDEX, Keyring, current_kek_id
from dicomguard.core.passphrase import passphrase_from_environment
from dicomguard.core.patients import PatientDirectory
from dicomguard.core.query import IndexQuery
from dicomguard.crypto.blind_index import BlindIndexer
from dicomguard.crypto.kek import Kek, check_passphrase_strength
from dicomguard.errors import ConfigurationError
from dicomguard.index.db import (
    checkpoint_and_shrink,
    make_engine,
    migrate,
    read_session,
    write_session,
)
from dicomguard.ledger.service import Ledger
from dicomguard.policy.engine import PolicyEngine, install_default_policies
from dicomguard.storage.filesystem import FilesystemBlobStore

log = logging.getLogger(__name__)


def policy_directory(root: Path, settings: Settings) -> Path:
    return root / settings.policy.directory


def load_policies(root: Path, settings: Settings) -> PolicyEngine:
    """The archive's validated Cedar policies; raises :class:`PolicyError` (refuse to start) if any is invalid.

    A home made before policies existed gets the shipped defaults written in
    first (they are least privilege); an existing folder is never touched.
    """
    folder = policy_directory(root, settings)
    if not folder.exists():
        log.warning("no policy folder %s: writing the shipped default policies there", folder)
        install_default_policies(folder)
    return PolicyEngine.load(folder)


class Archive:
    def __init__(self, ctx: ArchiveContext, ledger: Ledger) -> None:
        self.ctx = ctx
        self.query = IndexQuery(ctx)
        self.ledger = ledger

    @classmethod
    def open(cls, home: str | Path | None = None, passphrase: str | None = None) -> Archive:
        """Open an existing home. The passphrase defaults to the environment (see ``core.passphrase``)."""
        root = resolve_home(home)
        require_home(root)
        passphrase = passphrase or passphrase_from_environment()
        if not passphrase:
            raise ConfigurationError("no passphrase: set DICOMGUARD_PASSPHRASE or DICOMGUARD_PASSPHRASE_FILE")
        settings = load_settings(root)
        engine = make_engine(database_url(settings, root))
        migrate(engine)
        with read_session(engine) as s:
            kek_id = current_kek_id(s)
        if kek_id is None:
            raise ConfigurationError("the index holds no archive (was 'dicomguard init' run with this database?)")
        try:
            sealed = sealed_kek_path(root, kek_id).read_bytes()
        except FileNotFoundError:
            raise ConfigurationError(f"sealed key file for KEK {kek_id} is missing from {root / KEYS_DIR}") from None
        kek = Kek.unseal(sealed, passphrase)
        # Stale sealed files are left alone here: one may belong to a rotation that
        # another process is committing right now. Rotation removes them.
        keyring = Keyring(kek, engine)
        indexer = BlindIndexer(keyring.archive_key(PURPOSE_INDEX))
        store = FilesystemBlobStore(storage_path(settings, root))
        ctx = ArchiveContext(
            root, settings, engine, store, keyring, indexer, PatientDirectory(engine, keyring, indexer), EventBus(),
            load_policies(root, settings),
        )
        ledger = Ledger.for_archive(ctx)
        AuditTrail.for_archive(ctx)  # audit trail (issue 6): subscribed after the ledger, whose leaves it extends
        store.remove_stale_temporaries()
        recovered = recover_interrupted_ingests(ctx)
        if recovered:
            log.warning("removed %d blobs of ingests interrupted before they were indexed", recovered)
        return cls(ctx, ledger)

    def reload_policies(self) -> None:
        """Load the policy files again; on any error the running policies stay (raises :class:`PolicyError`)."""
        self.ctx.authorizer = load_policies(self.home, self.settings)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def home(self) -> Path:
        return self.ctx.home

    def close(self) -> None:
        self.ctx.engine.dispose()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- services ---------------------------------------------------------------------

    def client(self, principal: Principal) -> ArchiveClient:
        """The core services for one verified principal: every call authorized and recorded."""
        return ArchiveClient(self.ctx, principal)

    @property
    def operator(self) -> ArchiveClient:
        """The core services as the local operator, who holds the archive passphrase.

        Full power by design (the passphrase decrypts everything anyway): for the
        CLI and tests only. Network adapters must use :meth:`client`.
        """
        return ArchiveClient(self.ctx, Principal.operator())

    def rotate_keys(self, passphrase: str, new_passphrase: str | None = None) -> int:
        """Issue a new KEK and re-wrap every key under it (no blob is re-encrypted).

        Order matters for crash safety: the new sealed file is written first,
        the re-wrap commits in one transaction, and only then is the old sealed
        file removed. Returns the number of keys re-wrapped.
        """
        new_passphrase = new_passphrase or passphrase
        check_passphrase_strength(new_passphrase)
        # Proves the caller knows the current passphrase, not only holds an open archive.
        old_kek = Kek.unseal(sealed_kek_path(self.home, self.ctx.keyring.kek_id).read_bytes(), passphrase)
        new_kek = Kek.generate()
        write_private_file(sealed_kek_path(self.home, new_kek.kek_id), new_kek.seal_with_passphrase(new_passphrase, kdf_params(self.settings)))
        with write_session(self.ctx.engine) as s:
            count = self.ctx.keyring.rotate(s, new_kek)
            self.ctx.bus.publish(s, KeysRotated(old_kek.kek_id, new_kek.kek_id, count, datetime.now(UTC)))
        self.ctx.keyring.switch_to(new_kek)
        _remove_stale_sealed_keks(self.home, new_kek.kek_id)
        checkpoint_and_shrink(self.ctx.engine)
        return count


def _remove_stale_sealed_keks(home: Path, current: str) -> None:
    """Delete sealed KEKs other than the current one (left by a finished or interrupted rotation)."""
    for path in (home / KEYS_DIR).glob("kek-*.sealed"):
        if path.name != f"kek-{current}.sealed":
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
