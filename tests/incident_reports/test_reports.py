"""The notification reports: every element the provision requires, gaps that stand out, nothing about patients.

The expected keys and citations below are written from the provisions (GDPR
Art. 33(1), 33(3)(a)-(d), 33(4); 45 CFR 164.404(b), (c)(1)(A)-(E), (d); 164.406;
164.408), not read back from the package.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta

import lxml.html
import pytest

from dicomguard.incident import (
    KINDS,
    NOTIFIED_AUTHORITY,
    REQUIRED_FIELDS,
    IncidentFacts,
    IncidentReportError,
    Report,
    build_report,
    render_html,
    render_text,
)
from tests.incident_reports.facts import AWARE, bare, full, notified, scope

A = "GDPR Art. 33(3)(a)"
EXPECTED: dict[str, dict[str, str]] = {
    "gdpr-art33": {
        "nature": A, "data_subject_categories": A, "data_subjects_approx": A, "record_categories": A,
        "records_approx": A, "contact": "GDPR Art. 33(3)(b)", "likely_consequences": "GDPR Art. 33(3)(c)",
        "measures_taken": "GDPR Art. 33(3)(d)", "measures_mitigation": "GDPR Art. 33(3)(d)",
        "delay_reasons": "GDPR Art. 33(1)", "phased_information": "GDPR Art. 33(4)",
    },
    "hipaa-164.404": {
        "what_happened": "45 CFR 164.404(c)(1)(A)", "breach_date": "45 CFR 164.404(c)(1)(A)",
        "discovery_date": "45 CFR 164.404(c)(1)(A)", "phi_types": "45 CFR 164.404(c)(1)(B)",
        "steps_individuals": "45 CFR 164.404(c)(1)(C)", "entity_actions": "45 CFR 164.404(c)(1)(D)",
        "contact_procedures": "45 CFR 164.404(c)(1)(E)", "toll_free_number": "45 CFR 164.404(c)(1)(E)",
        "notice_deadline": "45 CFR 164.404(b)", "notice_method": "45 CFR 164.404(d)",
    },
    "hhs": {
        **{key: "45 CFR 164.408(a)" for key in (
            "covered_entity", "entity_type", "entity_contact", "breach_start", "breach_end", "discovery_date",
            "individuals_affected", "breach_type", "breach_location", "phi_types", "description",
            "safeguards_in_place", "actions_taken")},
        "individual_notice": "45 CFR 164.404(b)", "substitute_notice": "45 CFR 164.404(d)(2)",
        "media_notice": "45 CFR 164.406", "submission_deadline": "45 CFR 164.408(b)",
    },
}
ALWAYS_TO_COMPLETE = {
    "gdpr-art33": {"likely_consequences", "measures_mitigation"},
    "hipaa-164.404": {"toll_free_number", "steps_individuals"},
    "hhs": {"safeguards_in_place", "substitute_notice"},
}
NOW = AWARE + timedelta(hours=10)


def all_reports(facts: IncidentFacts | None = None) -> list[Report]:
    return [build_report(kind, facts or full(), NOW) for kind in KINDS]


@pytest.mark.parametrize("kind", KINDS)
def test_every_required_element_is_a_field_with_its_citation(kind: str) -> None:
    assert set(REQUIRED_FIELDS[kind]) == set(EXPECTED[kind])
    for facts in (full(), bare()):
        report = build_report(kind, facts, NOW)
        assert report.kind == kind
        assert len(report.keys) == len(set(report.keys))
        for key, citation in EXPECTED[kind].items():
            assert report.field(key).citation == citation, key


def test_hhs_deadline_cites_the_small_breach_rule_below_500() -> None:
    small = full(scope=scope(patients=499), residents_by_state=None)
    assert build_report("hhs", small, NOW).field("submission_deadline").citation == "45 CFR 164.408(c)"


@pytest.mark.parametrize("kind", KINDS)
def test_what_the_archive_cannot_know_is_always_to_complete(kind: str) -> None:
    report = build_report(kind, full(), NOW)
    for key in ALWAYS_TO_COMPLETE[kind]:
        assert report.field(key).to_complete, key
    # A field without a value is always marked: a gap never passes for an answer.
    for facts in (full(), bare()):
        for item in build_report(kind, facts, NOW).fields:
            assert item.value is not None or item.to_complete, item.key


def test_a_missing_contact_is_to_complete_and_a_given_one_is_used() -> None:
    keys = {"gdpr-art33": "contact", "hipaa-164.404": "contact_procedures", "hhs": "entity_contact"}
    for kind, key in keys.items():
        assert build_report(kind, bare(), NOW).field(key).to_complete
        given = build_report(kind, full(), NOW).field(key)
        assert not given.to_complete
        assert given.value == full().contact


def test_counts_come_from_the_scope() -> None:
    gdpr = build_report("gdpr-art33", full(), NOW)
    assert gdpr.field("data_subjects_approx").value == "4242 patients"
    records = gdpr.field("records_approx").value or ""
    assert "5151" in records and "616161" in records and str(7070 + 8080 + 23) in records
    assert "user:snooper" in (gdpr.field("nature").value or "")
    hhs = build_report("hhs", full(), NOW)
    assert hhs.field("individuals_affected").value == "4242"
    assert hhs.field("phi_types").value == "Demographic, Clinical"
    # The notices that reach the public do not name the account under investigation.
    assert "user:snooper" not in render_text(hhs)
    assert "user:snooper" not in render_text(build_report("hipaa-164.404", full(), NOW))


def test_unknown_scope_leaves_the_counts_to_complete_and_says_information_follows_in_phases() -> None:
    report = build_report("gdpr-art33", bare(), NOW)
    for key in ("nature", "data_subject_categories", "data_subjects_approx", "record_categories", "records_approx"):
        assert report.field(key).to_complete and report.field(key).value is None
    phased = report.field("phased_information").value or ""
    assert "phases" in phased and "scope" in phased
    assert "All the information" in (build_report("gdpr-art33", full(status="closed"), NOW)
                                     .field("phased_information").value or "")


def test_reasons_for_delay_are_asked_only_after_72_hours() -> None:
    due = AWARE + timedelta(hours=72)
    within = build_report("gdpr-art33", full(), due).field("delay_reasons")
    assert not within.to_complete and "Not applicable" in (within.value or "")
    late = build_report("gdpr-art33", full(), due + timedelta(seconds=1)).field("delay_reasons")
    assert late.to_complete and late.value is None
    on_time = notified(full(), NOTIFIED_AUTHORITY, due - timedelta(hours=1))
    assert not build_report("gdpr-art33", on_time, due + timedelta(days=3)).field("delay_reasons").to_complete
    sent_late = notified(full(), NOTIFIED_AUTHORITY, due + timedelta(hours=1))
    assert build_report("gdpr-art33", sent_late, due + timedelta(hours=2)).field("delay_reasons").to_complete


@pytest.mark.parametrize("facts", [full(), bare()], ids=["full", "bare"])
def test_fields_to_complete_are_marked_in_json(facts: IncidentFacts) -> None:
    for report in all_reports(facts):
        data = json.loads(json.dumps(report.to_json()))
        marked = [item["key"] for item in data["fields"] if item["to_complete"]]
        assert marked == [item.key for item in report.to_complete] == data["to_complete"]
        assert marked and data["complete"] is False
        for item in data["fields"]:
            assert item["draft"] == (item["to_complete"] and item["value"] is not None)


@pytest.mark.parametrize("facts", [full(), bare()], ids=["full", "bare"])
def test_fields_to_complete_stand_out_in_html(facts: IncidentFacts) -> None:
    for report in all_reports(facts):
        page = lxml.html.fromstring(render_html(report))
        sections = {node.get("data-key"): node for node in page.xpath("//section[@data-key]")}
        assert list(sections) == report.keys
        for item in report.fields:
            node = sections[item.key]
            assert ("to-complete" in node.get("class").split()) == item.to_complete
            assert node.get("data-to-complete") == ("true" if item.to_complete else "false")
            assert ("TO COMPLETE" in node.text_content()) == item.to_complete
            assert item.citation in node.text_content()
        # Listed first, before any field, with a link to each.
        summary = page.get_element_by_id("to-complete")
        assert [a.get("href") for a in summary.xpath(".//a")] == [f"#f-{item.key}" for item in report.to_complete]
        everything = list(page.iter())
        assert everything.index(summary) < everything.index(sections[report.keys[0]])


@pytest.mark.parametrize("facts", [full(), bare()], ids=["full", "bare"])
def test_fields_to_complete_are_marked_in_text(facts: IncidentFacts) -> None:
    for report in all_reports(facts):
        text = render_text(report)
        first_field = text.index("-" * 72)
        for item in report.fields:
            heading = f"{item.label}  ({item.citation})"
            assert heading in text
            marked = f"[TO COMPLETE] {heading}" in text
            assert marked == item.to_complete, item.key
        summary = text[:first_field]
        assert f"[TO COMPLETE] {len(report.to_complete)} field" in summary
        for item in report.to_complete:
            assert f"- {item.label} ({item.citation})" in summary


def test_html_escapes_hostile_free_text_and_carries_no_script() -> None:
    hostile = full(
        title="<script>alert('title')</script>",
        measures=('<img src=x onerror="alert(1)">', "</div><script>alert(2)</script>"),
        contact="<a href='javascript:alert(3)'>dpo</a>",
    )
    for report in all_reports(hostile):
        html = render_html(report)
        assert "<script" not in html.lower()
        assert "javascript:" not in "".join(a.get("href", "") for a in lxml.html.fromstring(html).xpath("//a"))
        page = lxml.html.fromstring(html)
        assert not page.xpath("//script | //img | //iframe | //object")
        assert not [name for node in page.iter() for name in node.attrib if name.lower().startswith("on")]
        assert "default-src 'none'" in html
    gdpr = render_html(build_report("gdpr-art33", hostile, NOW))
    assert "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;" in gdpr


def test_text_drops_control_characters() -> None:
    text = render_text(build_report("gdpr-art33", full(title="bell\x07 and \x1b[31mred"), NOW))
    assert "\x07" not in text and "\x1b" not in text


CANARY_NAME = "ZZTOP^PATIENT"
CANARY_ID = "MRN-98765432"


def test_free_text_is_copied_where_it_belongs_and_nowhere_else() -> None:
    """A patient name typed into the title by mistake shows only in the incident field of the regulators' reports."""
    facts = full(title=f"Access to {CANARY_NAME} {CANARY_ID}")
    for report in all_reports(facts):
        carrying = {item.key for item in report.fields if CANARY_ID in (item.value or "") + item.note + item.label}
        assert carrying == ({"incident"} if report.kind in ("gdpr-art33", "hhs") else set()), report.kind
        assert report.title.count(CANARY_ID) == 0
        assert render_text(report).count(CANARY_NAME) == len(carrying)
        assert render_html(report).count(CANARY_NAME) == len(carrying)


def _numbers_in_facts(facts: IncidentFacts) -> set[str]:
    scope_ = facts.scope
    assert scope_ is not None
    found: set[str] = set(re.findall(r"\d+", repr(facts)))
    stamps = [facts.opened_at, facts.occurred_from, facts.occurred_until, scope_.since, scope_.until,
              scope_.verified_at, *(entry.at for entry in facts.timeline),
              facts.opened_at + timedelta(days=60), facts.opened_at + timedelta(hours=72), NOW]
    for at in (stamp for stamp in stamps if stamp is not None):
        found |= {str(at.year), f"{at.month:02}", f"{at.day:02}", str(at.day), f"{at.hour:02}", f"{at.minute:02}"}
    events = sum(counts["events"] for counts in scope_.by_action.values())
    return found | {str(len(scope_.addresses)), str(events), str(facts.individuals)}


# Numbers of the rules the reports explain in notes (articles, sections, thresholds, periods), besides their citations.
RULE_NUMBERS = {"1", "2", "3", "9", "10", "33", "34", "45", "60", "72", "90", "164", "404", "406", "408", "412", "500"}


def test_renderings_hold_no_number_the_facts_do_not() -> None:
    """No identifier is invented: every number in a rendering is a count, a date or a rule of the facts."""
    facts = full()
    allowed = _numbers_in_facts(facts) | RULE_NUMBERS
    for report in all_reports(facts):
        own = {number for item in report.fields for number in re.findall(r"\d+", item.citation)}
        own.add(str(len(report.to_complete)))
        for text in (render_text(report), json.dumps(report.to_json())):
            extra = set(re.findall(r"\d+", text)) - allowed - own
            assert not extra, (report.kind, extra)


def test_unknown_kind_and_naive_time_are_refused() -> None:
    with pytest.raises(IncidentReportError):
        build_report("ccpa", full(), NOW)
    with pytest.raises(IncidentReportError):
        build_report("gdpr-art33", full(), NOW.replace(tzinfo=None))


def test_facts_refuse_naive_times_and_negative_counts() -> None:
    with pytest.raises(IncidentReportError):
        full(opened_at=AWARE.replace(tzinfo=None))
    with pytest.raises(IncidentReportError):
        replace(scope(), patients=-1)
    with pytest.raises(IncidentReportError):
        full(occurred_from=AWARE, occurred_until=AWARE - timedelta(days=1))
