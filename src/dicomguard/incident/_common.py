"""Fields shared by several report kinds: the contact point, the measures taken, media notice."""

from __future__ import annotations

from typing import Final

from dicomguard.incident._text import bullets, when
from dicomguard.incident.deadlines import HIPAA_PERIOD, MEDIA_THRESHOLD
from dicomguard.incident.facts import NOTIFIED_MEDIA, IncidentFacts
from dicomguard.incident.model import Field

MEDIA_CITATION: Final = "45 CFR 164.406"


def contact_field(facts: IncidentFacts, key: str, label: str, citation: str) -> Field:
    """The contact point, or a field a person must write when none was entered."""
    if facts.contact is None or not facts.contact.strip():
        return Field(key, label, None, citation, True, "No contact was entered for the incident.")
    return Field(key, label, facts.contact, citation, False)


def organisation_field(facts: IncidentFacts, key: str, label: str, citation: str) -> Field:
    """The organisation that notifies (controller, covered entity), or a field to complete when none was entered."""
    name = facts.organisation.strip()
    return Field(key, label, name or None, citation, not name, "" if name else "No organisation was entered.")


def measures_field(facts: IncidentFacts, key: str, label: str, citation: str, *, lead: str = "") -> Field:
    """The containment and mitigation steps taken, one per line; to complete when none was recorded."""
    steps = [step for step in facts.measures if step.strip()]
    if not steps:
        return Field(key, label, lead or None, citation, True, "No containment or mitigation step was recorded.")
    return Field(key, label, (lead + "\n" if lead else "") + bullets(steps), citation, False)


def media_field(facts: IncidentFacts) -> Field:
    """Whether media notice is due (more than 500 residents of one State or jurisdiction, 45 CFR 164.406)."""
    label = "Notice to prominent media outlets"
    if facts.residents_by_state is None:
        return Field("media_notice", label, None, MEDIA_CITATION, True,
                     f"The States of residence of the affected individuals were not recorded: media notice is "
                     f"required for each State or jurisdiction with more than {MEDIA_THRESHOLD} affected residents.")
    above = sorted((state, n) for state, n in facts.residents_by_state.items() if n > MEDIA_THRESHOLD)
    if not above:
        return Field("media_notice", label, f"Not required: no State or jurisdiction has more than {MEDIA_THRESHOLD} "
                     "affected residents.", MEDIA_CITATION, False)
    listed = ", ".join(f"{state} ({n} residents)" for state, n in above)
    done = facts.notified_at(NOTIFIED_MEDIA)
    status = f"Made at {when(done)}." if done is not None else \
        f"Not recorded as made; due by {when(facts.opened_at + HIPAA_PERIOD)}."
    return Field("media_notice", label, f"Required for {listed}: notify prominent media outlets serving each, with the "
                 f"content of the individual notice. {status}", MEDIA_CITATION, False)
