"""FHIR R4 context import: Bundle (transaction, searchset), NDJSON and single resources to the three context CSV texts.

The texts must load through :mod:`dicomguard.detect.context` with the values asserted here, whatever the
packaging of the same resources; errors are all or nothing, name the entry and carry no PHI.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dicomguard.detect import fhir
from dicomguard.detect.context import (
    ORDERS_COLUMNS,
    PATIENTS_COLUMNS,
    USERS_COLUMNS,
    ContextError,
    Order,
    PatientInfo,
    UserInfo,
    context_from_texts,
    load_context_dir,
)
from dicomguard.detect.explain import READING_GROUP, Explainer
from dicomguard.detect.fhir import context_texts_from_fhir
from dicomguard.detect.signatures import VIP, Relations

Json = dict[str, Any]
Ref = Callable[[str, str], Json]

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
LOGIN = "urn:oid:1.2.826.0.1.3680043.8.498.77"  # the archive's login names
# PHI of the fixture: none of it may appear in an error message.
PHI = ("Doe", "John", "MRN-0001", "Oak Road", "Star", "Vera", "MRN-0002", "Hollywood", "Cruz", "X-77", "123-45-6789")


def _id_type(code: str) -> Json:
    return {"coding": [{"system": V2_0203, "code": code}]}


def resources(ref: Ref) -> list[tuple[str, Json]]:
    """(logical id, resource) of a small radiology department: 2 practitioners with roles in two departments,
    3 patients (one VIP), 3 requests (one with two studies, one with none), plus resources only referenced."""
    return [
        ("org-neuro", {"resourceType": "Organization", "name": "Neuroradiology"}),
        ("org-ed", {"resourceType": "Organization", "name": "Emergency Department"}),
        ("ct-body", {"resourceType": "CareTeam", "name": "Body Imaging Readers"}),
        ("pr-smith", {
            "resourceType": "Practitioner",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"},
                           {"use": "usual", "system": LOGIN, "value": "asmith"}],
            "name": [{"use": "official", "text": "Dr. Ann Smith", "family": "Smith", "given": ["Ann"], "prefix": ["Dr."]}],
            "address": [{"use": "work", "line": ["1 Hospital Way"], "city": "Springfield"},
                        {"use": "home", "line": ["12 Elm Street", "Apt 4"], "city": "Springfield"}],
        }),
        ("pr-jones", {
            "resourceType": "Practitioner",
            "identifier": [{"system": LOGIN, "value": "bjones"}],
            "name": [{"text": "Dr. Robert Jones", "family": "Jones", "given": ["Robert"]}],
            "address": [{"line": ["7 Birch Lane"], "city": "Shelbyville"}],
        }),
        ("role-smith", {
            "resourceType": "PractitionerRole", "active": True, "practitioner": ref("Practitioner", "pr-smith"),
            "organization": {**ref("Organization", "org-neuro"), "display": "Neuroradiology"},
            "code": [{"coding": [{"system": "http://snomed.info/sct", "code": "66862007", "display": "Radiologist"}]}],
        }),
        ("role-jones", {
            "resourceType": "PractitionerRole", "practitioner": ref("Practitioner", "pr-jones"),
            "organization": ref("Organization", "org-ed"),  # no display: the Organization's name
            "code": [{"text": "Emergency physician"}],
        }),
        ("pat-doe", {
            "resourceType": "Patient",
            "identifier": [{"type": _id_type("SS"), "system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"},
                           {"type": _id_type("MR"), "system": "urn:oid:1.2.3.4.5", "value": "MRN-0001"}],
            "name": [{"use": "official", "family": "Doe", "given": ["John", "Quincy"]}],
            "address": [{"use": "home", "line": ["2 Oak Road"], "city": "Springfield"}],
        }),
        ("pat-star", {
            "resourceType": "Patient",
            "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0177", "code": "VIP"}]},
            "identifier": [{"type": _id_type("MR"), "system": "urn:oid:1.2.3.4.5", "value": "MRN-0002"}],
            "name": [{"family": "Star", "given": ["Vera"]}],
            "address": [{"use": "home", "line": ["1 Hollywood Blvd"], "city": "Los Angeles"}],
        }),
        ("pat-cruz", {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:9.9.9", "value": "X-77"}],
            "name": [{"text": "Maria de la Cruz"}],
        }),
        ("enc-1", {"resourceType": "Encounter", "status": "finished", "subject": ref("Patient", "pat-doe")}),
        ("obs-1", {"resourceType": "Observation", "status": "final", "subject": ref("Patient", "pat-doe")}),
        ("sr-1", {
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"type": _id_type("PLAC"), "value": "PL-9"},
                           {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": "ACC-1001"}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "24725-4", "display": "CT Head"}]},
            "subject": ref("Patient", "pat-doe"), "encounter": ref("Encounter", "enc-1"),
            "authoredOn": "2026-03-01T09:30:00+01:00",
            "requester": {**ref("PractitionerRole", "role-jones"), "type": "PractitionerRole"},
            "performer": [ref("Organization", "org-neuro")],
        }),
        ("sr-2", {
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"system": "urn:oid:1.2.3.4.6", "value": "ACC-1002"}],
            "subject": ref("Patient", "pat-star"), "authoredOn": "2026-03-02T10:00:00Z",
            "requester": ref("Practitioner", "pr-smith"),
            "performer": [{"display": "Body Imaging"}, ref("CareTeam", "ct-body"),
                          {**ref("Practitioner", "pr-smith"), "display": "Dr. Ann Smith"}],  # a person, not a group
        }),
        ("sr-3", {
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "identifier": [{"type": _id_type("ACSN"), "value": "ACC-1003"}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "30704-1"}, {"system": DCM, "code": "US"}]},
            "subject": ref("Patient", "pat-cruz"), "authoredOn": "2026-03-03",
            "requester": ref("PractitionerRole", "role-smith"),
            "performer": [ref("PractitionerRole", "role-jones")],
        }),
        ("is-1", {
            "resourceType": "ImagingStudy", "status": "available", "subject": ref("Patient", "pat-doe"),
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.1.3680043.8.498.1"}],
            "basedOn": [ref("ServiceRequest", "sr-1")], "modality": [{"system": DCM, "code": "CT"}],
        }),
        ("is-2", {
            "resourceType": "ImagingStudy", "status": "available", "subject": ref("Patient", "pat-star"),
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.1.3680043.8.498.2"}],
            "basedOn": [ref("ServiceRequest", "sr-2")], "modality": [{"system": DCM, "code": "MR"}],
        }),
        ("is-3", {
            "resourceType": "ImagingStudy", "status": "available", "subject": ref("Patient", "pat-star"),
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.1.3680043.8.498.3"}],
            "basedOn": [ref("ServiceRequest", "sr-2")], "modality": [{"system": DCM, "code": "CT"}],
        }),
    ]


def _urn(key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}"


def transaction_bundle(items: Callable[[Ref], list[tuple[str, Json]]] = resources) -> bytes:
    """A transaction Bundle: resources without ids, linked by ``urn:uuid:`` full URLs."""
    entries = [{"fullUrl": _urn(key), "resource": res, "request": {"method": "POST", "url": res.get("resourceType", "")}}
               for key, res in items(lambda t, key: {"reference": _urn(key)})]
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}, indent=2).encode()


def searchset_bundle(items: Callable[[Ref], list[tuple[str, Json]]] = resources) -> bytes:
    """A searchset Bundle: absolute full URLs, relative ``Type/id`` references."""
    base = "https://fhir.example.org/r4"
    entries = [{"fullUrl": f"{base}/{res['resourceType']}/{key}", "resource": {"id": key, **res},
                "search": {"mode": "match"}}
               for key, res in items(lambda t, key: {"reference": f"{t}/{key}"})]
    return json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": entries}).encode()


def ndjson(items: Callable[[Ref], list[tuple[str, Json]]] = resources) -> bytes:
    lines = [json.dumps({"id": key, **res}) for key, res in items(lambda t, key: {"reference": f"{t}/{key}"})]
    return ("\n".join(lines) + "\n").encode()


def _header(text: str) -> tuple[str, ...]:
    return tuple(text.splitlines()[0].split(","))


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- mapping ----------------------------------------------------------------------------------------------------

def test_transaction_bundle_round_trips_through_context() -> None:
    texts = context_texts_from_fhir(transaction_bundle())
    assert set(texts) == {"users", "patients", "orders"}
    assert _header(texts["users"]) == USERS_COLUMNS
    assert _header(texts["patients"]) == PATIENTS_COLUMNS
    assert _header(texts["orders"]) == ORDERS_COLUMNS
    ctx = context_from_texts(texts["users"], texts["patients"], texts["orders"])
    assert ctx.users == {
        "asmith": UserInfo("asmith", "Smith^Ann", "Radiologist", "Neuroradiology", "12 Elm Street, Apt 4, Springfield"),
        "bjones": UserInfo("bjones", "Jones^Robert", "Emergency physician", "Emergency Department", "7 Birch Lane, Shelbyville"),
    }
    assert ctx.patients == {
        "MRN-0001": PatientInfo("MRN-0001", "Doe^John Quincy", "2 Oak Road, Springfield", False),
        "MRN-0002": PatientInfo("MRN-0002", "Star^Vera", "1 Hollywood Blvd, Los Angeles", True),
        "X-77": PatientInfo("X-77", "Maria de la Cruz", "", False),
    }
    assert ctx.orders == [
        Order("ACC-1001", "MRN-0001", "1.2.826.0.1.3680043.8.498.1", "CT", "bjones", "Emergency Department",
              _utc(2026, 3, 1, 8, 30), "Neuroradiology"),
        Order("ACC-1002", "MRN-0002", "1.2.826.0.1.3680043.8.498.2", "MR", "asmith", "", _utc(2026, 3, 2, 10),
              "Body Imaging|Body Imaging Readers"),
        Order("ACC-1002", "MRN-0002", "1.2.826.0.1.3680043.8.498.3", "CT", "asmith", "", _utc(2026, 3, 2, 10),
              "Body Imaging|Body Imaging Readers"),
        Order("ACC-1003", "X-77", "", "US", "asmith", "Neuroradiology", _utc(2026, 3, 3), "Emergency Department"),
    ]
    assert ctx.orders[1].reading_groups == {"Body Imaging", "Body Imaging Readers"}


def test_context_explains_and_flags_like_csv() -> None:
    """The converted context means the same to the detector: reading groups match departments, VIP is flagged."""
    texts = context_texts_from_fhir(transaction_bundle())
    ctx = context_from_texts(texts["users"], texts["patients"], texts["orders"])
    explainer = Explainer(ctx)
    assert explainer.explain("asmith", "MRN-0001", _utc(2026, 3, 2)) == READING_GROUP  # Neuroradiology reads ACC-1001
    assert explainer.explain("bjones", "X-77", _utc(2026, 3, 4)) == READING_GROUP  # performer PractitionerRole
    assert explainer.explain("bjones", "MRN-0002", _utc(2026, 3, 4)) is None
    assert VIP in Relations(ctx).of("bjones", "MRN-0002")
    assert VIP not in Relations(ctx).of("bjones", "MRN-0001")


def test_csv_files_load_with_the_file_loaders(tmp_path: Path) -> None:
    texts = context_texts_from_fhir(transaction_bundle())
    for kind, text in texts.items():
        (tmp_path / f"{kind}.csv").write_text(text, encoding="utf-8")
    ctx = load_context_dir(tmp_path)
    assert ctx == context_from_texts(texts["users"], texts["patients"], texts["orders"])
    assert ctx.orders_by_patient["MRN-0002"][0].ordered_at == _utc(2026, 3, 2, 10)


@pytest.mark.parametrize("packaging", [searchset_bundle, ndjson], ids=["searchset", "ndjson"])
def test_other_packagings_give_identical_texts(packaging: Callable[[], bytes]) -> None:
    assert context_texts_from_fhir(packaging()) == context_texts_from_fhir(transaction_bundle())


def test_bom_is_accepted() -> None:
    plain = context_texts_from_fhir(transaction_bundle())
    assert context_texts_from_fhir(b"\xef\xbb\xbf" + transaction_bundle()) == plain
    assert context_texts_from_fhir(b"\xef\xbb\xbf" + ndjson()) == plain


def test_single_practitioner_without_role() -> None:
    doc = {"resourceType": "Practitioner", "id": "p9", "name": [{"family": "Lee", "given": ["Kim"]}],
           "identifier": [{"use": "official", "system": LOGIN, "value": "klee"}, {"system": "x", "value": "other"}]}
    texts = context_texts_from_fhir(json.dumps(doc).encode())
    assert texts == {"users": "user_id,name,role,department,home_address\nklee,Lee^Kim,,,\n"}


def test_single_patient_and_id_fallback() -> None:
    texts = context_texts_from_fhir(json.dumps({"resourceType": "Patient", "id": "p-42"}).encode())
    assert texts == {"patients": "patient_id,name,address,vip\np-42,,,false\n"}


def test_only_kinds_present_are_returned() -> None:
    only_roles = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": {"resourceType": "Organization", "name": "X"}}]}
    assert context_texts_from_fhir(json.dumps(only_roles).encode()) == {}


def test_csv_quoting_of_commas_and_quotes() -> None:
    doc = {"resourceType": "Patient", "id": "p1", "name": [{"text": 'Anne "Nan" O\'Neil, Jr.'}],
           "address": [{"line": ["3, Rue de la Paix"], "city": "Paris"}]}
    ctx = context_from_texts(patients=context_texts_from_fhir(json.dumps(doc).encode())["patients"])
    assert ctx.patients["p1"] == PatientInfo("p1", 'Anne "Nan" O\'Neil, Jr.', "3, Rue de la Paix, Paris", False)


VIP_CASES: list[tuple[Json, bool]] = [
    ({"meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CEL"}]}}, True),
    ({"meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}}, True),
    ({"meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "V"}]}}, True),
    ({"meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}}, False),
    ({"meta": {"security": [{"system": "http://example.org/other", "code": "R"}]}}, False),
    ({"meta": {"tag": [{"system": "http://example.org/local", "code": "VIP"}]}}, True),
    ({"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-importance",
                     "valueCodeableConcept": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-PatientImportance",
                                                          "code": "FOR"}]}}]}, True),
    ({"extension": [{"url": "http://hospital.example.org/fhir/StructureDefinition/vip", "valueBoolean": True}]}, True),
    ({"extension": [{"url": "http://hospital.example.org/fhir/StructureDefinition/vip", "valueBoolean": False}]}, False),
    ({}, False),
]


@pytest.mark.parametrize(("extra", "vip"), VIP_CASES)
def test_vip_markers(extra: Json, vip: bool) -> None:
    doc = {"resourceType": "Patient", "id": "p1", **extra}
    ctx = context_from_texts(patients=context_texts_from_fhir(json.dumps(doc).encode())["patients"])
    assert ctx.patients["p1"].vip is vip


def test_contained_requester_and_logical_reference() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "p1"}},
        {"resource": {"resourceType": "ServiceRequest", "subject": {"reference": "urn:uuid:1"}, "authoredOn": "2026-01-01",
                      "contained": [{"resourceType": "PractitionerRole", "id": "r", "specialty": [{"text": "Cardiology"}],
                                     "practitioner": {"reference": "#pr"}},
                                    {"resourceType": "Practitioner", "id": "pr", "identifier": [{"value": "cdoc"}]}],
                      "requester": {"reference": "#r"}}},
        {"resource": {"resourceType": "ServiceRequest", "subject": {"reference": "Patient/p1"}, "authoredOn": "2026-01-02",
                      "requester": {"type": "Practitioner", "identifier": {"system": LOGIN, "value": "ext-doc"}}}},
    ]}
    orders = context_from_texts(orders=context_texts_from_fhir(json.dumps(bundle).encode())["orders"]).orders
    assert [(o.ordering_user, o.department) for o in orders] == [("cdoc", "Cardiology"), ("ext-doc", "")]


def test_exact_duplicates_are_merged() -> None:
    pat = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe"}]}
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": pat}, {"resource": pat}]}
    assert context_texts_from_fhir(json.dumps(bundle).encode())["patients"].count("\n") == 2


# --- errors -----------------------------------------------------------------------------------------------------

def _refused(data: bytes, *fragments: str) -> str:
    with pytest.raises(ContextError) as info:
        context_texts_from_fhir(data, name="export.json")
    message = str(info.value)
    assert message.startswith("export.json: ")
    for fragment in fragments:
        assert fragment in message
    for phi in PHI:
        assert phi not in message, message
    return message


def _entry_of(key: str) -> int:
    return 1 + [k for k, _ in resources(lambda t, k: {"reference": k})].index(key)


def _edit(key: str, change: Callable[[Json], None]) -> Callable[[Ref], list[tuple[str, Json]]]:
    def items(ref: Ref) -> list[tuple[str, Json]]:
        out = resources(ref)
        for k, res in out:
            if k == key:
                change(res)
        return out
    return items


def test_invalid_json() -> None:
    _refused(transaction_bundle()[:-20], "line ", "not valid JSON")


def test_invalid_ndjson_line() -> None:
    lines = ndjson().decode().splitlines()
    lines[2] = lines[2][:-1]
    _refused("\n".join(lines).encode(), "entry 3: not valid JSON")


def test_resource_without_resource_type() -> None:
    n = _entry_of("pat-doe")
    _refused(transaction_bundle(_edit("pat-doe", lambda r: r.pop("resourceType"))), f"entry {n}: resource has no resourceType")
    _refused(ndjson(_edit("pat-doe", lambda r: r.pop("resourceType"))), f"entry {n}: resource has no resourceType")


def test_subject_not_in_input() -> None:
    n = _entry_of("sr-1")

    def dangling(r: Json) -> None:
        r["subject"] = {"reference": "Patient/MRN-0001", "display": "John Doe"}
    message = _refused(transaction_bundle(_edit("sr-1", dangling)), f"entry {n}: subject")
    assert "Patient" in message


def test_subject_that_is_not_a_patient() -> None:
    n = _entry_of("sr-2")
    _refused(searchset_bundle(_edit("sr-2", lambda r: r.update(subject={"reference": "Organization/org-ed"}))),
             f"entry {n}: subject does not resolve to a Patient")


@pytest.mark.parametrize("value", [None, "", "2026-03", "yesterday", 20260301, "2026-13-01T00:00:00Z"])
def test_authored_on_missing_or_unparseable(value: Any) -> None:
    n = _entry_of("sr-2")

    def set_authored(r: Json) -> None:
        if value is None:
            r.pop("authoredOn")
        else:
            r["authoredOn"] = value
    message = _refused(transaction_bundle(_edit("sr-2", set_authored)), f"entry {n}: authoredOn")
    assert "2026" not in message and "yesterday" not in message


def test_not_utf8_in_bundle_entry() -> None:
    data = transaction_bundle().replace(b'"Doe"', b'"D\xf6e"')
    _refused(data, f"entry {_entry_of('pat-doe')}: not UTF-8 text")


def test_not_utf8_in_ndjson_line() -> None:
    data = ndjson().replace(b'"Star"', b'"St\xe4r"')
    _refused(data, f"entry {_entry_of('pat-star')}: not UTF-8 text")


def test_not_utf8_outside_json_strings() -> None:
    _refused(b'{"resourceType": "Patient",\n\xff}', "line 2: not UTF-8 text")


def test_conflicting_patient_identifiers() -> None:
    def same_mrn(r: Json) -> None:
        r["identifier"] = [{"type": _id_type("MR"), "value": "MRN-0001"}]
    _refused(transaction_bundle(_edit("pat-star", same_mrn)), f"entry {_entry_of('pat-star')}: another Patient")


def test_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fhir, "MAX_BYTES", 1000)
    _refused(transaction_bundle(), "larger than")


def test_too_many_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fhir, "MAX_RESOURCES", 5)
    _refused(transaction_bundle(), "more than 5 resources")
    _refused(ndjson(), "more than 5 resources")


def test_deep_nesting_is_refused_not_crashing() -> None:
    _refused(b'{"resourceType": "Patient", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "not valid JSON")


@pytest.mark.parametrize("data", [b"", b"  \n", b"[1, 2]", b'"Patient"', b'{"entry": []}'])
def test_not_fhir(data: bytes) -> None:
    _refused(data)


def test_nested_bundle_refused() -> None:
    inner = {"resourceType": "Bundle", "type": "collection", "entry": []}
    outer = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inner}]}
    _refused(json.dumps(outer).encode(), "entry 1: a Bundle inside a Bundle")


def test_all_or_nothing() -> None:
    """One bad request refuses the whole input: nothing is returned for the good resources."""
    with pytest.raises(ContextError):
        context_texts_from_fhir(ndjson(_edit("sr-3", lambda r: r.pop("authoredOn"))))


def test_timezones_normalised_to_utc() -> None:
    texts = context_texts_from_fhir(transaction_bundle())
    assert "2026-03-01T08:30:00+00:00" in texts["orders"]
    assert context_from_texts(orders=texts["orders"]).orders[0].ordered_at - _utc(2026, 3, 1, 8, 30) == timedelta(0)


def test_lone_surrogate_escape_is_refused() -> None:
    """A ``\\udXXX`` escape without its pair decodes to text that is not UTF-8: refused, not passed on."""
    data = transaction_bundle().replace(b'"Doe"', b'"Do\\udc80e"')
    _refused(data, f"entry {_entry_of('pat-doe')}: not UTF-8 text")
    paired = transaction_bundle().replace(b'"Doe"', b'"Doe\\ud83d\\ude00"')  # a valid pair is kept
    assert "Doe\U0001f600^John Quincy" in context_texts_from_fhir(paired)["patients"]


def test_ndjson_entries_are_physical_lines() -> None:
    lines = ndjson(_edit("sr-2", lambda r: r.pop("authoredOn"))).decode().splitlines()
    data = ("\n" + "\n\n".join(lines) + "\n").encode()  # a blank line first and between resources
    _refused(data, f"entry {2 * _entry_of('sr-2')}: authoredOn")


def test_the_cli_imports_a_bundle_sealed_and_refuses_a_bad_one_whole(tmp_path: Path, archive) -> None:  # type: ignore[no-untyped-def]
    """``dicomguard context import-fhir``: the three kinds stored in one transaction, read back by the detector."""
    from typer.testing import CliRunner

    from dicomguard.cli.main import app

    good, bad = tmp_path / "context.json", tmp_path / "bad.json"
    good.write_bytes(transaction_bundle())
    bundle = json.loads(transaction_bundle())
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "ServiceRequest":
            entry["resource"]["authoredOn"] = "yesterday"
    bad.write_text(json.dumps(bundle))
    runner = CliRunner()
    home = str(archive.home)
    archive.close()  # the CLI opens the home itself
    env = {"DICOMGUARD_HOME": home}
    result = runner.invoke(app, ["context", "import-fhir", str(good)], env=env)
    assert result.exit_code == 0, result.output
    assert "2 users" in result.output and "3 patients" in result.output and "orders" in result.output
    refused = runner.invoke(app, ["context", "import-fhir", str(bad)], env=env)
    assert refused.exit_code == 1 and "entry" in refused.output and "yesterday" not in refused.output
    from dicomguard.app.archive import Archive
    from tests.conftest import PASSPHRASE

    with Archive.open(home, PASSPHRASE) as reopened:
        texts = reopened.operator.detection.context_files()
    assert texts["orders"] == context_texts_from_fhir(transaction_bundle())["orders"]  # the bad file changed nothing
