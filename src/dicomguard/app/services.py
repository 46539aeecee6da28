"""Every service for one principal: what an adapter holds for one request, association or command.

All services of one :class:`Services` share one :class:`AccessControl` (the
principal's request context, decision caches and step-up window). A service is
built on first use; building costs no I/O.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from dicomguard.app.backup.service import BackupService
from dicomguard.app.detection.service import DetectionService
from dicomguard.app.governance import GovernanceService
from dicomguard.app.incidents import IncidentService
from dicomguard.app.index_maintenance import IndexMaintenanceService
from dicomguard.app.keys import KeyService
from dicomguard.app.policies import PolicyService
from dicomguard.app.posture import PostureService
from dicomguard.app.transfers import TransferService
from dicomguard.app.verify import VerifyService
from dicomguard.audit.service import AuditService
from dicomguard.core.access import Principal
from dicomguard.core.access_control import AccessControl
from dicomguard.core.services.break_glass import BreakGlassService
from dicomguard.core.services.deid import DeidService
from dicomguard.core.services.erase import EraseService
from dicomguard.core.services.operations import OperationsService
from dicomguard.core.services.patients import PatientIdentityService
from dicomguard.core.services.query import QueryService
from dicomguard.core.services.retrieve import RetrieveService
from dicomguard.core.services.shares import ShareService
from dicomguard.core.services.store import StoreService
from dicomguard.core.services.studies import StudyService
from dicomguard.gateway.allowlist import AllowListService
from dicomguard.identity.accounts import AccountService
from dicomguard.ledger.admin import LedgerService
from dicomguard.pki.enrolment import DeviceService

if TYPE_CHECKING:
    from dicomguard.app.archive import Archive


class Services:
    def __init__(self, archive: Archive, principal: Principal) -> None:
        self.archive = archive
        self.access = AccessControl(archive.ctx, principal)

    @property
    def principal(self) -> Principal:
        return self.access.principal

    # -- data --------------------------------------------------------------------------

    @cached_property
    def store(self) -> StoreService:
        return StoreService(self.archive.ctx, self.access)

    @cached_property
    def query(self) -> QueryService:
        return QueryService(self.archive.ctx, self.access)

    @cached_property
    def retrieve(self) -> RetrieveService:
        return RetrieveService(self.archive.ctx, self.access)

    @cached_property
    def erase(self) -> EraseService:
        return EraseService(self.archive.ctx, self.access)

    @cached_property
    def studies(self) -> StudyService:
        return StudyService(self.archive.ctx, self.access)

    @cached_property
    def patients(self) -> PatientIdentityService:
        return PatientIdentityService(self.archive.ctx, self.access)

    @cached_property
    def break_glass(self) -> BreakGlassService:
        return BreakGlassService(self.archive.ctx, self.access)

    # -- security and administration -----------------------------------------------------

    @cached_property
    def audit(self) -> AuditService:
        return AuditService(self.archive.ctx, self.access, self.archive.trail.keys)

    @cached_property
    def accounts(self) -> AccountService:
        return AccountService(self.archive.ctx, self.access)

    @cached_property
    def devices(self) -> DeviceService:
        return DeviceService(self.archive.ctx, self.access)

    @cached_property
    def allow_list(self) -> AllowListService:
        return AllowListService(self.archive.ctx, self.access)

    @cached_property
    def ledger(self) -> LedgerService:
        return LedgerService(self.archive.ctx, self.access, self.archive.ledger)

    @cached_property
    def operations(self) -> OperationsService:
        return OperationsService(self.archive.ctx, self.access)

    @cached_property
    def keys(self) -> KeyService:
        return KeyService(self.archive.ctx, self.access)

    @cached_property
    def index_maintenance(self) -> IndexMaintenanceService:
        return IndexMaintenanceService(self.archive.ctx, self.access)

    @cached_property
    def policies(self) -> PolicyService:
        return PolicyService(self.archive.ctx, self.access)

    @cached_property
    def verify(self) -> VerifyService:
        return VerifyService(self.archive.ctx, self.access, self.archive.ledger)

    @cached_property
    def backups(self) -> BackupService:
        return BackupService(self.archive.ctx, self.access, self.archive.ledger)

    @cached_property
    def deid(self) -> DeidService:
        return DeidService(self.archive.ctx, self.access)

    @cached_property
    def detection(self) -> DetectionService:
        return DetectionService(self.archive.ctx, self.access)

    @cached_property
    def shares(self) -> ShareService:
        return ShareService(self.archive.ctx, self.access)

    @cached_property
    def transfers(self) -> TransferService:
        return TransferService(self.archive.ctx, self.access, self.archive.ledger)

    @cached_property
    def incidents(self) -> IncidentService:
        return IncidentService(self.archive.ctx, self.access)

    @cached_property
    def posture(self) -> PostureService:
        return PostureService(self.archive.ctx, self.access)

    @cached_property
    def governance(self) -> GovernanceService:
        return GovernanceService(self.archive.ctx, self.access)
