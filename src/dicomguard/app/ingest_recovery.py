"""The ``serve`` thread that removes the orphan blobs of writers that died (:mod:`dicomguard.core.writers`)."""

from __future__ import annotations

import logging
from datetime import datetime

from dicomguard.app.periodic import PeriodicTask
from dicomguard.core.ingest import recover_interrupted_ingests

log = logging.getLogger(__name__)


class IngestRecovery(PeriodicTask):
    """Every minute: a writer whose heartbeat expired (a node killed or lost for good) leaves no orphan behind.

    Each node already recovers its own dead processes when it starts; this covers the nodes that do not come
    back. Claiming is safe with several nodes at once (a journal row is claimed by one), so one is enough.
    """

    NAME = "ingest-recovery"
    POLL_S = 60.0

    def tick(self, now: datetime) -> int:
        removed = recover_interrupted_ingests(self.services.archive.ctx)
        if removed:
            log.warning("removed %d blobs of ingests whose writer died before they were indexed", removed)
        return removed
