"""HIPAA breach notification: the content of the notice to individuals, and the notice to the Secretary of HHS.

``hipaa-164.404``: the elements 45 CFR 164.404(c)(1) requires in the notice to
each individual: (A) what happened, with the date of the breach and of its
discovery; (B) the types of unsecured PHI involved; (C) the steps individuals
should take to protect themselves; (D) what the covered entity is doing to
investigate, mitigate harm and protect against further breaches; (E) contact
procedures, with a toll-free number and an e-mail address, web site or postal
address. Also the deadline (164.404(b)), the methods of notice (164.404(d)) and
whether media notice is due (164.406). The notice is written in plain language
(164.404(c)(2)) and names no employee account: it goes to the public.

``hhs``: what the HHS breach portal asks for under 45 CFR 164.408: the covered
entity and its contact, the dates, the number of individuals, the type and
location of the breach, the types of PHI, the safeguards and the actions taken,
the notices given, and when the submission is due (164.408(b) or (c)).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from dicomguard.incident._common import (
    contact_field,
    measures_field,
    media_field,
    organisation_field,
)
from dicomguard.incident._text import (
    HHS_PHI_TYPES,
    bullets,
    category_label,
    exposed_categories,
    integrity_sentence,
    scope_description,
    verbs,
    when,
)
from dicomguard.incident.deadlines import HHS as HHS_DEADLINE
from dicomguard.incident.deadlines import HIPAA_INDIVIDUALS, deadlines
from dicomguard.incident.facts import NOTIFIED_INDIVIDUALS, IncidentFacts
from dicomguard.incident.model import Field, Report

NOTICE_KIND: Final = "hipaa-164.404"
HHS_KIND: Final = "hhs"
NOTICE_REQUIRED: Final = (
    "what_happened", "breach_date", "discovery_date", "phi_types", "steps_individuals", "entity_actions",
    "contact_procedures", "toll_free_number", "notice_deadline", "notice_method",
)
HHS_REQUIRED: Final = (
    "covered_entity", "entity_type", "entity_contact", "breach_start", "breach_end", "discovery_date",
    "individuals_affected", "breach_type", "breach_location", "phi_types", "description", "safeguards_in_place",
    "actions_taken", "individual_notice", "substitute_notice", "media_notice", "submission_deadline",
)
A: Final = "45 CFR 164.404(c)(1)(A)"
E: Final = "45 CFR 164.404(c)(1)(E)"
HHS: Final = "45 CFR 164.408(a)"

DEFAULT_STEPS: Final = (
    ("Review the statements and explanations of benefits you receive from your health plan and your providers, and "
    "tell them about any care or service you did not receive."),
    ("Be wary of calls, e-mails or letters that mention your medical details to ask for information or payment; we "
    "will never ask you for a password or for payment details about this incident."),
    "You may ask us for a copy of your records and for a list of the disclosures we made of them.",
)
"""Steps that fit a breach of imaging records, whatever else the covered entity adds."""

NOTICE_METHODS: Final = (
    "Written notice by first-class mail to each individual's last known address, or by e-mail if the individual "
    "agreed to electronic notice; to the next of kin or personal representative of a deceased individual when the "
    "address is known.\n"
    "Substitute notice when contact details are missing or out of date: for fewer than 10 individuals, another "
    "written notice, telephone or other means; for 10 or more, a conspicuous posting on the home page of the web "
    "site for 90 days or notice in major print or broadcast media where they likely live, with a toll-free number "
    "kept working for at least 90 days.\n"
    "When misuse may be imminent, telephone as well, in addition to the written notice."
)


def build_notice(facts: IncidentFacts, now: datetime) -> Report:
    """The content of the 164.404 notice to individuals for ``facts`` at ``now`` (one text for every letter)."""
    fields = [
        organisation_field(facts, "covered_entity", "Covered entity", "45 CFR 164.404(a)"),
        Field("incident", "Incident reference", f"#{facts.id}", "45 CFR 164.404(a)", False),
        _what_happened(facts),
        _breach_date(facts, "breach_date", "Date of the breach", A),
        Field("discovery_date", "Date of discovery", when(facts.opened_at), A, False),
        _phi_types(facts),
        Field("steps_individuals", "Steps individuals should take to protect themselves", bullets(DEFAULT_STEPS),
              "45 CFR 164.404(c)(1)(C)", True, "Suggested draft for a breach of imaging records: add what fits this "
              "breach (for example credit monitoring if financial or insurance numbers were involved)."),
        _entity_actions(facts),
        contact_field(facts, "contact_procedures", "Contact procedures (e-mail address, web site or postal address)",
                      E),
        Field("toll_free_number", "Toll-free telephone number", None, E, True,
              "Required in every notice; with substitute notice to 10 or more individuals it must work for at least "
              "90 days (45 CFR 164.404(d)(2)(ii))."),
        _deadline_field(facts, now, HIPAA_INDIVIDUALS, "notice_deadline", "Notice to individuals due by"),
        Field("notice_method", "Methods of notice", NOTICE_METHODS, "45 CFR 164.404(d)", False),
        media_field(facts),
    ]
    notes = ["Write the notice in plain language (45 CFR 164.404(c)(2)).",
             "This content goes to the public: it names no employee account and no patient."]
    return Report(NOTICE_KIND, f"Breach notice to individuals - incident #{facts.id}", fields, facts.id, now,
                  "45 CFR 164.404", notes)


def build_hhs(facts: IncidentFacts, now: datetime) -> Report:
    """What to enter in the HHS breach portal for ``facts`` at ``now`` (45 CFR 164.408)."""
    scope = facts.scope
    count = facts.individuals
    types = _hhs_types(facts)
    fields = [
        Field("incident", "Incident", f"#{facts.id}: {facts.title}", HHS, False),
        organisation_field(facts, "covered_entity", "Name of the covered entity", HHS),
        Field("entity_type", "Type of covered entity", "Healthcare provider", HHS, True,
              "Suggested: check (healthcare provider, health plan or healthcare clearinghouse), and add the address."),
        contact_field(facts, "entity_contact", "Contact for this breach (name, telephone, e-mail)", HHS),
        _breach_date(facts, "breach_start", "Breach start date", HHS, end=False),
        _breach_date(facts, "breach_end", "Breach end date", HHS, start=False),
        Field("discovery_date", "Discovery date", when(facts.opened_at), HHS, False),
        Field("individuals_affected", "Approximate number of individuals affected",
              None if count is None else str(count), HHS, count is None,
              "" if count is not None else "The breach scope has not been computed yet."),
        Field("breach_type", "Type of breach", "Unauthorized access/disclosure", HHS, True,
              "Suggested from the audit trail; choose hacking/IT incident instead if credentials were stolen or a "
              "system was compromised."),
        _location(facts),
        Field("phi_types", "Type of protected health information involved", ", ".join(types) if types else None, HHS,
              not types, "" if types else "The breach scope names no data category yet."),
        Field("description", "Brief description of the breach",
              scope_description(facts, name_subject=False) if scope else None, HHS, scope is None,
              "" if scope else "The breach scope has not been computed: describe what happened."),
        Field("safeguards_in_place", "Safeguards in place before the breach", None, HHS, True,
              "Privacy Rule safeguards and Security Rule administrative, physical and technical safeguards in force "
              "before the breach: a person must state them."),
        measures_field(facts, "actions_taken", "Actions taken in response", HHS),
        _individual_notice(facts),
        Field("substitute_notice", "Substitute notice required", None, "45 CFR 164.404(d)(2)", True,
              "Yes if the contact details of 10 or more individuals are missing or out of date."),
        media_field(facts),
        _deadline_field(facts, now, HHS_DEADLINE, "submission_deadline", "Notice to the Secretary due by"),
    ]
    return Report(HHS_KIND, f"Breach report to the Secretary of HHS - incident #{facts.id}", fields, facts.id, now,
                  "45 CFR 164.408", ["Submit through the HHS breach portal; keep a copy with the incident."])


def _what_happened(facts: IncidentFacts) -> Field:
    label = "What happened"
    scope = facts.scope
    if scope is None:
        return Field("what_happened", label, None, A, True, "The breach scope has not been computed: describe what "
                     "happened in plain language.")
    text = (f"On {when(facts.opened_at)} we discovered that an account or device with access to our medical imaging "
            f"archive was used to {verbs(scope, past=False)} "
            f"the imaging records of {scope.patients} patients between {when(scope.since)} and {when(scope.until)}.")
    return Field("what_happened", label, text, A, False)


def _breach_date(facts: IncidentFacts, key: str, label: str, citation: str, *, start: bool = True,
                 end: bool = True) -> Field:
    parts = []
    if start and facts.occurred_from is not None:
        parts.append(f"from {when(facts.occurred_from)}" if end else when(facts.occurred_from))
    if end and facts.occurred_until is not None:
        parts.append(f"to {when(facts.occurred_until)}" if start else when(facts.occurred_until))
    if not parts:
        return Field(key, label, None, citation, True, "Not established yet: give it if known.")
    return Field(key, label, " ".join(parts), citation, False)


def _phi_types(facts: IncidentFacts) -> Field:
    label = "Types of unsecured protected health information involved"
    citation = "45 CFR 164.404(c)(1)(B)"
    scope = facts.scope
    categories = exposed_categories(scope) if scope else []
    if not categories:
        return Field("phi_types", label, None, citation, True, "The breach scope names no data category yet.")
    return Field("phi_types", label, bullets(category_label(name) for name in categories), citation, False,
                 "Stored encrypted, but served readable to the account or device used: unsecured for this breach.")


def _entity_actions(facts: IncidentFacts) -> Field:
    lines = []
    if facts.scope is not None:
        lines.append(f"To investigate: we examined the archive's audit trail from {when(facts.scope.since)} to "
                     f"{when(facts.scope.until)}. {integrity_sentence(facts.scope)}")
    lead = "\n".join(lines + ["To mitigate harm and protect against further breaches:"])
    label = "What we are doing to investigate, mitigate harm and protect against further breaches"
    return measures_field(facts, "entity_actions", label, "45 CFR 164.404(c)(1)(D)", lead=lead)


def _deadline_field(facts: IncidentFacts, now: datetime, name: str, key: str, label: str) -> Field:
    deadline = next(item for item in deadlines(facts, now) if item.name == name)
    return Field(key, label, f"{when(deadline.due)} ({deadline.status})", deadline.citation, False, deadline.note)


def _hhs_types(facts: IncidentFacts) -> list[str]:
    if facts.scope is None:
        return []
    types = {HHS_PHI_TYPES.get(name, "Other") for name in exposed_categories(facts.scope)}
    return [kind for kind in ("Demographic", "Financial", "Clinical", "Other") if kind in types]


def _location(facts: IncidentFacts) -> Field:
    label = "Location of the breached information"
    scope = facts.scope
    left = scope is not None and (scope.shares > 0 or any(
        counts.get("events", 0) > 0 for action, counts in scope.by_action.items() if action in ("export", "share")))
    if left:
        return Field("breach_location", label, "Network server (the DICOM image archive)", HHS, True,
                     "Data left the archive by export or share link: add where it went (e-mail, laptop, portable "
                     "device, other).")
    return Field("breach_location", label, "Network server (the DICOM image archive)", HHS, False)


def _individual_notice(facts: IncidentFacts) -> Field:
    label = "Notice to individuals"
    done = facts.notified_at(NOTIFIED_INDIVIDUALS)
    if done is not None:
        return Field("individual_notice", label, f"Given at {when(done)}.", "45 CFR 164.404(b)", False)
    return Field("individual_notice", label, None, "45 CFR 164.404(b)", True,
                 "Not recorded as given yet: give the date once the notices are sent.")
