"""Trusting an external checkpoint (``dicomguard ledger witness --import``): decided, and recorded in its transaction."""

from __future__ import annotations

from datetime import UTC, datetime

from dicomguard.core.access import Action, Resource
from dicomguard.core.access_control import AccessControl
from dicomguard.core.context import ArchiveContext
from dicomguard.core.events import SecurityConfigurationChanged
from dicomguard.core.service import Service
from dicomguard.ledger.checkpoint import Checkpoint
from dicomguard.ledger.service import Ledger


class LedgerService(Service):
    def __init__(self, ctx: ArchiveContext, access: AccessControl, ledger: Ledger) -> None:
        super().__init__(ctx, access)
        self.ledger = ledger

    def witness(self, note: bytes, source: str) -> Checkpoint:
        """Trust a checkpoint kept outside the archive; ``verify`` then proves the log still contains it.

        Raises :class:`CheckpointError` when it is not ours or not contained in the
        current tree (a rolled-back archive cannot adopt a witness).
        """
        self.access.authorize(Action.LEDGER_WITNESS, Resource.archive())
        with self.change() as s:
            cp = self.ledger.witness(s, note, source)
            self.record(s, SecurityConfigurationChanged(self.principal, "ledger", f"trusted checkpoint of size {cp.size} recorded "
                                                        f"from {source[:200]}", datetime.now(UTC)))
        return cp
