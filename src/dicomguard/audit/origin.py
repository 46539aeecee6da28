"""Where an audit record comes from: the archive's own observation, or a message another system asserts.

Every record carries an ``origin`` (sealed with it, :mod:`dicomguard.audit.trail`):

* ``local``: the archive observed the event and wrote the message itself;
* ``syslog:AE@ADDRESS``: received over syslog-TLS (RFC 5425) from the registered
  device ``AE``, identified by its client certificate, connected from ``ADDRESS``;
* ``import:FILE``: read from a file by ``dicomguard audit import``.

An imported message is evidence of what its source *claims* (PS3.15 A.5: the
AuditSourceIdentification names who reports, not who verified); every reader
shows it as *asserted by* that source (search, review report, FHIR export),
never as the archive's own observation.
"""

from __future__ import annotations

from dataclasses import dataclass

LOCAL = "local"
MAX_ORIGIN = 128
"""Characters stored (``audit_records.origin``)."""


def device_origin(ae_title: str, address: str) -> str:
    """The origin of a message a registered device sent over syslog-TLS."""
    return f"syslog:{ae_title}@{address}"[:MAX_ORIGIN]


def file_origin(name: str) -> str:
    """The origin of a message read from a file (``audit import``)."""
    return f"import:{name}"[:MAX_ORIGIN]


@dataclass(frozen=True)
class Origin:
    raw: str
    kind: str
    """``local``, ``device``, ``file`` or ``other``."""
    name: str = ""
    address: str = ""

    @classmethod
    def parse(cls, origin: str) -> Origin:
        if not origin or origin == LOCAL:
            return cls(origin or LOCAL, "local")
        scheme, _, rest = origin.partition(":")
        if scheme == "syslog" and rest:
            name, _, address = rest.rpartition("@")
            return cls(origin, "device", name or rest, address if name else "")
        if scheme == "import" and rest:
            return cls(origin, "file", rest)
        return cls(origin, "other", origin)

    @property
    def imported(self) -> bool:
        return self.kind != "local"

    @property
    def asserted_by(self) -> str | None:
        """Who asserts the record, for people (``None``: the archive's own observation)."""
        if self.kind == "local":
            return None
        if self.kind == "device":
            return f"device {self.name}" + (f" (syslog-TLS from {self.address})" if self.address else " (syslog-TLS)")
        if self.kind == "file":
            return f"file {self.name}"
        return self.raw

    @property
    def label(self) -> str:
        """``archive`` for the archive's own records, else ``asserted by ...`` (the review report's origin column)."""
        return "archive" if self.asserted_by is None else f"asserted by {self.asserted_by}"
