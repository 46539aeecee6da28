"""The letter to one affected person, in plain language.

It carries what GDPR Art. 34(2) asks of the communication to the data subject
(the nature of the breach, and the elements of Art. 33(3)(b)-(d): whom to
contact, the likely consequences, the measures taken) and what 45 CFR
164.404(c)(1) asks of the notice to an individual (what happened with its
dates, the types of information involved, the steps to take, what the
organisation is doing, how to reach it). It is the one output that names a
person, and only the addressee: the incident's title, its timeline and the
account under investigation stay out of it. What the archive cannot know (the
likely consequences, a missing contact) is left as a ``[TO COMPLETE: ...]``
marker that must be replaced before the letter is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from dicomguard.incident._text import (
    bullets,
    category_label,
    clean,
    day,
    exposed_categories,
    verbs,
)
from dicomguard.incident.errors import IncidentReportError
from dicomguard.incident.facts import IncidentFacts
from dicomguard.incident.hipaa import DEFAULT_STEPS

LANGUAGES: Final = ("en",)
"""The languages a letter can be written in."""


def to_complete(what: str) -> str:
    """The marker of a passage a person must write before the letter is sent."""
    return f"[TO COMPLETE: {what}]"


def patient_letter(facts: IncidentFacts, *, patient_name: str, language: str = "en",
                   categories: Sequence[str] | None = None, consequences: str | None = None) -> str:
    """The letter to ``patient_name`` about the incident of ``facts``, as plain text.

    ``categories`` are the data categories of this person that were involved
    (default: every category the breach scope exposed, announced as "may
    include"); ``consequences`` the likely consequences for them, as assessed by
    the organisation (default: a marker to complete).
    """
    if language not in LANGUAGES:
        raise IncidentReportError(f"no letter in language {language!r}; available: {', '.join(LANGUAGES)}")
    name = " ".join(clean(patient_name).split())
    if not name:
        raise IncidentReportError("patient_name is empty")
    sections = [
        f"Dear {name},",
        ("We are writing to tell you about an incident that involved your medical imaging records, what we have "
        "done about it, and what you can do."),
        _section("What happened", _what_happened(facts)),
        _section("What information was involved", _involved(facts, categories)),
        _section("What this may mean for you", consequences.strip() if consequences and consequences.strip()
                 else to_complete("the likely consequences for you, in plain words")),
        _section("What we are doing", _what_we_did(facts)),
        _section("What you can do", bullets(DEFAULT_STEPS)),
        _section("For more information", _contact(facts)),
        f"Yours sincerely,\n{facts.organisation.strip() or to_complete('name of the organisation')}",
        f"Reference: incident #{facts.id}",
    ]
    return clean("\n\n".join(sections) + "\n")


def _section(heading: str, body: str) -> str:
    return f"{heading}\n{body}"


def _what_happened(facts: IncidentFacts) -> str:
    text = f"On {day(facts.opened_at)} we discovered that"
    if facts.scope is not None:
        text += (f" an account or device with access to our medical imaging archive was used to "
                 f"{verbs(facts.scope, past=False)} records without authorisation. Your records were among them.")
    else:
        text += " records in our medical imaging archive, including yours, were accessed without authorisation."
    start, end = facts.occurred_from, facts.occurred_until
    if start is not None and end is not None:
        text += f" This took place between {day(start)} and {day(end)}." if day(start) != day(end) else \
            f" This took place on {day(start)}."
    elif start is not None:
        text += f" This started on {day(start)}."
    elif end is not None:
        text += f" This ended on {day(end)}."
    else:
        text += " We are still establishing exactly when it took place."
    return text


def _involved(facts: IncidentFacts, categories: Sequence[str] | None) -> str:
    if categories is not None:
        names = list(dict.fromkeys(categories))
        lead = "The information involved is:"
    else:
        names = exposed_categories(facts.scope) if facts.scope is not None else []
        lead = "The information involved may include:"
    if not names:
        return to_complete("the kinds of your information that were involved")
    return lead + "\n" + bullets(category_label(name) for name in names)


def _what_we_did(facts: IncidentFacts) -> str:
    steps = [step.strip() for step in facts.measures if step.strip()]
    if not steps:
        return to_complete("what we did to stop the incident and protect your information")
    return "As soon as we learned of it, we:\n" + bullets(steps)


def _contact(facts: IncidentFacts) -> str:
    if facts.contact is None or not facts.contact.strip():
        return to_complete("whom to contact: a toll-free telephone number and an e-mail address, web site or postal "
                           "address")
    return f"If you have questions, please contact:\n{facts.contact.strip()}"
