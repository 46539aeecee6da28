"""Device enrolment: ``dicomguard device ...`` and ``/admin/devices`` call :class:`DeviceService`.

A device (modality, workstation, PACS peer) is enrolled with a certificate
bound to its AE title (PS3.15 B.1), the operations it may perform and the
department it serves. Who may enrol or revoke devices is the policies'
decision (``device-add``, ``device-revoke``; by default the ``admin`` role and
the local operator), taken on the device as asked for or as registered; the
change and its Security Configuration alert commit together.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509

from dicomguard.core.access import Action, Resource
from dicomguard.core.events import SecurityConfigurationChanged
from dicomguard.core.service import Service
from dicomguard.errors import NotFoundError
from dicomguard.pki.devices import (
    DEFAULT_OPERATIONS,
    DeviceCredentials,
    DeviceInfo,
    DeviceRegistry,
    check_department,
)
from dicomguard.pki.store import load_tls_material


class DeviceService(Service):
    def _registry(self) -> DeviceRegistry:
        return DeviceRegistry(self.ctx.engine)

    def add(
        self, ae_title: str, name: str, *, operations: tuple[str, ...] = DEFAULT_OPERATIONS, cert_pem: bytes | None = None,
        move_destination: tuple[str, int] | None = None, department: str | None = None,
    ) -> DeviceCredentials:
        """Enrol a device: issue its certificate and key (returned once), or register ``cert_pem`` from a hospital CA."""
        canonical = check_department(department)
        self.access.authorize(Action.DEVICE_ADD, Resource.device(ae_title, operations, canonical or ""))
        material = load_tls_material(self.ctx.home, self.ctx.settings, self.ctx.keyring)
        existing = x509.load_pem_x509_certificate(cert_pem) if cert_pem else None
        scope = f"department {canonical}" if canonical else "archive-wide"
        with self.change() as s:
            creds = DeviceRegistry.add(s, ae_title, name, authority=material.authority, ca_pem=material.client_ca_pem,
                                       operations=operations, existing_cert=existing, move_destination=move_destination,
                                       department=department)
            self.record(s, SecurityConfigurationChanged(self.principal, f"device:{ae_title}",
                                                        f"device registered for {','.join(operations)} ({scope})", datetime.now(UTC)))
        return creds

    def revoke(self, ae_title: str) -> None:
        """Revoke a device's certificate: refused at its next association and operation; running associations are aborted."""
        known = self._registry().get(ae_title)
        self.access.authorize(Action.DEVICE_REVOKE, Resource.device(ae_title, known.operations if known else (),
                                                                    (known.department or "") if known else ""))
        if known is None:
            raise NotFoundError(f"no device {ae_title}")
        with self.change() as s:
            DeviceRegistry.revoke(s, ae_title)
            self.record(s, SecurityConfigurationChanged(self.principal, f"device:{ae_title}", "device certificate revoked",
                                                        datetime.now(UTC)))

    def list(self) -> list[DeviceInfo]:
        """Every enrolled device (``device-read``): AE title, name, operations, department, certificate, revocation."""
        self.access.authorize(Action.DEVICE_READ, Resource.device("*"))
        return self._registry().list()
