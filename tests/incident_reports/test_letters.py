"""The letter to one affected person: every element of GDPR Art. 34(2) and 45 CFR 164.404(c), and only their name."""

from __future__ import annotations

import pytest

from dicomguard.incident import IncidentReportError, TimelineEntry, patient_letter
from tests.incident_reports.facts import AWARE, bare, full

NAME = "Maria Example-Patient"


def test_the_letter_has_every_element() -> None:
    facts = full()
    letter = patient_letter(facts, patient_name=NAME)
    assert letter.startswith(f"Dear {NAME},")
    # What happened, with the dates of discovery and of the breach (164.404(c)(1)(A); Art. 34(2)).
    assert "What happened" in letter and "1 March 2025" in letter
    assert "17 February 2025" in letter and "27 February 2025" in letter
    # What of theirs was involved (164.404(c)(1)(B)).
    assert "medical images" in letter and "imaging reports" in letter and "date of birth" in letter
    # Likely consequences (Art. 33(3)(c) through 34(2)): the organisation's to write.
    assert "[TO COMPLETE: the likely consequences" in letter
    # What we did (Art. 33(3)(d); 164.404(c)(1)(D)).
    for step in facts.measures:
        assert f"- {step}" in letter
    # What they can do (164.404(c)(1)(C)).
    assert "What you can do" in letter and "explanations of benefits" in letter
    # Whom to contact (Art. 33(3)(b); 164.404(c)(1)(E)).
    assert facts.contact is not None and facts.contact in letter
    assert facts.organisation in letter


def test_what_is_unknown_is_to_complete() -> None:
    letter = patient_letter(bare(), patient_name=NAME)
    assert "[TO COMPLETE: whom to contact: a toll-free telephone number" in letter
    assert "[TO COMPLETE: what we did" in letter
    assert "[TO COMPLETE: the kinds of your information" in letter
    assert "still establishing exactly when" in letter


def test_given_consequences_and_categories_replace_the_defaults() -> None:
    letter = patient_letter(full(), patient_name=NAME, categories=["images"],
                            consequences="Someone may have seen your scans.")
    assert "Someone may have seen your scans." in letter and "[TO COMPLETE" not in letter
    assert "The information involved is:\n- medical images" in letter
    assert "date of birth" not in letter


def test_only_the_addressee_is_named() -> None:
    facts = full(
        title="Access to OTHER^PATIENT MRN-1234 by user:snooper",
        timeline=(TimelineEntry(AWARE, "officer.smith", "contain-user", "OTHER^PATIENT record viewed"),),
    )
    letter = patient_letter(facts, patient_name=NAME)
    assert letter.count(NAME) == 1
    for absent in ("OTHER^PATIENT", "MRN-1234", "snooper", "officer.smith", "192.0.2.44", "4242", facts.title):
        assert absent not in letter


def test_the_name_is_one_clean_line() -> None:
    letter = patient_letter(full(), patient_name="  Maria\n\x1b[2J Example  ")
    assert letter.startswith("Dear Maria ?[2J Example,\n")
    assert "\x1b" not in letter


@pytest.mark.parametrize("kwargs", [{"patient_name": " "}, {"patient_name": NAME, "language": "xx"}])
def test_bad_requests_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(IncidentReportError):
        patient_letter(full(), **kwargs)
