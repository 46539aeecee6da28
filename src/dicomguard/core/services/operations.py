"""Operating the archive: application start/stop, refused connections, metrics (PS3.15 A.5.3.1, A.5.3.11)."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable
from datetime import UTC, datetime

from dicomguard.core.access import Action, Resource
from dicomguard.core.events import ApplicationActivity
from dicomguard.core.service import Service


def launcher_account() -> str:
    """The operating system account that started this process."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid={os.getuid()}"


class OperationsService(Service):
    def application(self, name: str, started: bool) -> None:
        """Record that a long-running part of the archive (``serve``, the gateway, the audit listener) started or stopped.

        Not decided by a policy: the fact must be recorded whoever started it.
        """
        self.record_alone(ApplicationActivity(started, name, launcher_account(), datetime.now(UTC), self.principal.address))

    def connection_refused(self, reason: str) -> None:
        """A peer that failed authentication (no or unknown certificate, plaintext): a Node Authentication alert."""
        self.access.record_refusal(Action.CONNECT, Resource("association"), reason)

    def permit_metrics(self) -> None:
        """Raise :class:`AccessDenied` unless the principal may read the service metrics (no PHI, but activity levels)."""
        self.access.authorize(Action.METRICS_READ, Resource.archive())

    def permitted(self, asks: Iterable[tuple[Action, Resource]]) -> frozenset[Action]:
        """Which of these actions the policies would permit the principal (decided, not recorded: nothing is done).

        What an adapter offers (a console's menu, a button) follows the same policies
        that decide the action itself; the action is decided and recorded again when
        it is taken, so an offer grants nothing.
        """
        return frozenset(action for action, resource in asks if self.access.decide(action, resource).allowed)
