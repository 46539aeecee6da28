"""The composition root: :class:`Archive` builds the core, its controls and the recorder from the settings.

``Archive.open`` unseals the KEK, brings the schema up to date, loads and
validates the Cedar policies (refusing to start on an invalid set), subscribes
the one recorder (audit trail + ledger) to the event bus and recovers
interrupted ingests. Adapters then call :meth:`Archive.services` for the
principal they verified; nothing below this package imports it.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

from dicomguard.app.backup.service import vault_sync
from dicomguard.app.bootstrap import configure_libraries
from dicomguard.app.home import KEYS_DIR, require_home, sealed_kek_path
from dicomguard.app.passphrase import passphrase_from_environment
from dicomguard.app.policies import load_policies
from dicomguard.app.recorder import Recorder
from dicomguard.app.services import Services
from dicomguard.app.stores import open_blob_store
from dicomguard.audit.trail import AuditTrail
from dicomguard.config import Settings, database_url, load_settings, resolve_home
from dicomguard.core.access import Principal
from dicomguard.core.context import ArchiveContext
from dicomguard.core.events import EventBus
from dicomguard.core.ingest import recover_interrupted_ingests
from dicomguard.core.keyring import PURPOSE_IDENTITY, PURPOSE_INDEX, Keyring, current_kek_id
from dicomguard.core.patients import PatientDirectory
from dicomguard.core.services.shares import ShareGate
from dicomguard.crypto.blind_index import BlindIndexer
from dicomguard.crypto.kek import Kek
from dicomguard.errors import ConfigurationError
from dicomguard.identity.auth import Authenticator
from dicomguard.identity.session_policy import SessionPolicy
from dicomguard.index.db import make_engine, migrate, read_session
from dicomguard.ledger.service import Ledger
from dicomguard.storage.base import BlobStore

log = logging.getLogger(__name__)


class Archive:
    """An open archive: its context (the core's dependencies), its ledger and audit trail, and the services."""

    def __init__(self, ctx: ArchiveContext, ledger: Ledger, trail: AuditTrail) -> None:
        self.ctx = ctx
        self.ledger = ledger
        self.trail = trail

    @classmethod
    def open(cls, home: str | Path | None = None, passphrase: str | None = None, *, kek: Kek | None = None,
             store: BlobStore | None = None) -> Archive:
        """Open an existing home. The passphrase defaults to the environment (see ``app.passphrase``).

        ``kek`` (an already unsealed KEK) and ``store`` (a read-only view of a backup target's blobs) are for a
        restore drill's scratch home (ADR 0007).
        """
        configure_libraries()
        root = resolve_home(home)
        require_home(root)
        if kek is None:
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
        if kek is None:
            try:
                sealed = sealed_kek_path(root, kek_id).read_bytes()
            except FileNotFoundError:
                raise ConfigurationError(f"sealed key file for KEK {kek_id} is missing from {root / KEYS_DIR}") from None
            kek = Kek.unseal(sealed, passphrase or "")
        elif kek.kek_id != kek_id:
            raise ConfigurationError(f"the index is under KEK {kek_id}, not {kek.kek_id}")
        # Stale sealed files are left alone here: one may belong to a rotation that
        # another process is committing right now. Rotation removes them.
        keyring = Keyring(kek, engine)
        indexer = BlindIndexer(keyring.archive_key(PURPOSE_INDEX))
        store = store if store is not None else open_blob_store(settings, root)
        bus = EventBus()
        ctx = ArchiveContext(
            root, settings, engine, store, keyring, indexer, PatientDirectory(engine, keyring, indexer, bus), bus,
            load_policies(root, settings),
        )
        ledger = Ledger.for_archive(ctx)
        trail = AuditTrail(ctx)
        ctx.bus.subscribe(Recorder(ledger, trail).on_event)
        ctx.bus.subscribe(vault_sync(ctx))  # an erasure reaches the backups' key vaults once it commits (ADR 0007)
        store.remove_stale_temporaries()
        recovered = recover_interrupted_ingests(ctx)
        if recovered:
            log.warning("removed %d blobs of ingests interrupted before they were indexed", recovered)
        return cls(ctx, ledger, trail)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def home(self) -> Path:
        return self.ctx.home

    def close(self) -> None:
        self.ctx.close_writers()  # the heartbeat ends; what stays journalled is recovered after its expiry
        self.ctx.engine.dispose()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- services ---------------------------------------------------------------------

    def services(self, principal: Principal) -> Services:
        """Every service as one verified principal sees it: each call decided by the policies and recorded."""
        return Services(self, principal)

    def authenticator(self, sessions: SessionPolicy) -> Authenticator:
        """The login service (passwords, TOTP, sessions, lockout), publishing to this archive's recorder."""
        return Authenticator(self.ctx.engine, self.ctx.bus, self.ctx.keyring.archive_key(PURPOSE_IDENTITY), sessions=sessions)

    @cached_property
    def share_gate(self) -> ShareGate:
        """Opens share links with their PIN and maps recipient sessions to principals (ADR 0010)."""
        return ShareGate(self.ctx)

    @property
    def operator(self) -> Services:
        """The services as the local operator, who holds the archive passphrase (CLI commands and tests).

        The operator is a principal like any other: decided by the policies
        (``00-operator.cedar`` permits it everything, since the passphrase opens
        every key anyway) and recorded in the audit trail. Network adapters use
        :meth:`services` with the principal they verified.
        """
        return Services(self, Principal.operator())
