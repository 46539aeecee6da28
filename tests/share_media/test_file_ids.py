"""File IDs: PS3.10 8.2/8.5 conformant, deterministic, grouped by series whatever the arrival order."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomguard.media import FileIdAllocator, MediaError, is_conformant
from dicomguard.media import file_ids as file_ids_module

# PS3.10 8.2 (1-8 components of 1-8 characters) and 8.5 (A-Z, 0-9, underscore).
FILE_ID = re.compile(r"[A-Z0-9_]{1,8}(/[A-Z0-9_]{1,8}){0,7}")


def assign(allocator: FileIdAllocator, patient: str, study: str, series: str, sop: str) -> tuple[str, ...]:
    return allocator.assign(patient_key=("id", patient, ""), study_uid=study, series_uid=series, sop_instance_uid=sop)


def test_layout_and_conformance() -> None:
    allocator = FileIdAllocator()
    ids = [assign(allocator, "P", "1.1", "1.1.1", f"1.1.1.{i}") for i in range(3)]
    assert ids[0] == ("DICOM", "PT000001", "ST000001", "SE000001", "IM000001")
    assert ids[2][-1] == "IM000003"
    for file_id in ids:
        assert is_conformant(file_id) and FILE_ID.fullmatch("/".join(file_id))


@pytest.mark.parametrize("file_id", [(), ("dicom",), ("TOOLONGNAME",), ("A.B",), ("A B",), ("",), ("A",) * 9, ("Ä",)])
def test_non_conformant_ids_are_recognised(file_id: tuple[str, ...]) -> None:
    assert not is_conformant(file_id)


def test_interleaved_series_and_studies_still_group() -> None:
    """Arrival A1 B1 C1 A2 B2 A3 (A, B series of one study, C of another) gives folders by series, numbered by arrival."""
    allocator = FileIdAllocator()
    arrivals = [("S1", "A"), ("S1", "B"), ("S2", "C"), ("S1", "A"), ("S1", "B"), ("S1", "A")]
    got = [assign(allocator, "P", study, series, f"sop{i}") for i, (study, series) in enumerate(arrivals)]
    folders = {"A": set(), "B": set(), "C": set()}  # type: dict[str, set[tuple[str, ...]]]
    for (_, series), file_id in zip(arrivals, got, strict=True):
        folders[series].add(file_id[:-1])
    assert all(len(f) == 1 for f in folders.values())  # one folder per series
    assert folders["A"] == {("DICOM", "PT000001", "ST000001", "SE000001")}
    assert folders["B"] == {("DICOM", "PT000001", "ST000001", "SE000002")}
    assert folders["C"] == {("DICOM", "PT000001", "ST000002", "SE000001")}
    assert [f[-1] for f, (_, s) in zip(got, arrivals, strict=True) if s == "A"] == ["IM000001", "IM000002", "IM000003"]


def test_deterministic_for_the_same_order() -> None:
    arrivals = [("P1", "S1", "A", "1"), ("P2", "S2", "B", "2"), ("P1", "S1", "A", "3"), ("P1", "S3", "C", "4")]
    first, second = FileIdAllocator(), FileIdAllocator()
    assert [assign(first, *a) for a in arrivals] == [assign(second, *a) for a in arrivals]
    assert dict(first.assigned) == dict(second.assigned)


def test_two_patients_and_a_study_stays_with_its_first_patient() -> None:
    allocator = FileIdAllocator()
    a = assign(allocator, "ALICE", "S1", "A", "1")
    b = assign(allocator, "BOB", "S2", "B", "2")
    # An instance of S1 claiming another patient still lands in S1's folder: a study is not split.
    c = assign(allocator, "BOB", "S1", "A", "3")
    assert a[1] == "PT000001" and b[1] == "PT000002"
    assert c[:-1] == a[:-1]


def test_a_repeated_sop_instance_uid_is_refused() -> None:
    allocator = FileIdAllocator()
    assign(allocator, "P", "S", "A", "1.2.3")
    with pytest.raises(MediaError, match=r"1\.2\.3"):
        assign(allocator, "P", "S", "B", "1.2.3")


def test_a_full_level_is_refused_without_changing_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_ids_module, "_PER_LEVEL", 2)
    allocator = FileIdAllocator()
    assign(allocator, "P", "S", "A", "1")
    assign(allocator, "P", "S", "A", "2")
    with pytest.raises(MediaError):
        assign(allocator, "P", "S", "A", "3")
    assert "3" not in allocator.assigned
    assert assign(allocator, "P", "S", "B", "4")[-2:] == ("SE000002", "IM000001")


def test_root_must_be_a_component() -> None:
    with pytest.raises(ValueError):
        FileIdAllocator("dicom")
    assert FileIdAllocator("IMAGES").assign(patient_key=("x",), study_uid="1", series_uid="2", sop_instance_uid="3")[0] == "IMAGES"


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_any_arrival_order_groups_by_series(arrivals: list[tuple[int, int, int]]) -> None:
    """Whatever the interleaving: one folder per series, distinct series in distinct folders, instances numbered 1..n."""
    allocator = FileIdAllocator()
    folders: dict[tuple[int, int], set[tuple[str, ...]]] = {}
    leaves: dict[tuple[int, int], list[str]] = {}
    for i, (patient, study, series) in enumerate(arrivals):
        # The patient may differ between instances of a study: the study stays where it first arrived.
        file_id = assign(allocator, f"P{patient}", f"S{study}", f"R{series}", str(i))
        assert is_conformant(file_id)
        folders.setdefault((study, series), set()).add(file_id[:-1])
        leaves.setdefault((study, series), []).append(file_id[-1])
    assert all(len(f) == 1 for f in folders.values())
    assert len(set().union(*folders.values())) == len(folders)
    assert all(names == [f"IM{n:06d}" for n in range(1, len(names) + 1)] for names in leaves.values())
