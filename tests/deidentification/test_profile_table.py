"""Our Table E.1-1 against the reference extraction of PS3.15, and the option parser.

The coverage test is the reason the table can be owned by us: any row we lose,
add or change is a test failure naming the attribute and the column.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.datadict import dictionary_VR

from dicomguard.deid.actions import Act, Plan
from dicomguard.deid.options import PRESETS, Option, parse_options
from dicomguard.deid.profile_table import OPTION_COLUMNS, ROWS
from dicomguard.deid.safe_attributes import CLASS_UID_TAGS, SAFE_TAGS

# ../shared/reference relative to the project root.
REFERENCE = Path(__file__).resolve().parents[3] / "shared/reference/ps3.15/confidentiality_profile_attributes.json"

# The reference's key for each option column, in the order of OPTION_COLUMNS.
REFERENCE_COLUMNS = {
    Option.RETAIN_SAFE_PRIVATE: "rtnSafePrivOpt",
    Option.RETAIN_UIDS: "rtnUIDsOpt",
    Option.RETAIN_DEVICE_IDENTITY: "rtnDevIdOpt",
    Option.RETAIN_INSTITUTION_IDENTITY: "rtnInstIdOpt",
    Option.RETAIN_PATIENT_CHARACTERISTICS: "rtnPatCharsOpt",
    Option.RETAIN_LONGITUDINAL_FULL_DATES: "rtnLongFullDatesOpt",
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: "rtnLongModifDatesOpt",
    Option.CLEAN_DESCRIPTORS: "cleanDescOpt",
    Option.CLEAN_STRUCTURED_CONTENT: "cleanStructContOpt",
    Option.CLEAN_GRAPHICS: "cleanGraphOpt",
}


def _reference_rows() -> list[dict[str, str]]:
    if not REFERENCE.is_file():
        pytest.skip(f"PS3.15 reference extraction not available at {REFERENCE} (the shared reference folder is absent)")
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def _normal_tag(reference_tag: str) -> str:
    if reference_tag.upper().startswith("(GGGG,EEEE)"):
        return "gggg,eeee"
    return reference_tag.strip("()").lower()


def test_table_covers_every_reference_row_with_the_same_actions() -> None:
    reference = _reference_rows()
    ours = {tag: (name, basic, cells) for tag, name, basic, cells in ROWS}
    assert len(ours) == len(ROWS), "duplicate tags in our table"
    problems = []
    seen = set()
    for row in reference:
        tag = _normal_tag(row["tag"])
        seen.add(tag)
        if tag not in ours:
            problems.append(f"{row['tag']} {row['name']}: missing")
            continue
        _name, basic, cells = ours[tag]
        if basic != row["basicProfile"]:
            problems.append(f"{row['tag']} {row['name']}: basic {basic} != {row['basicProfile']}")
        for index, option in enumerate(OPTION_COLUMNS):
            expected = row.get(REFERENCE_COLUMNS[option], ".")
            if cells[index] != expected:
                problems.append(f"{row['tag']} {row['name']}: {option.value} {cells[index]} != {expected}")
    problems += [f"{tag}: not in the reference" for tag in ours if tag not in seen]
    assert not problems, "\n".join(problems)
    assert len(reference) == len(ROWS) == 621


def test_option_columns_are_the_table_options() -> None:
    assert set(OPTION_COLUMNS) == set(Option) - {Option.CLEAN_PIXEL_DATA}
    assert list(REFERENCE_COLUMNS) == list(OPTION_COLUMNS)


def test_keep_lists_do_not_overlap_the_table() -> None:
    # A tag in both would make the keep list look authoritative where the table decides.
    table_tags = {int(t.replace(",", ""), 16) for t, *_ in ROWS if "x" not in t and "g" not in t}
    assert not (SAFE_TAGS & table_tags)
    assert not (CLASS_UID_TAGS & table_tags)
    dates = [hex(t) for t in SAFE_TAGS if dictionary_VR(t) in ("DA", "DT", "TM", "PN")]
    assert not dates, "dates, times and person names never come from the keep list"


def test_basic_profile_keeps_nothing_the_table_lists() -> None:
    plan = Plan(frozenset())
    kept = []
    for tag_text, name, _basic, _cells in ROWS:
        if "x" in tag_text or "g" in tag_text:
            continue
        act = plan.action(int(tag_text.replace(",", ""), 16))
        if act in (Act.KEEP, Act.SCRUB, Act.SHIFT, Act.AE_TOKEN, Act.CONTENT, Act.RECURSE_CLEAN):
            kept.append(f"{tag_text} {name}: {act.name}")
    assert not kept, "\n".join(kept)
    assert plan.private_action is Act.REMOVE
    assert plan.action(0x50000022) is Act.REMOVE and plan.action(0x60003000) is Act.REMOVE


@pytest.mark.parametrize("option", sorted(OPTION_COLUMNS))
def test_each_option_column_is_applied(option: Option) -> None:
    plan = Plan(frozenset({option}))
    column = OPTION_COLUMNS.index(option)
    wrong = []
    for tag_text, name, _basic, cells in ROWS:
        code = cells[column]
        if code == "." or "x" in tag_text or "g" in tag_text:
            continue
        act = plan.action(int(tag_text.replace(",", ""), 16))
        if code == "K" and act not in (Act.KEEP, Act.RECURSE, Act.PSEUDO_ID, Act.PSEUDO_NAME):
            wrong.append(f"{tag_text} {name}: K -> {act.name}")
        if code == "C" and act in (Act.KEEP, Act.RECURSE) and option is not Option.RETAIN_LONGITUDINAL_MODIFIED_DATES:
            wrong.append(f"{tag_text} {name}: C -> {act.name} (kept without cleaning)")
    assert not wrong, "\n".join(wrong)
    if option is Option.RETAIN_SAFE_PRIVATE:
        assert plan.private_action is Act.PRIVATE


def test_parse_options_presets_and_names() -> None:
    assert parse_options([], "basic") == frozenset()
    assert parse_options([], None) == frozenset()
    research = parse_options([], "research")
    assert research == PRESETS["research"]
    assert Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in research and Option.CLEAN_PIXEL_DATA in research
    assert parse_options(["retain-uids"], "research") == research | {Option.RETAIN_UIDS}


@pytest.mark.parametrize(
    ("names", "preset", "message"),
    [
        (["retain-uid"], None, "'retain-uid'"),
        (["Retain-UIDs"], None, "'Retain-UIDs'"),
        ([], "publication", "'publication'"),
        (["retain-longitudinal-full-dates"], "research", "exclude each other"),
    ],
)
def test_parse_options_refuses_with_the_name(names: list[str], preset: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_options(names, preset)
