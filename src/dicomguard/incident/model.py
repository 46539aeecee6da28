"""A notification report: fields with a stable key, the rule each answers, and whether a person must complete it.

A field the archive cannot know (the likely consequences, a toll-free number, a
contact nobody entered) has ``to_complete=True``: its ``value`` is ``None``, or a
suggested draft that a person must review (``draft``). Every rendering (JSON,
HTML, text) makes these fields stand out, so a report is never sent with a gap
that looks like an answer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dicomguard.incident.errors import IncidentReportError


@dataclass(frozen=True)
class Field:
    """One element of a notification: ``key`` is stable across versions, ``citation`` the rule that asks for it."""

    key: str
    label: str
    value: str | None
    citation: str
    to_complete: bool
    note: str = ""

    def __post_init__(self) -> None:
        if self.value is None and not self.to_complete:
            raise IncidentReportError(f"field {self.key} has no value and is not marked to complete")

    @property
    def draft(self) -> bool:
        """The value is a suggestion that a person must review before sending."""
        return self.to_complete and self.value is not None

    def to_json(self) -> dict[str, Any]:
        """The field as JSON-ready values."""
        return {"key": self.key, "label": self.label, "value": self.value, "citation": self.citation,
                "to_complete": self.to_complete, "draft": self.draft, "note": self.note}


@dataclass(frozen=True)
class Report:
    """A notification of one ``kind`` for one incident, as ordered fields."""

    kind: str
    title: str
    fields: list[Field]
    incident_id: int | None = None
    generated_at: datetime | None = None
    regulation: str = ""
    """The provisions the report answers, for its heading."""
    notes: list[str] = dataclasses.field(default_factory=list)
    """General remarks for whoever completes and sends the report."""

    def field(self, key: str) -> Field:
        """The field ``key``; ``KeyError`` when the report has none."""
        for item in self.fields:
            if item.key == key:
                return item
        raise KeyError(key)

    @property
    def keys(self) -> list[str]:
        """The fields' keys, in order."""
        return [item.key for item in self.fields]

    @property
    def to_complete(self) -> list[Field]:
        """The fields a person must write or review before the report is sent."""
        return [item for item in self.fields if item.to_complete]

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready values; ``to_complete`` lists the keys still to write or review."""
        return {
            "kind": self.kind,
            "title": self.title,
            "regulation": self.regulation,
            "incident_id": self.incident_id,
            "generated_at": None if self.generated_at is None else self.generated_at.isoformat(),
            "complete": not self.to_complete,
            "to_complete": [item.key for item in self.to_complete],
            "notes": list(self.notes),
            "fields": [item.to_json() for item in self.fields],
        }
