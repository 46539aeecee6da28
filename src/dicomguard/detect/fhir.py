"""The detector's context (users, patients, orders) from HL7 FHIR R4 JSON, as the three CSV texts of :mod:`context`.

Hospitals export their directory and orders as HL7 FHIR R4 (https://hl7.org/fhir/R4/) resources: a ``Bundle``
of any type (collection, transaction, searchset; resources in ``entry[].resource``), one resource, or NDJSON
(one resource per line, the FHIR Bulk Data export format). This module turns them into the CSV texts
``users``, ``patients`` and ``orders`` with the columns of :mod:`dicomguard.detect.context`, so they are stored
and loaded exactly like imported CSV files:

* users from ``Practitioner`` (+ the first active ``PractitionerRole`` whose ``practitioner`` it is): user_id is the
  identifier the audit trail carries as UserID (``use`` "usual", else "official", else the first identifier,
  else the resource id); role is ``PractitionerRole.code[0]``; department is ``PractitionerRole.organization``
  (its display, else the referenced ``Organization.name``), else ``specialty[0]``;
* patients from ``Patient``: patient_id is the identifier typed "MR" (v2-0203), else the first identifier, else
  the resource id; vip, see :func:`_is_vip`;
* orders from ``ServiceRequest`` (+ every ``ImagingStudy`` whose ``basedOn`` references it, one order row
  each): accession is the identifier typed "ACSN", else the first; the ``subject`` must resolve to a
  ``Patient`` of the input; ``ordering_user`` is the requester (``Practitioner``, or a ``PractitionerRole``'s
  practitioner) and ``department`` the requesting ``PractitionerRole``'s department; ``ordered_at`` is
  ``authoredOn``; reading_group joins with "|" the performers that are groups (``Organization``, ``CareTeam``,
  ``HealthcareService``, ``PractitionerRole``: their display, else name or department); study_uid is the
  ``ImagingStudy`` identifier of system "urn:dicom:uid" without "urn:oid:"; modality its ``modality[0]``,
  else the ``ServiceRequest.code`` coding (a DICOM DCM code preferred).

Names are written as DICOM PN ``Family^Given`` from ``HumanName.family``/``given`` (``text`` when they are
absent), the form the misuse signatures compare; addresses as "line, city" (``use`` "home" preferred).
References are resolved within the input with dicts: ``Type/id``, absolute URLs, ``urn:uuid:`` full URLs of
bundle entries and ``#id`` contained resources. Other resource types are used only to resolve references.

Loading is all or nothing, like the CSV loaders: any error raises :class:`ContextError` "name: entry n: reason",
n the 1-based bundle entry or NDJSON line ("name: line n: reason" where no entry can be named, as in a document
that is not JSON). The reason names the field, never its value: no PHI (names, identifiers, addresses) goes
into an error. Inputs over 200 MB or 2,000,000 resources are refused; nothing here recurses over the input.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dicomguard.detect.context import (
    ORDERS_COLUMNS,
    PATIENTS_COLUMNS,
    USERS_COLUMNS,
    ContextError,
    parse_datetime,
)

MAX_BYTES: Final = 200 * 1024 * 1024
MAX_RESOURCES: Final = 2_000_000

_V2_0203: Final = frozenset({"http://terminology.hl7.org/CodeSystem/v2-0203", "http://hl7.org/fhir/v2/0203", ""})
_CONFIDENTIALITY: Final = frozenset({"http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                     "http://hl7.org/fhir/v3/Confidentiality",
                                     "http://terminology.hl7.org/CodeSystem/v2-0177", "http://hl7.org/fhir/v2/0177", ""})
_IMPORTANCE: Final = "http://hl7.org/fhir/StructureDefinition/patient-importance"
_ACTCODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
_SURROGATE: Final = re.compile("[\udc80-\udcff]")
_ESCAPED_SURROGATE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_NON_SPACE: Final = re.compile(r"\S")
_NOT_GROUPS: Final = frozenset({"Practitioner", "Patient", "RelatedPerson", "Device"})

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Entry:
    n: int  # 1-based bundle entry or NDJSON line
    resource: Json
    host: Json | None = None  # the resource holding this one in ``contained``

    @property
    def type(self) -> str:
        return str(self.resource["resourceType"])


def _list(value: Any) -> list[Any]:
    """A FHIR array (a lone object is taken as a one-element array)."""
    return value if isinstance(value, list) else [value] if isinstance(value, dict) else []


def _dicts(value: Any) -> list[Json]:
    return [v for v in _list(value) if isinstance(v, dict)]


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _codings(concept: Any) -> list[Json]:
    """The codings of a CodeableConcept (or of a lone Coding)."""
    if not isinstance(concept, dict):
        return []
    return _dicts(concept.get("coding")) if "coding" in concept else [concept]


def _concept_label(concept: Any, text_first: bool = False) -> str:
    codings = _codings(concept)
    labels = [_str(c.get("display")) or _str(c.get("code")) for c in codings]
    text = _str(concept.get("text")) if isinstance(concept, dict) else ""
    ordered = [text, *labels] if text_first else [*labels, text]
    return next((v for v in ordered if v), "")


def _has_type(identifier: Json, code: str) -> bool:
    return any(_str(c.get("code")) == code and _str(c.get("system")) in _V2_0203 for c in _codings(identifier.get("type")))


def _identifiers(resource: Json) -> list[Json]:
    """Identifiers with a value, those marked "old" last."""
    found = [i for i in _dicts(resource.get("identifier")) if _str(i.get("value"))]
    return sorted(found, key=lambda i: i.get("use") == "old")


def _first(values: Iterable[str]) -> str:
    return next((v for v in values if v), "")


def _user_id(practitioner: Json) -> str:
    ids = _identifiers(practitioner)
    return _first([*(_str(i["value"]) for u in ("usual", "official") for i in ids if i.get("use") == u),
                   *(_str(i["value"]) for i in ids[:1]), _str(practitioner.get("id"))])


def _typed_id(resource: Json, code: str) -> str:
    ids = _identifiers(resource)
    return _first([*(_str(i["value"]) for i in ids if _has_type(i, code)), *(_str(i["value"]) for i in ids[:1])])


def _pick(items: list[Json], preferred: Sequence[str]) -> Json:
    for use in preferred:
        for item in items:
            if item.get("use") == use:
                return item
    return next((i for i in items if i.get("use") != "old"), items[0] if items else {})


def _name(resource: Json) -> str:
    n = _pick(_dicts(resource.get("name")), ("official", "usual"))
    family = _str(n.get("family"))
    given = " ".join(g for g in (_str(x) for x in _list(n.get("given")) if isinstance(x, str)) if g)
    if family:
        return f"{family}^{given}" if given else family
    return _str(n.get("text")) or given


def _address(resource: Json) -> str:
    a = _pick(_dicts(resource.get("address")), ("home",))
    parts = [_str(x) for x in _list(a.get("line")) if isinstance(x, str)] + [_str(a.get("city"))]
    return ", ".join(p for p in parts if p) or _str(a.get("text"))


def _is_vip(patient: Json) -> bool:
    """VIP when the patient carries a special status: ``meta.security`` or ``meta.tag`` holds the code "VIP" (any
    system, e.g. v2-0177 "very important person or celebrity"), the v3 ActCode "CEL" (celebrity), or the
    confidentiality "R" (restricted) or "V" (very restricted) of v3-Confidentiality or v2-0177 (or with no system);
    or the HL7 ``patient-importance`` extension holds any code (v3 PatientImportance: VIP, board member, dignitary,
    staff, ...); or a boolean extension whose URL ends in "vip" is true."""
    meta = patient.get("meta") if isinstance(patient.get("meta"), dict) else {}
    for ext in _dicts(patient.get("extension")):
        url = _str(ext.get("url"))
        if url == _IMPORTANCE and any(_str(c.get("code")) for c in _codings(ext.get("valueCodeableConcept"))):
            return True
        if url.lower().rstrip("/").endswith("vip") and ext.get("valueBoolean") is True:
            return True
    for c in _dicts(meta.get("security")) + _dicts(meta.get("tag")):
        code, system = _str(c.get("code")), _str(c.get("system"))
        if code == "VIP" or (code == "CEL" and system == _ACTCODE) or (code in ("R", "V") and system in _CONFIDENTIALITY):
            return True
    return False


class _Index:
    """Resources by every key a reference may use: full URL, ``Type/id`` and the URL's last two segments."""

    def __init__(self, entries: list[tuple[_Entry, str]]) -> None:
        self._by_key: dict[str, _Entry] = {}
        for entry, full_url in entries:
            rid = _str(entry.resource.get("id"))
            for key in (full_url, f"{entry.type}/{rid}" if rid else "", _tail(full_url)):
                if key:
                    self._by_key.setdefault(key, entry)

    def resolve(self, ref: Any, container: _Entry) -> _Entry | None:
        if not isinstance(ref, dict):
            return None
        target = _str(ref.get("reference"))
        if not target:
            return None
        if target.startswith("#"):  # contained resources refer to each other within their host
            host = container.host if container.host is not None else container.resource
            for res in _dicts(host.get("contained")):
                if _str(res.get("id")) == target[1:] and isinstance(res.get("resourceType"), str):
                    return _Entry(container.n, res, host)
            return None
        target = target.split("/_history/", 1)[0]
        return self._by_key.get(target) or self._by_key.get(_tail(target))


def _tail(url: str) -> str:
    """"Type/id" of a RESTful URL ("https://x/fhir/Patient/1" -> "Patient/1"); "" for a urn."""
    parts = url.split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 and not url.startswith("urn:") else ""


def _ref_type(ref: Any, target: _Entry | None) -> str:
    if target is not None:
        return target.type
    if not isinstance(ref, dict):
        return ""
    return _str(ref.get("type")) or _tail(_str(ref.get("reference"))).partition("/")[0]


# --- reading the input ------------------------------------------------------------------------------------------

def _decode(data: bytes) -> tuple[str, bool]:
    """The text (bad bytes kept as lone surrogates, to be located later) and whether it was valid UTF-8."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape"), False


def _not_utf8(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _entries(data: bytes, name: str) -> list[tuple[_Entry, str]]:
    """(entry, full URL) of every resource, with the entry's number; raises on anything not a FHIR resource."""
    if len(data) > MAX_BYTES:
        raise ContextError(f"{name}: larger than {MAX_BYTES // (1024 * 1024)} MB")
    text, utf8 = _decode(data)
    start = _NON_SPACE.search(text)
    if start is None:
        raise ContextError(f"{name}: empty input")
    end = text.find("\n", start.start())
    raw: list[tuple[int, Any, str]] = []  # (n, resource, full URL)
    if end != -1 and _NON_SPACE.search(text, end) and _ndjson_line(text[start.start():end]):
        lines = text.split("\n")
        filled = [i for i, line in enumerate(lines) if line.strip()]
        if len(filled) > MAX_RESOURCES:
            raise ContextError(f"{name}: more than {MAX_RESOURCES} resources")
        for i in filled:
            try:
                resource = _loads(lines[i])
            except ValueError as exc:
                reason = "not UTF-8 text" if not utf8 and _not_utf8(lines[i]) else f"not valid JSON{_why(exc)}"
                raise ContextError(f"{name}: entry {i + 1}: {reason}") from None
            if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
                raise ContextError(f"{name}: entry {i + 1}: a Bundle inside NDJSON is not supported")
            raw.append((i + 1, resource, ""))
    else:
        try:
            doc = _loads(text)
        except ValueError as exc:
            if not utf8:
                raise ContextError(f"{name}: line {_bad_line(text)}: not UTF-8 text") from None
            line = exc.lineno if isinstance(exc, json.JSONDecodeError) else 1
            raise ContextError(f"{name}: line {line}: not valid JSON{_why(exc)}") from None
        if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
            items = doc.get("entry", [])
            if not isinstance(items, list):
                raise ContextError(f"{name}: Bundle.entry is not a list")
            if len(items) > MAX_RESOURCES:
                raise ContextError(f"{name}: more than {MAX_RESOURCES} resources")
            for n, item in enumerate(items, 1):
                if not isinstance(item, dict):
                    raise ContextError(f"{name}: entry {n}: not a Bundle entry object")
                if "resource" not in item:
                    continue  # a transaction's DELETE or a search outcome: nothing to load
                if isinstance(item["resource"], dict) and item["resource"].get("resourceType") == "Bundle":
                    raise ContextError(f"{name}: entry {n}: a Bundle inside a Bundle is not supported")
                raw.append((n, item["resource"], _str(item.get("fullUrl"))))
        else:
            raw.append((1, doc, ""))
    if not utf8 or _ESCAPED_SURROGATE.search(text):  # bad bytes, or a lone surrogate written as a JSON escape
        bad = next((n for n, res, url in raw if _not_utf8(res) or _not_utf8(url)), None)
        if bad is not None:
            raise ContextError(f"{name}: entry {bad}: not UTF-8 text")
        if not utf8:
            raise ContextError(f"{name}: line {_bad_line(text)}: not UTF-8 text")
    out: list[tuple[_Entry, str]] = []
    for n, resource, full_url in raw:
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str) \
                or not resource["resourceType"].strip():
            raise ContextError(f"{name}: entry {n}: resource has no resourceType")
        out.append((_Entry(n, resource), full_url))
    return out


def _bad_line(text: str) -> int:
    """The line of the first byte that was not UTF-8 (decoded as a lone surrogate)."""
    bad = _SURROGATE.search(text)
    return text.count("\n", 0, bad.start()) + 1 if bad else 1


def _ndjson_line(line: str) -> bool:
    try:
        return isinstance(_loads(line), dict)
    except ValueError:
        return False


def _why(exc: ValueError) -> str:
    """Where the JSON breaks (line/column only: the decoder's message never quotes the document)."""
    return f" (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else f" ({exc})"


# --- mapping ----------------------------------------------------------------------------------------------------

def _csv(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue()


def _unique(name: str, kind: str, rows: list[tuple[int, tuple[str, ...]]]) -> list[tuple[str, ...]]:
    """Rows keyed by their first column: an exact repeat is dropped, a conflicting one refused."""
    seen: dict[str, tuple[str, ...]] = {}
    for n, row in rows:
        if not row[0]:
            raise ContextError(f"{name}: entry {n}: {kind} has no identifier or id")
        if row[0] in seen and seen[row[0]] != row:
            raise ContextError(f"{name}: entry {n}: another {kind} has the same identifier")
        seen.setdefault(row[0], row)
    return list(seen.values())


def context_texts_from_fhir(data: bytes, name: str = "bundle") -> dict[str, str]:
    """kind ("users" | "patients" | "orders") -> CSV text with that kind's columns (header line first), only for
    kinds the input holds."""
    entries = _entries(data, name)
    index = _Index(entries)
    by_type: dict[str, list[_Entry]] = {}
    for entry, _ in entries:
        by_type.setdefault(entry.type, []).append(entry)

    def department(role: _Entry) -> str:
        org_ref = role.resource.get("organization")
        org = index.resolve(org_ref, role)
        org_name = _str(org.resource.get("name")) if org is not None and org.type == "Organization" else ""
        display = _str(org_ref.get("display")) if isinstance(org_ref, dict) else ""
        specialty = _dicts(role.resource.get("specialty"))
        return display or org_name or (_concept_label(specialty[0], text_first=True) if specialty else "")

    role_of: dict[int, _Entry] = {}  # Practitioner (by object) -> its first active PractitionerRole
    for role in by_type.get("PractitionerRole", []):
        p = index.resolve(role.resource.get("practitioner"), role)
        if p is not None and p.type == "Practitioner" and role.resource.get("active") is not False:
            role_of.setdefault(id(p.resource), role)

    def practitioner(ref: Any, holder: _Entry, typed: bool) -> str:
        """The user_id of a Practitioner reference; a logical (identifier-only) one gives its identifier."""
        target = index.resolve(ref, holder)
        if target is not None:
            return _user_id(target.resource) if target.type == "Practitioner" else ""
        ident = ref.get("identifier") if isinstance(ref, dict) else None
        if isinstance(ident, dict) and (not typed or _str(ref.get("type")) == "Practitioner"):
            return _str(ident.get("value"))
        return ""

    def requester(sr: _Entry) -> tuple[str, str]:
        ref = sr.resource.get("requester")
        target = index.resolve(ref, sr)
        if target is not None and target.type == "PractitionerRole":
            return practitioner(target.resource.get("practitioner"), target, typed=False), department(target)
        return practitioner(ref, sr, typed=True), ""

    def reading_group(sr: _Entry) -> str:
        groups: list[str] = []
        for ref in _dicts(sr.resource.get("performer")):
            target = index.resolve(ref, sr)
            kind = _ref_type(ref, target)
            if kind in _NOT_GROUPS:
                continue
            group = _str(ref.get("display"))
            if not group and target is not None:
                group = department(target) if kind == "PractitionerRole" else _str(target.resource.get("name"))
            if group and group not in groups:
                groups.append(group)
        return "|".join(groups)

    out: dict[str, str] = {}
    if "Practitioner" in by_type:
        rows = []
        for e in by_type["Practitioner"]:
            role = role_of.get(id(e.resource))
            codes = _dicts(role.resource.get("code")) if role is not None else []
            rows.append((e.n, (_user_id(e.resource), _name(e.resource), _concept_label(codes[0]) if codes else "",
                               department(role) if role is not None else "", _address(e.resource))))
        out["users"] = _csv(USERS_COLUMNS, _unique(name, "Practitioner", rows))
    patient_ids = {id(e.resource): _typed_id(e.resource, "MR") or _str(e.resource.get("id"))
                   for e in by_type.get("Patient", [])}
    if "Patient" in by_type:
        rows = [(e.n, (patient_ids[id(e.resource)], _name(e.resource), _address(e.resource),
                       "true" if _is_vip(e.resource) else "false")) for e in by_type["Patient"]]
        out["patients"] = _csv(PATIENTS_COLUMNS, _unique(name, "Patient", rows))
    if "ServiceRequest" in by_type:
        studies: dict[int, list[_Entry]] = {}
        for study in by_type.get("ImagingStudy", []):
            for ref in _dicts(study.resource.get("basedOn")):
                sr = index.resolve(ref, study)
                if sr is not None and sr.type == "ServiceRequest":
                    studies.setdefault(id(sr.resource), []).append(study)
        order_rows: list[tuple[str, ...]] = []
        for sr in by_type["ServiceRequest"]:
            order_rows.extend(_orders(name, sr, index, patient_ids, requester(sr), reading_group(sr),
                                      studies.get(id(sr.resource), [])))
        out["orders"] = _csv(ORDERS_COLUMNS, order_rows)
    return out


def _orders(name: str, sr: _Entry, index: _Index, patient_ids: dict[int, str], requester: tuple[str, str],
            reading_group: str, studies: list[_Entry]) -> list[tuple[str, ...]]:
    """One row per ImagingStudy based on the request (one row without study when there is none)."""
    r = sr.resource
    patient = index.resolve(r.get("subject"), sr)
    if patient is None or patient.type != "Patient":
        raise ContextError(f"{name}: entry {sr.n}: subject does not resolve to a Patient in the input")
    patient_id = patient_ids.get(id(patient.resource)) or _typed_id(patient.resource, "MR") or _str(patient.resource.get("id"))
    if not patient_id:
        raise ContextError(f"{name}: entry {sr.n}: the subject Patient has no identifier or id")
    try:
        ordered_at = parse_datetime(r["authoredOn"]).isoformat()
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ContextError(f"{name}: entry {sr.n}: authoredOn is missing or not an ISO 8601 date-time") from None
    codings = _codings(r.get("code"))
    sr_modality = _first([*(_str(c.get("code")) for c in codings if _str(c.get("system")) == _DCM),
                          *(_str(c.get("code")) for c in codings[:1])])
    base = (_typed_id(r, "ACSN"), patient_id)
    tail = (requester[0], requester[1], ordered_at, reading_group)
    rows: list[tuple[str, ...]] = []
    for study in studies:
        uid = _first(_str(i.get("value")) for i in _dicts(study.resource.get("identifier"))
                     if _str(i.get("system")) == "urn:dicom:uid")
        uid = uid[len("urn:oid:"):] if uid.startswith("urn:oid:") else uid
        modality = _first(_str(c.get("code")) for m in _dicts(study.resource.get("modality"))[:1] for c in _codings(m))
        rows.append((*base, uid, modality or sr_modality, *tail))
    return rows or [(*base, "", sr_modality, *tail)]
