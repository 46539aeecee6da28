"""Storing objects: DIMSE C-STORE, STOW-RS and ``dicomguard import`` all call :class:`StoreService`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from dicomguard.core.access import Action, Resource
from dicomguard.core.ingest import IngestOutcome, IngestPipeline, IngestResult, Loader, StagedIngest
from dicomguard.core.service import Service


class StoreService(Service):
    """``store`` is decided once per call (on the archive); each object then passes the ingest pipeline alone.

    Each stored object is recorded by its ``InstanceStored`` event in the index
    transaction of its batch; a refused object (with its reason) costs nothing else.
    """

    def permit(self) -> None:
        """Raise :class:`AccessDenied` (recorded) unless the principal may store: an adapter refuses before receiving a body."""
        self.access.authorize(Action.STORE, Resource.archive())

    def _pipeline(self, source: str | None, study_uid: str | None = None) -> IngestPipeline:
        self.permit()
        return IngestPipeline(self.ctx, source or self.principal.label(), self.principal, study_uid)

    def ingest(self, data: bytes, source: str | None = None) -> IngestResult:
        """Store one Part 10 object; raises :class:`RejectedObject` with its reason if refused."""
        return self._pipeline(source).ingest(data)

    def ingest_many(
        self, items: Iterable[tuple[str, Loader]], source: str | None = None, study_uid: str | None = None
    ) -> Iterator[IngestOutcome]:
        """Store a batch: one outcome per input, in order; one bad input fails alone.

        ``study_uid``: every object must belong to that study (STOW-RS to ``/studies/{study}``).
        """
        return self._pipeline(source, study_uid).ingest_many(items)

    def staged(self, source: str | None = None, study_uid: str | None = None) -> StagedIngest:
        """A batch that arrives over time and must arrive whole (a STOW-RS body): objects are prepared as they are
        added and become visible only on :meth:`StagedIngest.commit`; :meth:`StagedIngest.discard` leaves nothing."""
        return self._pipeline(source, study_uid).staged()
