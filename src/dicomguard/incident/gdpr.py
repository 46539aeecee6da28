"""Notification of a personal data breach to the supervisory authority (GDPR Art. 33).

Art. 33(3) lists what the notification must at least contain: (a) the nature of
the breach with, where possible, the categories and approximate number of data
subjects and of personal data records concerned; (b) the DPO or other contact
point; (c) the likely consequences; (d) the measures taken or proposed,
including those to mitigate adverse effects. A notification later than 72 hours
after awareness gives the reasons for the delay (33(1)); what is not known yet
may follow in phases (33(4)); the breach is documented whatever is notified
(33(5)). Each becomes one field with a stable key (``REQUIRED_FIELDS`` in
:mod:`.reports`); the likely consequences and the mitigation still to propose
are always for a person to write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from dicomguard.incident._common import (
    contact_field,
    measures_field,
    organisation_field,
)
from dicomguard.incident._text import (
    breach_period,
    bullets,
    category_label,
    exposed_categories,
    scope_description,
    when,
)
from dicomguard.incident.deadlines import AUTHORITY_PERIOD
from dicomguard.incident.facts import (
    CLOSED,
    NOTIFIED_AUTHORITY,
    NOTIFIED_INDIVIDUALS,
    IncidentFacts,
)
from dicomguard.incident.model import Field, Report

KIND: Final = "gdpr-art33"
REQUIRED: Final = (
    "nature", "data_subject_categories", "data_subjects_approx", "record_categories", "records_approx", "contact",
    "likely_consequences", "measures_taken", "measures_mitigation", "delay_reasons", "phased_information",
)
NATURE: Final = "GDPR Art. 33(3)(a)"


def build(facts: IncidentFacts, now: datetime) -> Report:
    """The Art. 33 notification of ``facts`` as it stands at ``now``."""
    scope = facts.scope
    fields = [
        organisation_field(facts, "controller", "Controller", "GDPR Art. 33(1)"),
        Field("incident", "Incident", f"#{facts.id}: {facts.title} (severity {facts.severity}, status {facts.status})",
              "GDPR Art. 33(5)", False),
        Field("awareness", "Time the controller became aware", when(facts.opened_at), "GDPR Art. 33(1)", False,
              "The 72 hours of Art. 33(1) run from this time."),
        _period(facts),
        Field("nature", "Nature of the breach", scope_description(facts, name_subject=True) if scope else None, NATURE,
              scope is None, "" if scope else "The breach scope has not been computed: describe what happened."),
        *_subjects_and_records(facts),
        contact_field(facts, "contact", "Name and contact details of the data protection officer or other contact "
                      "point", "GDPR Art. 33(3)(b)"),
        Field("likely_consequences", "Likely consequences of the breach", None, "GDPR Art. 33(3)(c)", True,
              "Assess for the persons concerned: exposure of health data (a special category, Art. 9(1)), "
              "discrimination, distress, damage to reputation, misuse of identifiers. The archive cannot judge this."),
        measures_field(facts, "measures_taken", "Measures taken to address the breach", "GDPR Art. 33(3)(d)"),
        Field("measures_mitigation", "Measures taken or proposed to mitigate possible adverse effects", None,
              "GDPR Art. 33(3)(d)", True,
              "For example: informing the persons concerned, asking recipients to delete what they received, "
              "revoking share links, resetting credentials, further training or sanctions."),
        _individuals(facts),
        _delay(facts, now),
        _phases(facts),
        Field("documentation", "Chronology of the response", _timeline(facts), "GDPR Art. 33(5)", False),
    ]
    notes = ["Personal data concerning health is a special category (GDPR Art. 9(1)): weigh the risk accordingly.",
             ("Built from counts and categories, this report names no patient; check that the free text written during "
             "the response (title, timeline, measures) does not either.")]
    if scope is None or facts.status != CLOSED:
        notes.append("The investigation is not closed: the counts may still change.")
    return Report(KIND, f"Personal data breach notification to the supervisory authority - incident #{facts.id}",
                  fields, facts.id, now, "GDPR Art. 33", notes)


def _period(facts: IncidentFacts) -> Field:
    period = breach_period(facts)
    if period is None:
        return Field("breach_period", "When the breach took place", None, NATURE, True,
                     "Not established yet; give it when known or say that it is not known.")
    return Field("breach_period", "When the breach took place", period, NATURE, False)


def _subjects_and_records(facts: IncidentFacts) -> list[Field]:
    scope = facts.scope
    labels = ("Categories of data subjects concerned", "Approximate number of data subjects concerned",
              "Categories of personal data records concerned", "Approximate number of personal data records concerned")
    keys = ("data_subject_categories", "data_subjects_approx", "record_categories", "records_approx")
    if scope is None:
        return [Field(key, label, None, NATURE, True, "The breach scope has not been computed yet.")
                for key, label in zip(keys, labels, strict=True)]
    subjects = "Patients whose medical imaging records are held in the archive."
    subjects_note = ("Image headers also name health-care staff (referring and performing physicians, operators): they "
                     "are data subjects too, though not counted here." if scope.categories.get("identifiers") else "")
    categories = exposed_categories(scope)
    records = bullets(f"{category_label(name)}: {scope.categories[name]} patients" for name in categories)
    events = sum(counts.get("events", 0) for counts in scope.by_action.values())
    provisional = "" if facts.status == CLOSED else \
        "Counted from the audit trail; may change while the investigation runs."
    return [
        Field(keys[0], labels[0], subjects, NATURE, False, subjects_note),
        Field(keys[1], labels[1], f"{scope.patients} patients", NATURE, False, provisional),
        Field(keys[2], labels[2], (records + "\nHealth data: a special category (GDPR Art. 9(1)).") if categories
              else None, NATURE, not categories, "" if categories else "The scope names no data category."),
        Field(keys[3], labels[3], f"{scope.studies} imaging studies ({scope.instances} DICOM objects); {events} "
              "access events recorded", NATURE, False, provisional),
    ]


def _individuals(facts: IncidentFacts) -> Field:
    label = "Communication to the persons concerned"
    done = facts.notified_at(NOTIFIED_INDIVIDUALS)
    if done is not None:
        return Field("individuals_communication", label, f"Made at {when(done)}.", "GDPR Art. 34(1)", False)
    return Field("individuals_communication", label, "Not made yet.", "GDPR Art. 34(1), 34(3)", True,
                 "Decide whether the breach is likely to result in a high risk: if so, tell the persons concerned "
                 "without undue delay (Art. 34(1)) unless Art. 34(3) applies; say here when, or why not.")


def _delay(facts: IncidentFacts, now: datetime) -> Field:
    label = "Reasons for the delay (notification later than 72 hours)"
    due = facts.opened_at + AUTHORITY_PERIOD
    done = facts.notified_at(NOTIFIED_AUTHORITY)
    if done is not None and done <= due:
        return Field("delay_reasons", label, f"Not applicable: notified at {when(done)}, within 72 hours.",
                     "GDPR Art. 33(1)", False)
    if done is not None or now > due:
        return Field("delay_reasons", label, None, "GDPR Art. 33(1)", True,
                     f"The 72 hours ended at {when(due)}: the notification must give the reasons for the delay.")
    return Field("delay_reasons", label, f"Not applicable if sent by {when(due)} (72 hours after awareness).",
                 "GDPR Art. 33(1)", False, "If sent later, the reasons for the delay must be given.")


def _phases(facts: IncidentFacts) -> Field:
    pending = []
    if facts.scope is None:
        pending.append("the persons and records concerned (the breach scope is not computed yet)")
    elif facts.scope.verified_at is None:
        pending.append("whether stored data was altered (integrity not verified yet)")
    if facts.occurred_from is None:
        pending.append("when the breach began")
    if facts.status != CLOSED:
        pending.append("the outcome of the investigation, which is still running")
    label = "Information provided in phases"
    if not pending:
        return Field("phased_information", label, "All the information is provided in this notification.",
                     "GDPR Art. 33(4)", False)
    return Field("phased_information", label, "This notification is given in phases; still to follow without undue "
                 "further delay:\n" + bullets(pending), "GDPR Art. 33(4)", False)


def _timeline(facts: IncidentFacts) -> str:
    entries = sorted(facts.timeline, key=lambda entry: entry.at)
    if not entries:
        return "No step recorded yet."
    return bullets(f"{when(entry.at)} {entry.action}" + (f": {entry.detail}" if entry.detail else "")
                   for entry in entries)
