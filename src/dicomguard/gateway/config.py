"""Gateway settings: one immutable object, bounds checked at construction.

The gateway's settings come from the command line (the archive's
``config.toml`` has no ``[gateway]`` section yet); the archive-wide limits
(largest object, PDU size, association count, idle timeout) come from the
archive settings, so one home enforces one set of limits on every adapter.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dicomguard.errors import DicomGuardError

DEFAULT_GATEWAY_AE = "DICOMGUARD-GW"
DEFAULT_LISTEN = "127.0.0.1:11113"
QUEUE_DIR = "gateway-queue"

# PS3.5 Table 6.2-1, AE: at most 16 characters of the default repertoire, no
# backslash, no control characters; leading and trailing spaces are not significant.
_AE = re.compile(r"^[ -\[\]-~]{1,16}$")


class GatewayError(DicomGuardError):
    """The gateway cannot start or cannot do what was asked (bad settings, queue in use)."""


class GatewayFailed(GatewayError):
    """A running gateway had to stop (e.g. its forwarder died); the queue is intact."""


def check_ae(ae: str, what: str = "AE title") -> str:
    """A PS3.5 AE title with its non-significant spaces removed; raises :class:`GatewayError`."""
    stripped = ae.strip(" ")
    if not stripped or not _AE.match(ae):
        raise GatewayError(f"{what} must be 1-16 printable ASCII characters without backslash")
    return stripped


def normalize_ip(value: str) -> str:
    """The canonical text of an IP address (IPv4-mapped IPv6 becomes IPv4); raises :class:`GatewayError`."""
    try:
        ip = ipaddress.ip_address(value.strip().split("%", 1)[0])
    except ValueError:
        raise GatewayError(f"not an IP address: {value!r}") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def parse_host_port(value: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise GatewayError(f"{what} must be HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def check_listen_host(host: str) -> str:
    """The plaintext listener binds one interface: wildcard addresses are refused."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host  # a host name resolving to one interface address
    if ip.is_unspecified:
        raise GatewayError(
            "the plaintext listener must be bound to one interface address (e.g. the modality network's), not a wildcard"
        )
    return host


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway needs besides the archive. Validated in ``__post_init__``."""

    listen: tuple[str, int]
    upstream: tuple[str, int]
    upstream_ae: str
    cert_file: Path
    key_file: Path
    ca_file: Path
    ae_title: str = DEFAULT_GATEWAY_AE
    """The gateway's own AE title: called AE for modalities, calling AE upstream (bound to ``cert_file``)."""
    upstream_server_name: str | None = None
    """Name checked against the upstream's certificate; default: the upstream host."""
    pass_through: bool = False
    """Forward each C-STORE synchronously and answer with the upstream's status; no local queue."""
    spool: Literal["disk", "memory"] = "disk"
    """How a received dataset is held until it is encrypted: a private spool file (streamed, fast) or memory only."""
    spool_dir: Path | None = None
    """Parent folder of the spool; default the memory file system ``/dev/shm`` (or memory only where there is
    none), so plaintext never reaches a disk. A folder on a persistent disk is honoured with a warning."""
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    dead_letter_after: int = 3
    """Attempts refused with a permanent failure status before an item becomes a dead letter."""
    upstream_timeout_s: float = 60.0
    upstream_idle_release_s: float = 5.0
    max_queue_bytes: int = 100 * 1024**3
    max_object_bytes: int = 2 * 1024**3
    max_pdu: int = 0
    max_associations: int = 32
    idle_timeout_s: float = 60.0
    shutdown_grace_s: float = 30.0

    def __post_init__(self) -> None:
        check_listen_host(self.listen[0])
        object.__setattr__(self, "ae_title", check_ae(self.ae_title, "gateway AE title"))
        object.__setattr__(self, "upstream_ae", check_ae(self.upstream_ae, "upstream AE title"))
        if not 0.01 <= self.initial_backoff_s <= self.max_backoff_s <= 3600:
            raise GatewayError("back-off must satisfy 0.01 <= initial <= maximum <= 3600 seconds")
        if not 1 <= self.dead_letter_after <= 1000:
            raise GatewayError("dead-letter-after must be between 1 and 1000 attempts")
        if not 1 <= self.upstream_timeout_s <= 3600:
            raise GatewayError("upstream timeout must be between 1 and 3600 seconds")
        if self.max_queue_bytes < 1024 * 1024:
            raise GatewayError("the queue limit must be at least 1 MiB")
        if self.spool not in ("disk", "memory"):
            raise GatewayError("spool is 'disk' or 'memory'")
        if not 0 <= self.shutdown_grace_s <= 3600:
            raise GatewayError("shutdown grace must be between 0 and 3600 seconds")

    @property
    def server_name(self) -> str:
        return self.upstream_server_name or self.upstream[0]
