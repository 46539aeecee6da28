"""Index schema (SQLAlchemy 2). Every change needs an Alembic migration in ``migrations/versions``.

Plaintext columns carry only what DICOM query and integrity checks need and
what does not identify a patient: UIDs, SOP classes, modality, numbers of
frames/rows/columns, study year, hashes and timestamps. Identifying values are
in the sealed ``phi`` columns (docs/security.md, "What the index reveals").
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

UID = String(64)
TOKEN = LargeBinary(16)
HASH = LargeBinary(32)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ArchiveMeta(Base):
    """Small key/value facts about the archive (schema-independent), e.g. the current KEK id."""

    __tablename__ = "archive_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))


class WrappedKey(Base):
    """Archive-wide keys (index key, identity key, ledger signing key) wrapped by the KEK."""

    __tablename__ = "wrapped_keys"
    purpose: Mapped[str] = mapped_column(String(32), primary_key=True)
    kek_id: Mapped[str] = mapped_column(String(32))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)


class Patient(Base):
    """One patient. ``ref`` is a random surrogate; the DICOM Patient ID is only in ``phi`` and blind indexes.

    Crypto-shredding sets ``wrapped_data_key`` and ``phi`` to NULL and removes
    the blind indexes: the row remains as a tombstone.
    """

    __tablename__ = "patients"
    ref: Mapped[str] = mapped_column(String(32), primary_key=True)
    kek_id: Mapped[str | None] = mapped_column(String(32))
    wrapped_data_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    identity_token: Mapped[bytes | None] = mapped_column(TOKEN, index=True)
    """Blind index of (Issuer of Patient ID, Patient ID). Several rows share it when objects arrived
    with that identity but conflicting demographics: they are kept apart (see :class:`PatientConflict`)."""
    demographics_token: Mapped[bytes | None] = mapped_column(TOKEN)
    """Blind index of the identity with name, birth date and sex: one row per (identity, demographics).
    NULL on rows written before it existed (matched by opening ``phi``, then filled)."""
    id_token: Mapped[bytes | None] = mapped_column(TOKEN, index=True)
    name_token: Mapped[bytes | None] = mapped_column(TOKEN, index=True)
    birth_date_token: Mapped[bytes | None] = mapped_column(TOKEN, index=True)
    phi: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    erase_reason: Mapped[bytes | None] = mapped_column(LargeBinary)
    __table_args__ = (
        UniqueConstraint("identity_token", "demographics_token", name="uq_patients_identity_token_demographics_token"),
        Index("ix_patients_created_at_ref", "created_at", "ref"),
    )


class PatientConflict(Base):
    """Objects with one (Issuer of Patient ID, Patient ID) but different demographics: kept apart, to be reconciled.

    ``patient_ref`` is the row created for the newer demographics, ``other_ref`` the
    earlier row of the same identity. ``fields`` names what differs (no values: the
    values are PHI, in the rows' sealed ``phi``). ``resolution`` is set by the audited
    reconciliation: ``same-person`` or ``different-persons``.
    """

    __tablename__ = "patient_conflicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_ref: Mapped[str] = mapped_column(ForeignKey("patients.ref"), index=True)
    other_ref: Mapped[str] = mapped_column(ForeignKey("patients.ref"), index=True)
    fields: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolution: Mapped[str | None] = mapped_column(String(32))
    resolved_by: Mapped[str | None] = mapped_column(String(256))


class BackupRun(Base):
    """One backup, drill or key-vault push to a target (ADR 0007): ``backup status`` reads these; the ledger proves them."""

    __tablename__ = "backup_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    """``backup``, ``drill`` or ``vault``."""
    snapshot_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text)
    """JSON: counts, bytes, seconds, RPO/RTO, problems (no PHI)."""


class DetectionContext(Base):
    """Context imported for access-anomaly detection (users, patients, orders): one sealed document per kind (PHI)."""

    __tablename__ = "detection_context"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    rows: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AlertRow(Base):
    """An access-anomaly alert. Patients, explanation and evidence are PHI: sealed; the rest is what triage lists."""

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_name: Mapped[str] = mapped_column(String(256), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), index=True)
    """``open``, ``acknowledged`` or ``resolved``."""
    disposition: Mapped[str | None] = mapped_column(String(32))
    containment: Mapped[str] = mapped_column(String(16))
    """What was done automatically: ``record``, ``step-up`` or ``suspend``."""
    sealed: Mapped[bytes] = mapped_column(LargeBinary)


class Containment(Base):
    """A user contained after an alert: the next request needs step-up (``step-up``) or the account is suspended."""

    __tablename__ = "containments"
    user_name: Mapped[str] = mapped_column(String(256), primary_key=True)
    level: Mapped[str] = mapped_column(String(16))
    alert_id: Mapped[int] = mapped_column(Integer)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled_account: Mapped[bool] = mapped_column(Boolean)
    """The containment disabled the account (a release re-enables it; an account disabled before stays disabled)."""


class ShareLink(Base):
    """A share link (ADR 0010): the token and the PIN are stored only as hashes; who and why is sealed (it may name people)."""

    __tablename__ = "share_links"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Public identifier (printed, in the audit trail): names the link, opens nothing."""
    token_sha256: Mapped[bytes] = mapped_column(HASH, unique=True)
    pin_mac: Mapped[bytes] = mapped_column(HASH)
    """HMAC-SHA-256 of the PIN under a key derived from the archive's identity key: a copy of the index alone cannot test PINs."""
    owner: Mapped[str] = mapped_column(String(256), index=True)
    study_uid: Mapped[str] = mapped_column(UID)
    """The study the link serves: the source, or the de-identified copy."""
    source_study_uid: Mapped[str] = mapped_column(UID, index=True)
    recipient_kind: Mapped[str] = mapped_column(String(16))
    download: Mapped[bool] = mapped_column(Boolean)
    deidentified: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    max_uses: Mapped[int | None] = mapped_column(Integer, nullable=True)
    uses: Mapped[int] = mapped_column(Integer)
    failed_pins: Mapped[int] = mapped_column(Integer)
    locked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    """Sealed JSON: recipient ("who and why"), series, options, revocation reason."""


class ShareSession(Base):
    """A recipient's session after the PIN: an HttpOnly cookie of 256 random bits, stored as SHA-256 only."""

    __tablename__ = "share_sessions"
    id_sha256: Mapped[bytes] = mapped_column(HASH, primary_key=True)
    share_id: Mapped[str] = mapped_column(ForeignKey("share_links.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    address: Mapped[str] = mapped_column(String(64))


class ShareUse(Base):
    """What happened to a link, for its owner (``share show``): opened, PIN refused, downloaded, locked, refused."""

    __tablename__ = "share_uses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    share_id: Mapped[str] = mapped_column(ForeignKey("share_links.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(64))


class Peer(Base):
    """A peer archive for site-to-site transfer: where to send, which CA to trust, whose ledger key proves its objects."""

    __tablename__ = "peers"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(512))
    ca_pem: Mapped[str] = mapped_column(Text)
    ledger_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    """The peer's checkpoint verifier key (C2SP note key): objects it sends must carry inclusion proofs under it."""
    device: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    """The AE title of the device registration the peer's client certificate belongs to (receiving side)."""
    cert_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Client certificate the peer issued to this archive (sending side)."""
    key_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """Its private key, sealed under an archive key: never in clear on disk."""
    external: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ObjectProvenance(Base):
    """Where a received object came from: the sending peer and its ledger's inclusion proof (RFC 9162), as verified."""

    __tablename__ = "object_provenance"
    sop_instance_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    peer: Mapped[str] = mapped_column(String(64), index=True)
    origin: Mapped[str] = mapped_column(String(256))
    leaf_index: Mapped[int] = mapped_column(BigInteger)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    bundle: Mapped[str] = mapped_column(Text)
    """The proof bundle (``dicomguard-proof/1``; UIDs, digests, checkpoint: no patient identity) as received."""


class TransferJob(Base):
    """One study queued for a peer; the study list is sealed, the objects stay encrypted in the archive until sent."""

    __tablename__ = "transfer_jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    peer: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    """``queued``, ``delivered`` or ``failed`` (permanently; a retryable failure stays queued)."""
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    objects: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    """Sealed JSON: the study (served copy), its source, the SOP Instance UIDs to send."""


class Incident(Base):
    """A security incident (NIST SP 800-61r3): its title and notes are sealed (they may name people)."""

    __tablename__ = "incidents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    """``open`` or ``closed``."""
    opened_by: Mapped[str] = mapped_column(String(256))
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    aware_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """When the organisation became aware (GDPR Art. 33(1): the 72 hours run from here)."""
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    """Sealed JSON: title, description, the last breach scope (counts only)."""


class IncidentStep(Base):
    """One step of an incident's timeline: a containment (active until released), a verification, a notification, a note."""

    __tablename__ = "incident_steps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    by: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(32))
    """``contain-user``, ``contain-device``, ``contain-network``, ``read-only``, ``verify``, ``scope``, ``notified-...``, ``note``,
    ``release``, ``close``."""
    target: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean)
    """A containment still in force."""
    detail: Mapped[str] = mapped_column(Text)
    """What was done and why (JSON; no PHI: counts, names of accounts and devices)."""


class NetworkBlock(Base):
    """A network refused at connection (DIMSE and HTTPS) while an incident contains it."""

    __tablename__ = "network_blocks"
    cidr: Mapped[str] = mapped_column(String(64), primary_key=True)
    incident_id: Mapped[int] = mapped_column(Integer)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LogReview(Base):
    """A routine audit-log review (HIPAA 164.308(a)(1)(ii)(D)): the period's counts, and who signed it off when."""

    __tablename__ = "log_reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(256))
    summary: Mapped[str] = mapped_column(Text)
    """JSON counts (records, users, refusals, failed logins, lockouts, break-glass, exports, integrity alerts): no PHI."""
    signed_off_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    signed_off_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class Risk(Base):
    """An entry of the risk register (NIST SP 800-30 terms: asset, threat, vulnerability, likelihood, impact, treatment)."""

    __tablename__ = "risks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset: Mapped[str] = mapped_column(String(256))
    threat: Mapped[str] = mapped_column(String(512))
    vulnerability: Mapped[str] = mapped_column(String(512))
    likelihood: Mapped[int] = mapped_column(SmallInteger)
    impact: Mapped[int] = mapped_column(SmallInteger)
    owner: Mapped[str] = mapped_column(String(256))
    treatment: Mapped[str] = mapped_column(String(1024))
    due: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    """``open``, ``accepted`` or ``closed``."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PatientToken(Base):
    """Prefix blind indexes of a patient's name and ID (wildcard matching, PS3.4 C.2.2.2.4)."""

    __tablename__ = "patient_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_ref: Mapped[str] = mapped_column(ForeignKey("patients.ref", ondelete="CASCADE"), index=True)
    field: Mapped[int] = mapped_column(SmallInteger)
    token: Mapped[bytes] = mapped_column(TOKEN)
    __table_args__ = (Index("ix_patient_tokens_field_token", "field", "token"),)


class Study(Base):
    __tablename__ = "studies"
    uid: Mapped[str] = mapped_column(UID, primary_key=True)
    patient_ref: Mapped[str] = mapped_column(ForeignKey("patients.ref"), index=True)
    accession_token: Mapped[bytes | None] = mapped_column(TOKEN, index=True)
    study_year: Mapped[int | None] = mapped_column(Integer, index=True)
    study_date_token: Mapped[bytes | None] = mapped_column(TOKEN, nullable=True, index=True)
    """Blind index of the Study Date when it is a calendar date ``YYYYMMDD`` (ADR 0014); NULL otherwise and for rows
    stored before it existed, which date searches narrow by ``study_year`` only."""
    phi: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Access attributes for policies (ADR 0003): none identifies the patient.
    department: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    site: Mapped[str | None] = mapped_column(String(64), nullable=True)
    labels: Mapped[str | None] = mapped_column(String(512), nullable=True)
    """Comma-separated lower-case labels set by an administrator (e.g. ``vip``)."""
    referring_token: Mapped[bytes | None] = mapped_column(TOKEN, nullable=True, index=True)
    """Blind index of the Referring Physician's Name (never the name)."""
    __table_args__ = (Index("ix_studies_created_at_uid", "created_at", "uid"),
                      Index("ix_studies_department_created_at_uid", "department", "created_at", "uid"))


class Series(Base):
    __tablename__ = "series"
    uid: Mapped[str] = mapped_column(UID, primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.uid"), index=True)
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    series_number: Mapped[int | None] = mapped_column(Integer)
    phi: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Instance(Base):
    """One stored object. ``pixel_sha256``/``header_sha256`` are checked on every read."""

    __tablename__ = "instances"
    sop_instance_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    series_uid: Mapped[str] = mapped_column(ForeignKey("series.uid"), index=True)
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    patient_ref: Mapped[str] = mapped_column(String(32), index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax: Mapped[str] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    blob_id: Mapped[str] = mapped_column(String(64), unique=True)
    blob_salt: Mapped[bytes | None] = mapped_column(LargeBinary(16), index=True)
    """The salt in the blob's header: names the blob a misplaced file really is (verify)."""
    size: Mapped[int] = mapped_column(BigInteger)
    pixel_sha256: Mapped[bytes] = mapped_column(HASH)
    header_sha256: Mapped[bytes] = mapped_column(HASH)
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    erased: Mapped[bool] = mapped_column(Boolean, default=False)
    dataset_offset: Mapped[int | None] = mapped_column(BigInteger)
    """Where the data set starts in the stored file, as ingest's walk found it; None: walked again on every read (a
    Deflated object, or one stored before this was recorded). Not trusted: it only says which bytes each digest covers."""
    pixel_start: Mapped[int | None] = mapped_column(BigInteger)
    pixel_end: Mapped[int | None] = mapped_column(BigInteger)
    """The Pixel Data value's range within the data set (None: no pixels)."""


class Conflict(Base):
    """A refused re-send: same SOP Instance UID, different content (write-once)."""

    __tablename__ = "conflicts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    pixel_sha256: Mapped[bytes] = mapped_column(HASH)
    header_sha256: Mapped[bytes] = mapped_column(HASH)
    source: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IngestJournal(Base):
    """Blobs being written but not yet indexed; recovery removes those of dead writers."""

    __tablename__ = "ingest_journal"
    blob_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class User(Base):
    """An account. Password hashes are argon2id (PHC string); the TOTP secret is sealed."""

    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(256))
    totp_secret: Mapped[bytes] = mapped_column(LargeBinary)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    department: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attributes: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    """JSON object of policy attributes: site, modalities, referring_token, clearances."""
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Last accepted RFC 6238 time step: a code of this step or an earlier one is refused (no replay)."""


class LedgerHead(Base):
    """One row: the ledger's size. Locked (SELECT ... FOR UPDATE) by each appender: one writer sequence."""

    __tablename__ = "ledger_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)


class LedgerLeaf(Base):
    """An entry of the RFC 9162 log: canonical leaf bytes (no PHI) and their leaf hash."""

    __tablename__ = "ledger_leaves"
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(64), index=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LedgerNode(Base):
    """Hash of every complete subtree (level, index); level 0 holds the leaf hashes."""

    __tablename__ = "ledger_nodes"
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(HASH)


class LedgerCheckpoint(Base):
    """A signed checkpoint (C2SP tlog-checkpoint note) written by this archive."""

    __tablename__ = "ledger_checkpoints"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    note: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TrustedCheckpoint(Base):
    """A checkpoint a witness vouched for (imported with ``ledger witness --import``)."""

    __tablename__ = "ledger_trusted"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    note: Mapped[bytes] = mapped_column(LargeBinary)
    source: Mapped[str] = mapped_column(String(256))
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Device(Base):
    """A DICOM device (modality, workstation, viewer) and the client certificate bound to its AE title."""

    __tablename__ = "devices"
    ae_title: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    operations: Mapped[str] = mapped_column(String(128))
    """Comma-separated actions the device may perform (interim, until policies land)."""
    cert_serial: Mapped[str] = mapped_column(String(64))
    cert_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    move_host: Mapped[str | None] = mapped_column(String(255))
    """Where C-MOVE may send to this device (registered destinations only)."""
    move_port: Mapped[int | None] = mapped_column(Integer)
    department: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """Department whose studies the device may query/retrieve; ``None``: archive-wide peer."""


class ApiToken(Base):
    """A bearer token for DICOMweb, stored as SHA-256 only (the token has 256 random bits)."""

    __tablename__ = "api_tokens"
    token_sha256: Mapped[bytes] = mapped_column(HASH, primary_key=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    """Set for tokens of an interactive login session (the session is checked on every use)."""
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """``None`` (API token), ``access`` or ``refresh`` (login session tokens)."""
    scopes: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """Comma-separated actions an API token is limited to (``None``: the user's full rights)."""


class GatewayAllow(Base):
    """A legacy modality the plaintext gateway accepts: (AE title, source IP)."""

    __tablename__ = "gateway_allow"
    ae_title: Mapped[str] = mapped_column(String(16), primary_key=True)
    ip: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# -- audit trail (PS3.15 A.5) ----------------------------------------------------------


class AuditRecord(Base):
    """One DICOM audit message (PS3.15 A.5): ours or imported, sealed, ledgered, forwarded in ``seq`` order.

    ``body`` is the XML message sealed (AES-256-GCM) under the audit key; only what a
    review needs to narrow a search is in clear: times, the DICOM event and type
    codes, the outcome and where the message came from. Users and patients are
    blind indexes. ``seq`` is assigned under the ledger lock, so it is also the
    commit order: forwarders resend ``seq > forwarded_up_to`` and never skip a row.
    """

    __tablename__ = "audit_records"
    # The console's hourly counts (dicomguard.audit.activity) read this index only, never the sealed rows.
    __table_args__ = (Index("ix_audit_records_event_time_event_id_outcome", "event_time", "event_id", "outcome"),)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(32))
    """Random record id (128 bits): how the ledger names the record."""
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    """EventID code, e.g. ``110104`` (DCM) for DICOM Instances Transferred."""
    event_type: Mapped[str | None] = mapped_column(String(128))
    """Its EventTypeCode codes, space-separated (e.g. ``110122``)."""
    action: Mapped[str | None] = mapped_column(String(1))
    outcome: Mapped[int] = mapped_column(SmallInteger)
    origin: Mapped[str] = mapped_column(String(128))
    """``local`` for our own messages; ``import:...`` or ``syslog:...`` for messages of other systems."""
    user_token: Mapped[bytes | None] = mapped_column(TOKEN, index=True)
    dedup_token: Mapped[bytes | None] = mapped_column(TOKEN, unique=True)
    """Keyed hash of an imported message: the same message imported twice is stored once."""
    body: Mapped[bytes] = mapped_column(LargeBinary)


class AuditPatient(Base):
    """Blind index of each Patient ID a record names (one record may name several patients)."""

    __tablename__ = "audit_patients"
    record_seq: Mapped[int] = mapped_column(ForeignKey("audit_records.seq", ondelete="CASCADE"), primary_key=True)
    token: Mapped[bytes] = mapped_column(TOKEN, primary_key=True, index=True)


class AuditCursor(Base):
    """How far a syslog collector has acknowledged the audit records (at-least-once forwarding)."""

    __tablename__ = "audit_cursors"
    collector: Mapped[str] = mapped_column(String(255), primary_key=True)
    forwarded_up_to: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(256))
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str | None] = mapped_column(String(128))
    """The process forwarding to this collector (one at a time, across nodes) until ``lease_until``."""
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TaskLease(Base):
    """Which process runs an archive-wide background task (one at a time, across nodes) until ``lease_until`` (app/leases.py)."""

    __tablename__ = "task_lease"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(255))
    """``hostname:pid:random`` of the holder; NULL when released."""
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Set from the database's clock on PostgreSQL, so the nodes' clocks need not agree."""
    cursor: Mapped[str | None] = mapped_column(Text)
    """Progress the holder persists for its successor (the detector: the last audit ``seq`` it scored)."""
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# -- identity and sessions (NIST SP 800-63B) ------------------------------------------------


class AuthSession(Base):
    """An interactive login session: idle timeout and absolute lifetime are checked on every request."""

    __tablename__ = "auth_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mfa_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """Last TOTP confirmation in this session (login or step-up): step-up policies read its age."""


class UserRole(Base):
    """An additional role granted to a user (beyond ``users.role``), and who granted it."""

    __tablename__ = "user_roles"
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name"), primary_key=True)
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    granted_by: Mapped[str] = mapped_column(String(128))
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RecoveryCode(Base):
    """A single-use MFA recovery code: looked up by its public id, the secret part argon2id-hashed."""

    __tablename__ = "recovery_codes"
    code_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    code_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuthFailure(Base):
    """Failed-login counter of an account (``user:NAME``) or a source address (``addr:IP``)."""

    __tablename__ = "auth_failures"
    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_allowed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BreakGlassGrant(Base):
    """Emergency access of one user to one patient, time-boxed; the reason is sealed (it may name the patient)."""

    __tablename__ = "break_glass_grants"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    patient_ref: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class StudyAccessWindow(Base):
    """When a principal last retrieved or exported a study: the step-up window counts these."""

    __tablename__ = "study_access_window"
    principal: Mapped[str] = mapped_column(String(160), primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
