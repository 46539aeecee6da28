"""The device registry: which AE title holds which certificate, what it may do, and revocation.

Zero trust for DIMSE: an association is accepted only when the peer's
certificate chains to the trusted CA, is registered, is not revoked, and is
bound to the calling AE title. Revocation is checked against the database at
every association and every operation, so it takes effect at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from dicomguard.core.access import (
    Action,
    Principal,
    PrincipalKind,
    normalize_department,
)
from dicomguard.errors import DicomGuardError, NotFoundError
from dicomguard.index.db import as_utc, read_session
from dicomguard.index.models import Device
from dicomguard.pki.authority import (
    CertificateAuthority,
    ae_title_of,
    cert_pem,
    fingerprint,
    key_to_pem,
)

_AE = re.compile(r"^[A-Za-z0-9_.\-]{1,16}$")
DEFAULT_OPERATIONS = ("echo", Action.STORE.value)
AUDIT_SELF = "audit"
"""May send audit messages about itself over syslog-TLS (every ActiveParticipant and the AuditSourceID is its AE title)."""
AUDIT_RELAY = "audit-relay"
"""A registered audit source for others (e.g. a PACS): may send audit messages about its users."""
CONTEXT_FEED = Action.CONTEXT_FEED.value
"""May update the detection context over the HL7 v2 MLLP listener (a hospital interface engine)."""
KNOWN_OPERATIONS = ("echo", Action.STORE.value, Action.QUERY.value, Action.RETRIEVE.value, AUDIT_SELF, AUDIT_RELAY, CONTEXT_FEED)


class PeerRefused(DicomGuardError):
    """A peer failed device authentication (no, unknown, revoked or mismatched certificate)."""


@dataclass(frozen=True)
class DeviceCredentials:
    cert_pem: bytes
    key_pem: bytes | None
    ca_pem: bytes


@dataclass(frozen=True)
class DeviceInfo:
    ae_title: str
    name: str
    operations: tuple[str, ...]
    cert_sha256: str
    not_after: datetime
    revoked: bool
    move_destination: str | None
    department: str | None = None
    """Department whose studies it may query/retrieve; ``None``: an archive-wide peer."""

    def principal(self, address: str | None) -> Principal:
        attributes = {"operations": self.operations, "department": self.department or ""}
        return Principal(PrincipalKind.DEVICE, self.ae_title, frozenset({"device"}), address, attributes)


def _info(d: Device) -> DeviceInfo:
    dest = f"{d.move_host}:{d.move_port}" if d.move_host and d.move_port else None
    return DeviceInfo(
        d.ae_title, d.name, tuple(filter(None, d.operations.split(","))), d.cert_sha256, as_utc(d.not_after),
        d.revoked_at is not None, dest, d.department or None,
    )


def check_department(department: str | None) -> str | None:
    """A device department as stored: ``None`` (archive-wide peer) or its canonical upper-case name."""
    return None if department is None else normalize_department(department) or None


def check_operations(operations: tuple[str, ...]) -> tuple[str, ...]:
    unknown = set(operations) - set(KNOWN_OPERATIONS)
    if unknown:
        raise ValueError(f"unknown operations {sorted(unknown)}; known: {', '.join(KNOWN_OPERATIONS)}")
    return operations


def check_ae_title(ae: str) -> str:
    if not _AE.match(ae):
        raise ValueError("an AE title is 1-16 characters: letters, digits, '_', '.', '-'")
    return ae


class DeviceRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    def add(
        s: Session,
        ae_title: str,
        name: str,
        *,
        authority: CertificateAuthority | None,
        ca_pem: bytes,
        operations: tuple[str, ...] = DEFAULT_OPERATIONS,
        existing_cert: x509.Certificate | None = None,
        move_destination: tuple[str, int] | None = None,
        department: str | None = None,
    ) -> DeviceCredentials:
        """Register a device in ``s``: issue a certificate bound to its AE title, or register an existing one.

        ``department``: the device reads only that department's studies (Cedar
        device policies); ``None`` registers an archive-wide peer. Who may register
        devices is decided by ``pki.enrolment.DeviceService``.
        """
        check_ae_title(ae_title)
        department = check_department(department)
        check_operations(operations)
        if s.get(Device, ae_title) is not None:
            raise ValueError(f"device {ae_title} exists; revoke it first or choose another AE title")
        key_pem = None
        if existing_cert is None:
            if authority is None:
                raise ValueError("a hospital CA is configured: register the device's certificate with --cert")
            issued = authority.issue_device(ae_title, name)
            cert, key_pem = issued.cert, key_to_pem(issued.key)
        else:
            cert = existing_cert
            if ae_title_of(cert) != ae_title:
                raise ValueError("the certificate is not bound to that AE title (CN or urn:dicom:ae: SAN)")
        s.add(
            Device(
                ae_title=ae_title, name=name[:128], operations=",".join(operations), cert_serial=format(cert.serial_number, "x"),
                cert_sha256=fingerprint(cert), not_after=cert.not_valid_after_utc, created_at=datetime.now(UTC), revoked_at=None,
                move_host=move_destination[0] if move_destination else None, move_port=move_destination[1] if move_destination else None,
                department=department,
            )
        )
        return DeviceCredentials(cert_pem(cert), key_pem, ca_pem)

    @staticmethod
    def revoke(s: Session, ae_title: str) -> None:
        """Revoke a device in ``s``: refused at its next association and its next operation."""
        d = s.get(Device, ae_title, with_for_update=True)
        if d is None:
            raise NotFoundError(f"no device {ae_title}")
        d.revoked_at = d.revoked_at or datetime.now(UTC)

    def list(self) -> list[DeviceInfo]:
        with read_session(self.engine) as s:
            return [_info(d) for d in s.scalars(select(Device).order_by(Device.ae_title))]

    def get(self, ae_title: str) -> DeviceInfo | None:
        with read_session(self.engine) as s:
            d = s.get(Device, ae_title)
            return _info(d) if d else None

    def authenticate(self, peer_cert_der: bytes | None, calling_ae: str) -> DeviceInfo:
        """The registered, unrevoked device that owns this certificate *and* this AE title."""
        return self.identify(peer_cert_der, calling_ae)

    def identify(self, peer_cert_der: bytes | None, calling_ae: str | None = None) -> DeviceInfo:
        """The registered, unrevoked, unexpired device that owns this certificate (bound to its AE title).

        ``calling_ae``: the AE title the peer claims (DIMSE), which must be the one
        its certificate is registered for; ``None`` where a protocol claims none
        (the syslog-TLS audit listener names the device by its certificate alone).
        """
        if not peer_cert_der:
            raise PeerRefused("no client certificate")
        cert = x509.load_der_x509_certificate(peer_cert_der)
        fp = fingerprint(cert)
        with read_session(self.engine) as s:
            d = s.scalar(select(Device).where(Device.cert_sha256 == fp))
        if d is None:
            raise PeerRefused("certificate is not registered to any device")
        if d.revoked_at is not None:
            raise PeerRefused(f"certificate of {d.ae_title} is revoked")
        if ae_title_of(cert) != d.ae_title or (calling_ae is not None and d.ae_title != calling_ae.strip()):
            raise PeerRefused(f"calling AE title does not match the certificate (bound to {d.ae_title})")
        if as_utc(d.not_after) < datetime.now(UTC):
            raise PeerRefused("certificate has expired")
        return _info(d)

    def still_valid(self, ae_title: str, cert_sha256: str) -> bool:
        """Re-checked before each operation of a running association (revocation at once)."""
        with read_session(self.engine) as s:
            d = s.get(Device, ae_title)
            return d is not None and d.revoked_at is None and d.cert_sha256 == cert_sha256
