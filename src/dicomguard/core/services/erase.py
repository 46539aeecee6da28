"""Erasure by crypto-shredding (GDPR art. 17): ``dicomguard erase`` and ``POST /admin/erase`` call :class:`EraseService`."""

from __future__ import annotations

from dicomguard.core.access import Action, Resource
from dicomguard.core.erase import EraseResult, erase_patient
from dicomguard.core.service import Service


class EraseService(Service):
    def patient(self, patient_id: str, reason: str, issuer: str | None = None) -> EraseResult:
        """Destroy one patient's data key (see :mod:`dicomguard.core.erase`); recorded as Study Deleted and Patient Record.

        Decided on the patient (by default: admin, with a TOTP confirmation at most
        5 minutes old; the local operator). Raises :class:`NotFoundError` for an
        unknown patient, ``ValueError`` for an empty reason.
        """
        self.access.authorize(Action.ERASE, Resource("patient"))
        return erase_patient(self.ctx, patient_id, reason, issuer, self.principal)
