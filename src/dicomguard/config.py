"""Typed, immutable settings: ``HOME/config.toml`` overlaid by environment variables.

Every setting can be given as ``DICOMGUARD_<SECTION>__<NAME>`` (for example
``DICOMGUARD_DATABASE__URL``); the environment wins over the file. Bounds are
checked when the object is built, so a bad value stops the program at start
instead of weakening it at run time (the pattern of python-tuf's
``ngclient/config.py``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dicomguard.errors import ConfigurationError

HOME_ENV = "DICOMGUARD_HOME"
DEFAULT_HOME = "dicomguard-home"
CONFIG_FILE = "config.toml"

_MiB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArchiveSettings(_Section):
    ae_title: str = Field("DICOMGUARD", min_length=1, max_length=16, pattern=r"^[ -~]*[!-~][ -~]*$")
    """Application Entity title of the archive (PS3.5 AE VR: 16 printable characters)."""


class DatabaseSettings(_Section):
    url: str = ""
    """SQLAlchemy URL of the index. Empty: ``sqlite:///HOME/index.db`` (embedded default)."""


class S3Settings(_Section):
    """An S3-compatible bucket (blob storage now; the same shape for backup targets). No secret in here."""

    endpoint: str = ""
    """``https://host[:port]`` of the server; empty: AWS S3 in ``region``. Plain ``http://`` only to a loopback address."""
    bucket: str = Field("", pattern=r"^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    """The bucket (it must exist; dicomguard never creates or configures buckets)."""
    region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    credentials_file: str = ""
    """AWS-style credentials file (``[default]`` ``aws_access_key_id``, ``aws_secret_access_key``), mode 600; relative to the home unless absolute."""
    ca_file: str = ""
    """PEM bundle of the CAs for the endpoint's certificate (a private CA). Empty: the system's CAs. TLS is always verified."""
    prefix: str = Field("", max_length=256, pattern=r"^$|^[A-Za-z0-9!_.*'()-][A-Za-z0-9!_.*'()/-]*/$")
    """Key prefix of every object, ending in ``/`` (one bucket, several archives); empty: none."""
    addressing_style: Literal["path", "virtual"] = "path"
    """``path``: ``https://host/bucket/key`` (IP endpoints, most on-premises servers); ``virtual``: ``bucket.host``."""

    @field_validator("endpoint")
    @classmethod
    def _secure_endpoint(cls, value: str) -> str:
        if not value:
            return value
        url = urlsplit(value)
        if url.scheme not in ("https", "http") or not url.hostname or url.path not in ("", "/") or url.query or url.username:
            raise ValueError("endpoint must be https://host[:port]")
        if url.scheme == "http" and not _is_loopback(url.hostname):
            raise ValueError("plain http:// is refused except to a loopback address; use https://")
        return value.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StorageSettings(_Section):
    kind: Literal["filesystem", "s3"] = "filesystem"
    """Where blobs live: ``filesystem`` (``path``) or ``s3`` (``[storage.s3]``). Ciphertext only, either way."""
    path: str = "blobs"
    """Blob folder, relative to the home unless absolute. Holds ciphertext only."""
    s3: S3Settings = S3Settings()

    @model_validator(mode="before")
    @classmethod
    def _former_name(cls, data: Any) -> Any:
        """``backend`` (homes made before object storage) is the former name of ``kind``; ``kind`` wins."""
        if isinstance(data, dict) and "backend" in data:
            data = dict(data)
            backend = data.pop("backend")
            data.setdefault("kind", backend)
        return data

    @model_validator(mode="after")
    def _complete(self) -> StorageSettings:
        if self.kind == "s3" and not (self.s3.bucket and self.s3.credentials_file):
            raise ValueError("storage.kind = 's3' needs storage.s3.bucket and storage.s3.credentials_file")
        return self


class LimitSettings(_Section):
    """Resource limits: ingest (sanitize step) and per-request reads.

    Hostile files are refused before they cost memory, and no request costs more
    than these bounds whatever it asks for (a frame list, a viewport).
    """

    max_object_bytes: int = Field(2048 * _MiB, ge=1024, le=16384 * _MiB)
    max_element_bytes: int = Field(64 * _MiB, ge=1024)
    """Largest value of any element other than Pixel Data."""
    max_elements: int = Field(200_000, ge=16)
    max_sequence_depth: int = Field(16, ge=1, le=64)
    max_inflated_bytes: int = Field(256 * _MiB, ge=1024, le=16384 * _MiB)
    """Largest data set a Deflated object may inflate to (PS3.5 A.5), and largest frame decoded to render it."""
    max_inflation_ratio: int = Field(100, ge=2, le=2000)
    """A Deflated data set inflating to more than this many times its size is refused (zip bombs: about 1000)."""
    max_frames_per_request: int = Field(256, ge=1, le=100_000)
    """Distinct frames one WADO-RS frames request may name (PS3.18 8.3.3.1); duplicates are answered once."""
    max_rendered_size: int = Field(2048, ge=16, le=65535)
    """Largest columns and rows of a rendered image (PS3.18 8.3.5): a larger viewport is refused, a larger frame scaled down."""
    max_find_results: int = Field(10_000, ge=1, le=1_000_000)
    """Matches one C-FIND may answer (DIMSE has no paging): a query with more is refused, Out of Resources (A700) with
    the reason, before any match is sent; QIDO-RS pages instead (at most 1,000 per response)."""
    max_search_candidates: int = Field(10_000, ge=100, le=10_000_000)
    """Candidate rows one search (QIDO-RS, C-FIND, ``ls``, the console) may decrypt and decide: what the blind indexes
    left after narrowing, up to the end of the page asked for. A search that would read more is refused (QIDO-RS 413,
    C-FIND A700) with the reason, so no request does work proportional to the archive (ADR 0017)."""


class IngestSettings(_Section):
    batch_size: int = Field(64, ge=1, le=10_000)
    """Objects per index transaction during bulk import."""


class KdfSettings(_Section):
    """argon2id cost used when a key-encryption key is sealed (RFC 9106 section 4)."""

    time_cost: int = Field(3, ge=1, le=64)
    memory_kib: int = Field(64 * 1024, ge=8 * 1024, le=4 * 1024 * 1024)
    parallelism: int = Field(2, ge=1, le=64)


class TlsSettings(_Section):
    """TLS material. Empty: the archive's own CA (created by ``init``). Set all three to use a hospital CA."""

    server_names: list[str] = []
    """Names and addresses in the server certificate ``init`` issues (default: localhost and host name)."""
    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""


class NetworkSettings(_Section):
    host: str = "127.0.0.1"
    dimse_port: int = Field(11112, ge=1, le=65535)
    https_port: int = Field(8443, ge=1, le=65535)
    max_pdu: int = Field(0, ge=0)
    """Maximum PDU size we receive; 0 = unlimited (fastest; PS3.8 9.3.1), bounded by the object limits."""
    max_associations: int = Field(32, ge=1, le=1024)
    idle_timeout_s: float = Field(60.0, gt=0)
    rate_limit_per_minute: int = Field(60_000, ge=1)
    """Operations per device per minute (C-STORE, C-FIND, ...)."""
    max_request_bytes: int = Field(2048 * _MiB, ge=1024)
    """Largest STOW-RS body accepted."""
    header_timeout_s: float = Field(10.0, gt=0, le=300)
    """HTTPS: a request line and headers must arrive within this time (slowloris guard)."""
    body_idle_timeout_s: float = Field(30.0, gt=0, le=3600)
    """HTTPS: a request body that pauses longer than this ends the request (408)."""
    cors_origins: list[str] = []
    """Browser origins (e.g. an OHIF viewer) allowed to call DICOMweb; empty: none."""


class SyslogCollector(_Section):
    """An audit record repository (IHE ATNA): RFC 5424 syslog over mutual TLS (RFC 5425)."""

    host: str = Field(min_length=1, max_length=255)
    port: int = Field(6514, ge=1, le=65535)
    """6514 is the IANA port for syslog over TLS (RFC 5425 section 4.1)."""
    ca: str = ""
    """PEM file of the CA that issued the collector's certificate. Empty: the archive's own CA."""
    cert: str = ""
    """Client certificate (PEM) presented to the collector. Empty: the archive's server certificate."""
    key: str = ""
    """Private key of ``cert`` (PEM). Set together with ``cert``."""


class AuditSpoolSettings(_Section):
    """The spool is the audit table itself: nothing is dropped; these bound how late is too late."""

    warn_records: int = Field(10_000, ge=1)
    """``audit status`` reports a collector as lagging (exit 1) beyond this many unsent records."""
    warn_seconds: float = Field(300.0, gt=0)
    """... or when its oldest unsent record is older than this."""
    batch: int = Field(500, ge=1, le=10_000)
    """Records sent per write before waiting for the collector's TCP acknowledgement."""
    max_backoff_s: float = Field(60.0, ge=1, le=3600)
    """Longest wait between reconnection attempts (exponential back-off with jitter)."""
    send_timeout_s: float = Field(30.0, gt=0, le=3600)
    """A collector that accepts nothing for this long is treated as down (its batch is resent)."""


class AuditSettings(_Section):
    """DICOM audit trail (PS3.15 A.5): sources, collectors and spool bounds."""

    source_id: str = Field("", max_length=64)
    """AuditSourceID of our messages. Empty: the archive AE title."""
    enterprise_site: str = Field("", max_length=64)
    """AuditEnterpriseSiteID (e.g. the hospital). Empty: omitted."""
    syslog: list[SyslogCollector] = []
    spool: AuditSpoolSettings = AuditSpoolSettings()
    review_every_days: int = Field(7, ge=0, le=92)
    """``serve`` assembles a routine log review this often, for a security officer to sign off (0: never by itself)."""


class SessionSettings(_Section):
    """Login sessions (NIST SP 800-63B 7.1-7.2): automatic sign-off and lifetimes."""

    access_ttl_s: int = Field(300, ge=1, le=3600)
    """Lifetime of an access token (refreshed with the refresh token)."""
    idle_timeout_min: float = Field(15, gt=0, le=720)
    """Automatic sign-off after this long without a request (roles not listed in ``idle_by_role``)."""
    idle_by_role: dict[str, float] = {"admin": 10, "security_officer": 10}
    """Per-role idle timeout in minutes; a user with several roles gets the shortest."""
    absolute_lifetime_h: float = Field(12, gt=0, le=24)
    """A session ends this long after login, active or not."""


class PolicySettings(_Section):
    """Authorization (ADR 0003): Cedar policy files and the limits of break-glass and step-up."""

    directory: str = "policies"
    """Folder of ``*.cedar`` files, relative to the home; ``init`` writes the shipped defaults there."""
    default_department: str = Field("", max_length=64)
    """Department of a study stored by a principal with none, when the header names none either."""
    step_up_window_s: int = Field(3600, ge=60, le=7 * 86400)
    """Window over which distinct retrieved/exported studies are counted for the bulk step-up guard."""
    break_glass_minutes: int = Field(60, ge=1, le=24 * 60)
    break_glass_min_reason: int = Field(10, ge=1, le=500)
    """Shortest accepted break-glass reason, in characters (a typed justification, not "x")."""


class DetectionSettings(_Section):
    """Access-anomaly detection inside ``serve`` (``dicomguard.detect``): scoring budget and graded containment."""

    enabled: bool = True
    """Score every access in ``serve`` once context is imported (``dicomguard context import``)."""
    budget_per_1000_user_days: float = Field(1.0, gt=0, le=1000)
    """Alert thresholds are calibrated on the baseline to raise at most this many alerts per 1,000 user-days."""
    baseline_days: int = Field(28, ge=1, le=366)
    """Days of the audit trail the models learn from at start."""
    containment: dict[str, Literal["record", "step-up", "suspend"]] = {
        "low": "record", "medium": "record", "high": "step-up", "critical": "suspend"}
    """Per severity: ``record`` only; ``step-up`` (the user's next request needs a fresh TOTP, RFC 9470); ``suspend``
    (sessions, tokens and share links revoked, account disabled until ``alerts release``)."""
    poll_s: float = Field(0.5, gt=0, le=60)
    """How often ``serve`` reads new audit records to score (latency from access to alert)."""
    relearn_every_h: float = Field(24.0, gt=0, le=24 * 92)
    """``serve`` learns again from the last ``baseline_days`` this often (behaviour drifts; dispositions feed back)."""
    hl7_port: int = Field(2575, ge=1, le=65535)
    """TCP port of ``dicomguard context listen-hl7``: HL7 v2 ADT, order and staff messages over MLLP, mutual TLS only,
    from devices registered for ``context-feed`` (2575 is the IANA port of HL7 over MLLP)."""


class SharingSettings(_Section):
    """Share links and site-to-site transfer (ADR 0010)."""

    public_url: str = Field("", max_length=256)
    """Base of the links printed by ``share create`` (e.g. ``https://pacs.example.org:8443``); empty: this host and HTTPS port."""
    default_expiry_hours: int = Field(72, ge=1, le=24 * 90)
    max_expiry_hours: int = Field(24 * 30, ge=1, le=24 * 365)
    """Longest a link may live (``--expires``)."""
    pin_digits: int = Field(6, ge=6, le=12)
    max_pin_failures: int = Field(5, ge=1, le=20)
    """Wrong PINs before a link locks (its owner makes a new one)."""
    session_idle_s: int = Field(1800, ge=60, le=86400)
    """A recipient's session ends after this long without a request."""
    session_max_s: int = Field(8 * 3600, ge=300, le=7 * 86400)
    """A recipient's session ends after this long in any case (and when the link expires or is revoked)."""
    viewer_dir: str = ""
    """Folder of the OHIF viewer (``scripts/install-viewer.sh``); empty: the default install folder, if present."""
    transfer_retry_s: float = Field(5.0, gt=0, le=3600)
    """First retry delay of a transfer to a peer that is down; doubles per attempt up to ``transfer_retry_max_s``."""
    transfer_retry_max_s: float = Field(900.0, gt=0, le=86400)
    transfer_max_attempts: int = Field(50, ge=1, le=10_000)
    """Attempts before a transfer is given up (a Security Alert)."""
    transfer_batch: int = Field(50, ge=1, le=10_000)
    """Objects per STOW-RS request to a peer."""


class BackupTargetSettings(_Section):
    """One backup target (ADR 0007): a folder (another disk, a NAS mount, removable media) or an S3 bucket."""

    name: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    kind: Literal["folder", "s3"]
    location: str = ""
    """``folder``: the folder (absolute, or relative to the home). ``s3``: unused (``[backup.target.s3]``)."""
    s3: S3Settings = S3Settings()
    """``s3``: the bucket; ``immutable_days`` > 0 needs Object Lock enabled on it (it is checked at every run)."""
    retention_days: int = Field(90, ge=1, le=36500)
    """Snapshots older than this are pruned at the next run (on a locked bucket: once their lock has expired)."""
    immutable_days: int = Field(0, ge=0, le=36500)
    """``s3``: every object is written under S3 Object Lock COMPLIANCE retention for this many days (0: no lock)."""
    vault_lock_days: int = Field(7, ge=0, le=365)
    """``s3`` with a lock: how long each key-vault version is locked. An erasure reaches raw copies after this (ADR 0007)."""
    offsite: bool = False
    """The target is at another site (3-2-1-1-0 "1 off-site"); dicomguard cannot tell, the operator declares it."""
    offline: bool = False
    """Removable or air-gapped media, disconnected between runs (counts as "1 offline")."""

    @model_validator(mode="after")
    def _complete(self) -> BackupTargetSettings:
        if self.kind == "folder" and not self.location:
            raise ValueError(f"backup target {self.name}: kind = 'folder' needs location")
        if self.kind == "s3" and not (self.s3.bucket and self.s3.credentials_file):
            raise ValueError(f"backup target {self.name}: kind = 's3' needs s3.bucket and s3.credentials_file")
        if self.kind == "folder" and self.immutable_days:
            raise ValueError(f"backup target {self.name}: immutable_days needs an S3 bucket with Object Lock")
        return self


class BackupSettings(_Section):
    """Backups and restore drills (ADR 0007); ``serve`` runs them on this schedule."""

    target: list[BackupTargetSettings] = []
    every_hours: float = Field(24, ge=0, le=24 * 31)
    """``serve`` backs up to every target this often (0: never by itself; ``backup run`` still works)."""
    drill_every_days: float = Field(7, ge=0, le=365)
    """``serve`` drills the newest snapshot of every target this often (0: never by itself)."""
    overdue_factor: float = Field(1.5, ge=1, le=10)
    """A target is overdue (an alert, ``backup status`` exit 1) when its last success is older than this many periods."""

    @field_validator("target")
    @classmethod
    def _unique_names(cls, value: list[BackupTargetSettings]) -> list[BackupTargetSettings]:
        names = [t.name for t in value]
        if len(names) != len(set(names)):
            raise ValueError("backup target names must be unique")
        return value


class Settings(BaseSettings):
    """All dicomguard settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="DICOMGUARD_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    archive: ArchiveSettings = ArchiveSettings()
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    limits: LimitSettings = LimitSettings()
    ingest: IngestSettings = IngestSettings()
    kdf: KdfSettings = KdfSettings()
    tls: TlsSettings = TlsSettings()
    network: NetworkSettings = NetworkSettings()
    audit: AuditSettings = AuditSettings()
    policy: PolicySettings = PolicySettings()
    sessions: SessionSettings = SessionSettings()
    backup: BackupSettings = BackupSettings()
    detection: DetectionSettings = DetectionSettings()
    sharing: SharingSettings = SharingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment must override it.
        return (env_settings, init_settings)


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The home folder: explicit argument, else ``$DICOMGUARD_HOME``, else ``./dicomguard-home``."""
    chosen = home if home is not None else os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(chosen).expanduser().absolute()


def load_settings(home: Path) -> Settings:
    """Read ``home/config.toml`` (if present) and the environment into :class:`Settings`."""
    data: dict[str, Any] = {}
    path = home / CONFIG_FILE
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigurationError(f"invalid configuration: {exc}") from exc


def database_url(settings: Settings, home: Path) -> str:
    return settings.database.url or f"sqlite:///{home / 'index.db'}"


def storage_path(settings: Settings, home: Path) -> Path:
    p = Path(settings.storage.path)
    return p if p.is_absolute() else home / p


def home_relative(home: Path, path: str) -> Path:
    """A configured file: absolute, or relative to the home."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else home / p


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def default_config_toml(database_url: str = "", storage: StorageSettings | None = None) -> str:
    """The commented configuration file that ``init`` writes (with the storage it was given)."""
    st = storage or StorageSettings()
    return f'''# dicomguard configuration. Every setting can be overridden by an environment
# variable DICOMGUARD_<SECTION>__<NAME>, e.g. DICOMGUARD_DATABASE__URL.
# This file holds no secret: keys live sealed under keys/.

[archive]
ae_title = "DICOMGUARD"

[database]
# Empty: SQLite file index.db in the home (WAL mode).
# PostgreSQL: "postgresql+psycopg://user@host:5432/dbname"
url = "{database_url}"

[storage]
# Where the ciphertext blobs live: "filesystem" (path, relative to the home) or "s3" ([storage.s3]).
kind = {_toml(st.kind)}
path = {_toml(st.path)}

# S3-compatible object storage (kind = "s3"). The bucket must exist. No secret here: the access key is in
# credentials_file (mode 600, [default] aws_access_key_id / aws_secret_access_key). TLS is always verified
# (ca_file: a private CA's bundle); plain http:// only to a loopback address.
[storage.s3]
endpoint = {_toml(st.s3.endpoint)}
bucket = {_toml(st.s3.bucket)}
region = {_toml(st.s3.region)}
credentials_file = {_toml(st.s3.credentials_file)}
ca_file = {_toml(st.s3.ca_file)}
prefix = {_toml(st.s3.prefix)}
addressing_style = {_toml(st.s3.addressing_style)}

[limits]
max_object_bytes = {LimitSettings().max_object_bytes}
max_element_bytes = {LimitSettings().max_element_bytes}
max_elements = {LimitSettings().max_elements}
max_sequence_depth = {LimitSettings().max_sequence_depth}
# Deflated objects (PS3.5 A.5): largest inflated data set, and largest inflated/deflated size ratio.
max_inflated_bytes = {LimitSettings().max_inflated_bytes}
max_inflation_ratio = {LimitSettings().max_inflation_ratio}
# DICOMweb reads: distinct frames per frames request; largest rendered columns and rows.
max_frames_per_request = {LimitSettings().max_frames_per_request}
max_rendered_size = {LimitSettings().max_rendered_size}

[ingest]
batch_size = {IngestSettings().batch_size}

[network]
host = "127.0.0.1"
dimse_port = 11112
https_port = 8443
max_associations = 32
idle_timeout_s = 60.0
rate_limit_per_minute = 60000
# Browser viewers (OHIF) allowed to call DICOMweb, e.g. ["https://viewer.example.org"]
cors_origins = []

[tls]
# Empty: the archive's own CA made by init. A hospital CA: set all three paths.
cert_file = ""
key_file = ""
client_ca_file = ""

[kdf]
# argon2id parameters for sealing the key-encryption key (RFC 9106).
time_cost = {KdfSettings().time_cost}
memory_kib = {KdfSettings().memory_kib}
parallelism = {KdfSettings().parallelism}

[sessions]
# Automatic sign-off: minutes without a request (per role: the shortest of the user's roles applies).
access_ttl_s = {SessionSettings().access_ttl_s}
idle_timeout_min = {SessionSettings().idle_timeout_min}
absolute_lifetime_h = {SessionSettings().absolute_lifetime_h}

[sessions.idle_by_role]
admin = 10
security_officer = 10

[policy]
# Cedar policy files (relative to the home), validated at start: an invalid file refuses to start.
# Test a request with: dicomguard policy test --principal user:NAME --action retrieve --resource study:UID
directory = "{PolicySettings().directory}"
# Department of a study whose storer (device/user) and header name none.
default_department = ""
# Step-up: distinct studies retrieved/exported are counted over this window (the threshold is in guards.cedar).
step_up_window_s = {PolicySettings().step_up_window_s}
# Break-glass: lifetime of an emergency grant, and the shortest accepted reason.
break_glass_minutes = {PolicySettings().break_glass_minutes}
break_glass_min_reason = {PolicySettings().break_glass_min_reason}

[audit]
# AuditSourceID of the DICOM audit messages (PS3.15 A.5); empty: the archive AE title.
source_id = ""
enterprise_site = ""

[audit.spool]
# The audit table is the spool: nothing is ever dropped. These only say when forwarding is late.
warn_records = {AuditSpoolSettings().warn_records}
warn_seconds = {AuditSpoolSettings().warn_seconds}

[detection]
# Access-anomaly detection in serve (after "dicomguard context import ..."): alerts are calibrated to a budget,
# and contained per severity: "record", "step-up" (next request needs TOTP) or "suspend" (account locked).
enabled = true
budget_per_1000_user_days = {DetectionSettings().budget_per_1000_user_days}
baseline_days = {DetectionSettings().baseline_days}

[detection.containment]
low = "record"
medium = "record"
high = "step-up"
critical = "suspend"

[backup]
# serve backs up to every target this often (hours; 0: only "dicomguard backup run"), and drills (days).
every_hours = {BackupSettings().every_hours}
drill_every_days = {BackupSettings().drill_every_days}

# Backup targets (ADR 0007): repeat the block per target. A folder (another disk, NAS, removable media):
# [[backup.target]]
# name = "nas"
# kind = "folder"
# location = "/mnt/nas/dicomguard"
# retention_days = 90
# An S3 bucket with Object Lock (COMPLIANCE) enabled, off-site, locked for 30 days:
# [[backup.target]]
# name = "vault-s3"
# kind = "s3"
# immutable_days = 30
# offsite = true
# [backup.target.s3]
# endpoint = "https://s3.example.org"
# bucket = "dicomguard-backup"
# credentials_file = "/etc/dicomguard/backup-s3.credentials"

# Audit record repositories (IHE ATNA): RFC 5424 syslog over mutual TLS (RFC 5425).
# Repeat the block for each collector. Empty ca/cert/key: the archive's own CA and server certificate.
# [[audit.syslog]]
# host = "siem.example.org"
# port = 6514
# ca = "/etc/dicomguard/siem-ca.pem"
# cert = "/etc/dicomguard/audit-client.pem"
# key = "/etc/dicomguard/audit-client-key.pem"
'''
