"""Phrases shared by the reports and the letters: dates, data categories, what the scope shows.

Everything here is derived from the facts alone (counts, category names, dates):
nothing names a patient, and no number appears that the facts do not hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final

from dicomguard.incident.facts import IncidentFacts, ScopeSummary

_MONTHS: Final = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                  "November", "December")

CATEGORY_LABELS: Final[Mapping[str, str]] = {
    "identifiers": "identifying and demographic details stored with the images (such as name, patient ID, "
                   "date of birth and sex)",
    "images": "medical images",
    "reports": "imaging reports and other clinical documents",
}
"""Plain-language description of each data category of the breach scope; other names are shown as given."""

HHS_PHI_TYPES: Final[Mapping[str, str]] = {"identifiers": "Demographic", "images": "Clinical", "reports": "Clinical"}
"""The HHS breach portal's type of PHI for each data category; other categories are reported as ``Other``."""

ACTION_VERBS: Final[Mapping[str, tuple[str, str]]] = {
    "query": ("searched", "search"),
    "retrieve": ("viewed or downloaded", "view or download"),
    "export": ("exported", "export"),
    "share": ("shared through share links", "share through share links"),
}
"""What an action of the breach scope did to the records, in plain words; other actions are shown by name."""

_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """``text`` without control characters (terminal escapes, NUL), keeping line breaks and tabs."""
    return _CONTROL.sub("?", text)


def when(at: datetime) -> str:
    """A precise time for a report: ``2025-03-01 14:05 UTC``."""
    return f"{at:%Y-%m-%d %H:%M} {at.tzname() or at.strftime('%z')}"


def day(at: datetime) -> str:
    """A date for a letter, independent of the host's locale: ``1 March 2025``."""
    return f"{at.day} {_MONTHS[at.month - 1]} {at.year}"


def category_label(name: str) -> str:
    """The plain-language description of a data category."""
    return CATEGORY_LABELS.get(name, name.replace("-", " ").replace("_", " "))


def exposed_categories(scope: ScopeSummary) -> list[str]:
    """The categories with at least one patient exposed, in a stable order (known ones first)."""
    known = [name for name in CATEGORY_LABELS if scope.categories.get(name, 0) > 0]
    other = sorted(name for name, count in scope.categories.items() if count > 0 and name not in CATEGORY_LABELS)
    return known + other


def bullets(lines: Iterable[str]) -> str:
    """One ``- `` line per item."""
    return "\n".join(f"- {line}" for line in lines)


def verbs(scope: ScopeSummary, *, past: bool = True) -> str:
    """What was done to the records, as a phrase: ``searched, viewed or downloaded and exported`` (``search...``)."""
    form = 0 if past else 1
    done = [ACTION_VERBS[action][form] if action in ACTION_VERBS else action
            for action, counts in scope.by_action.items() if any(count > 0 for count in counts.values())]
    if not done:
        return "accessed" if past else "access"
    return done[0] if len(done) == 1 else ", ".join(done[:-1]) + " and " + done[-1]


def action_lines(scope: ScopeSummary) -> list[str]:
    """One line per action of the scope with its counts: ``retrieve: 12 patients, 30 studies, 415 events``."""
    lines = []
    for action, counts in scope.by_action.items():
        parts = [f"{counts[key]} {key}" for key in ("patients", "studies", "events") if key in counts]
        parts += [f"{count} {key}" for key, count in counts.items() if key not in ("patients", "studies", "events")]
        lines.append(f"{action}: {', '.join(parts) if parts else 'no counts'}")
    return lines


def integrity_sentence(scope: ScopeSummary) -> str:
    """Whether the stored objects were found altered (an integrity breach besides the confidentiality one)."""
    if scope.verified_at is None or scope.integrity_problems is None:
        return "Integrity of the stored objects: not verified yet."
    unchanged = "" if scope.unchanged_objects is None else f"; {scope.unchanged_objects} objects unchanged"
    if scope.integrity_problems == 0:
        return (f"Integrity of the stored objects: verified at {when(scope.verified_at)}{unchanged}; "
                "no alteration found.")
    return (f"Integrity of the stored objects: verified at {when(scope.verified_at)}{unchanged}; "
            f"{scope.integrity_problems} objects failed verification, so this is also a breach of integrity.")


def breach_period(facts: IncidentFacts) -> str | None:
    """When the breach took place, as far as the facts say, or ``None``."""
    start, end = facts.occurred_from, facts.occurred_until
    if start is not None and end is not None:
        return f"from {when(start)} to {when(end)}"
    if start is not None:
        return f"from {when(start)} (end not established)"
    if end is not None:
        return f"until {when(end)} (start not established)"
    return None


def scope_description(facts: IncidentFacts, *, name_subject: bool) -> str:
    """What the audit trail shows: who (only when ``name_subject``), when, what was done, how far data went."""
    scope = facts.scope
    if scope is None:
        return "The breach scope has not been computed from the audit trail yet."
    who = f"the account or device under investigation ({scope.subject})" if name_subject else \
        "the account or device under investigation"
    lines = [(f"Between {when(scope.since)} and {when(scope.until)} the archive's audit trail records that {who} "
             f"{verbs(scope)} medical imaging records of {scope.patients} patients ({scope.studies} studies, "
             f"{scope.instances} DICOM objects).")]
    if scope.by_action:
        lines.append("By action:\n" + bullets(action_lines(scope)))
    if scope.shares or scope.addresses:
        lines.append(f"Data left the archive through {scope.shares} share links and was reached from "
                     f"{len(scope.addresses)} network addresses.")
    lines.append(integrity_sentence(scope))
    return "\n".join(lines)
