"""DICOM audit messages (PS3.15 A.5.1): an immutable model, its canonical XML, and a hardened parser.

:func:`to_xml` writes the elements in the order the A.5.1 schema requires, on
one line (syslog collectors store one message per line), with every value
escaped and characters XML 1.0 forbids replaced, so the output is well-formed
and schema-valid for any input string. The same message always gives the same
bytes: the audit trail hashes them.

:func:`parse` reads messages from other systems (import, syslog listener):
no DTD, no entities, no network, bounded size; it is followed by
:func:`dicomguard.audit.schema.validate` before anything is stored.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from dicomguard.audit.codes import Code, ObjectIdTypes, ObjectRole, ObjectType

MAX_MESSAGE_BYTES = 1024 * 1024
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'

# Characters XML 1.0 does not allow (section 2.2): replaced, never passed through.
_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SPECIAL = re.compile('[&<>"\x00-\x1f\ud800-\udfff\ufffe\uffff]')


@dataclass(frozen=True)
class Participant:
    """ActiveParticipant: a user, device or process taking part in the event."""

    user_id: str
    requestor: bool
    roles: tuple[Code, ...] = ()
    alt_user_id: str | None = None
    user_name: str | None = None
    nap_id: str | None = None
    nap_type: int | None = None
    media_type: Code | None = None


@dataclass(frozen=True)
class SopClassRef:
    uid: str | None
    count: int
    instances: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObjectDescription:
    """ParticipantObjectDescription (PS3.15 A.5.2.7, DICOMObjectDescriptionContents)."""

    mpps: tuple[str, ...] = ()
    accessions: tuple[str, ...] = ()
    sop_classes: tuple[SopClassRef, ...] = ()
    studies: tuple[str, ...] | None = None
    encrypted: bool | None = None
    anonymized: bool | None = None


@dataclass(frozen=True)
class ParticipantObject:
    """ParticipantObjectIdentification: a patient, study, query, file or alert subject."""

    object_id: str
    id_type: Code
    name: str | None = None
    query: bytes | None = None
    details: tuple[tuple[str, bytes], ...] = ()
    descriptions: tuple[ObjectDescription, ...] = ()
    type_code: int | None = None
    role: int | None = None
    lifecycle: int | None = None
    sensitivity: str | None = None

    @property
    def is_patient(self) -> bool:
        return self.type_code == ObjectType.PERSON and self.role == ObjectRole.PATIENT

    @property
    def is_study(self) -> bool:
        return self.id_type.key() == ObjectIdTypes.STUDY_INSTANCE_UID.key()


@dataclass(frozen=True)
class AuditMessage:
    event_id: Code
    time: datetime
    outcome: int
    participants: tuple[Participant, ...]
    source_id: str
    action: str | None = None
    event_types: tuple[Code, ...] = ()
    outcome_description: str | None = None
    site_id: str | None = None
    source_types: tuple[Code, ...] = ()
    objects: tuple[ParticipantObject, ...] = field(default_factory=tuple)

    # -- what reviews search by -----------------------------------------------------

    def requestor(self) -> Participant | None:
        """The participant that requested the event (UserIsRequestor), else the first one."""
        for p in self.participants:
            if p.requestor:
                return p
        return self.participants[0] if self.participants else None

    def patient_ids(self) -> list[str]:
        """Patient IDs named (CX components after the ID are dropped: ``PID^^^ISSUER`` gives ``PID``)."""
        return list(dict.fromkeys(patient_id_of(o.object_id) for o in self.objects if o.is_patient))

    def study_uids(self) -> list[str]:
        return list(dict.fromkeys(o.object_id for o in self.objects if o.is_study))


def patient_id_of(participant_object_id: str) -> str:
    return participant_object_id.split("^", 1)[0].strip()


# -- writing --------------------------------------------------------------------------


def _esc(value: str) -> str:
    if not _SPECIAL.search(value):
        return value  # the common case: UIDs, codes, names
    value = _INVALID.sub("\ufffd", value)
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
        .replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")
    )


def _attrs(pairs: list[tuple[str, object]]) -> str:
    return "".join(f' {k}="{_esc(str(v))}"' for k, v in pairs if v is not None)


@lru_cache(maxsize=1024)
def _code(tag: str, c: Code) -> str:
    return f'<{tag} csd-code="{_esc(c.code)}" codeSystemName="{_esc(c.system)}" originalText="{_esc(c.meaning)}"/>'


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def format_time(t: datetime) -> str:
    """xsd:dateTime in UTC with microseconds (A.5.2.1: times carry their offset)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    elif t.utcoffset():
        t = t.astimezone(UTC)
    return t.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _description(d: ObjectDescription) -> str:
    out = ["<ParticipantObjectDescription>"]
    out += [f'<MPPS UID="{_esc(u)}"/>' for u in d.mpps]
    out += [f'<Accession Number="{_esc(a)}"/>' for a in d.accessions]
    for sc in d.sop_classes:
        inner = "".join(f'<Instance UID="{_esc(u)}"/>' for u in sc.instances)
        out.append(f"<SOPClass{_attrs([('UID', sc.uid), ('NumberOfInstances', sc.count)])}>{inner}</SOPClass>")
    if d.studies is not None:
        out.append("<ParticipantObjectContainsStudy>" + "".join(f'<StudyIDs UID="{_esc(u)}"/>' for u in d.studies)
                   + "</ParticipantObjectContainsStudy>")
    if d.encrypted is not None:
        out.append(f"<Encrypted>{'true' if d.encrypted else 'false'}</Encrypted>")
    if d.anonymized is not None:
        out.append(f"<Anonymized>{'true' if d.anonymized else 'false'}</Anonymized>")
    out.append("</ParticipantObjectDescription>")
    return "".join(out)


@lru_cache(maxsize=2048)
def _participant(p: Participant) -> str:
    """ActiveParticipant element (cached: the same users, devices and the archive take part again and again)."""
    attrs = _attrs([
        ("UserID", p.user_id), ("AlternativeUserID", p.alt_user_id), ("UserName", p.user_name),
        ("UserIsRequestor", "true" if p.requestor else "false"), ("NetworkAccessPointID", p.nap_id),
        ("NetworkAccessPointTypeCode", p.nap_type if p.nap_id else None),
    ])
    inner = "".join(_code("RoleIDCode", r) for r in p.roles)
    if p.media_type is not None:
        inner += "<MediaIdentifier>" + _code("MediaType", p.media_type) + "</MediaIdentifier>"
    return f"<ActiveParticipant{attrs}>{inner}</ActiveParticipant>" if inner else f"<ActiveParticipant{attrs}/>"


def to_xml(m: AuditMessage) -> bytes:
    """Canonical, schema-ordered, single-line UTF-8 XML of the message (with XML declaration)."""
    out = ["<AuditMessage>"]
    ev = _attrs([("EventActionCode", m.action), ("EventDateTime", format_time(m.time)), ("EventOutcomeIndicator", int(m.outcome))])
    out.append(f"<EventIdentification{ev}>")
    out.append(_code("EventID", m.event_id))
    out += [_code("EventTypeCode", c) for c in m.event_types]
    if m.outcome_description is not None:
        out.append(f"<EventOutcomeDescription>{_esc(m.outcome_description)}</EventOutcomeDescription>")
    out.append("</EventIdentification>")
    out += [_participant(p) for p in m.participants]
    out.append(f"<AuditSourceIdentification{_attrs([('AuditEnterpriseSiteID', m.site_id), ('AuditSourceID', m.source_id)])}>")
    for st in m.source_types:
        if st.system:
            out.append(f'<AuditSourceTypeCode csd-code="{_esc(st.code)}" codeSystemName="{_esc(st.system)}" originalText="{_esc(st.meaning)}"/>')
        else:
            out.append(f'<AuditSourceTypeCode csd-code="{_esc(st.code)}"/>')
    out.append("</AuditSourceIdentification>")
    for o in m.objects:
        attrs = _attrs([
            ("ParticipantObjectID", o.object_id), ("ParticipantObjectTypeCode", o.type_code),
            ("ParticipantObjectTypeCodeRole", o.role), ("ParticipantObjectDataLifeCycle", o.lifecycle),
            ("ParticipantObjectSensitivity", o.sensitivity),
        ])
        out.append(f"<ParticipantObjectIdentification{attrs}>")
        out.append(_code("ParticipantObjectIDTypeCode", o.id_type))
        if o.query is not None:
            out.append(f"<ParticipantObjectQuery>{_b64(o.query)}</ParticipantObjectQuery>")
        else:
            # A.5.1 makes a name or a query mandatory: the identifier stands in for a missing name.
            out.append(f"<ParticipantObjectName>{_esc(o.name if o.name is not None else o.object_id)}</ParticipantObjectName>")
        out += [f'<ParticipantObjectDetail type="{_esc(t)}" value="{_b64(v)}"/>' for t, v in o.details]
        out += [_description(d) for d in o.descriptions]
        out.append("</ParticipantObjectIdentification>")
    out.append("</AuditMessage>")
    return XML_DECLARATION + "".join(out).encode("utf-8")


# -- reading --------------------------------------------------------------------------


class MessageError(ValueError):
    """Not a well-formed, acceptable audit message (the reason names no value from it)."""


def parse_tree(data: bytes):  # type: ignore[no-untyped-def]
    """Parse untrusted XML into an lxml element: no DTD, no entity expansion, no network, bounded size."""
    from lxml import etree

    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise MessageError("DTDs and entities are not accepted")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False,
                             remove_pis=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise MessageError(f"not well-formed XML (line {exc.lineno})") from None
    # The byte search above misses a document in another encoding (UTF-16, EBCDIC): ask the parsed document itself.
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None or _has_entity_references(root):
        raise MessageError("DTDs and entities are not accepted")
    return root


def _has_entity_references(root) -> bool:  # type: ignore[no-untyped-def]
    from lxml import etree

    return any(isinstance(node, etree._Entity) for node in root.iter())


def _get_code(el) -> Code:  # type: ignore[no-untyped-def]
    return Code(el.get("csd-code", ""), el.get("codeSystemName", ""), el.get("originalText", el.get("displayName", "")))


def _bool(v: str | None) -> bool:
    return (v or "").strip() in ("true", "1")


def _int(v: str | None) -> int | None:
    return int(v.strip()) if v is not None and v.strip().lstrip("+-").isdigit() else None


def parse_time(value: str) -> datetime:
    """An xs:dateTime as an aware datetime; raises :class:`MessageError` when it is not one, or not representable in UTC.

    (``9999-12-31T23:59:59-14:00`` is valid xs:dateTime and overflows Python's datetime once converted to UTC.)
    """
    v = value.strip()
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(v)
        t = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
        t.astimezone(UTC)
    except (ValueError, OverflowError):
        raise MessageError("EventDateTime is not a date-time the archive can represent") from None
    return t


def from_element(root) -> AuditMessage:  # type: ignore[no-untyped-def]
    """The model of a (schema-valid) AuditMessage element."""
    ev = root.find("EventIdentification")
    if root.tag != "AuditMessage" or ev is None or ev.find("EventID") is None:
        raise MessageError("not a DICOM AuditMessage")
    participants = []
    for ap in root.findall("ActiveParticipant"):
        media = ap.find("MediaIdentifier/MediaType")
        participants.append(Participant(
            ap.get("UserID", ""), _bool(ap.get("UserIsRequestor")), tuple(_get_code(r) for r in ap.findall("RoleIDCode")),
            ap.get("AlternativeUserID"), ap.get("UserName"), ap.get("NetworkAccessPointID"),
            _int(ap.get("NetworkAccessPointTypeCode")), _get_code(media) if media is not None else None,
        ))
    src = root.find("AuditSourceIdentification")
    objects = []
    for po in root.findall("ParticipantObjectIdentification"):
        descriptions = []
        for d in po.findall("ParticipantObjectDescription"):
            sops = tuple(
                SopClassRef(sc.get("UID"), _int(sc.get("NumberOfInstances")) or 0, tuple(i.get("UID", "") for i in sc.findall("Instance")))
                for sc in d.findall("SOPClass")
            )
            contains = d.find("ParticipantObjectContainsStudy")
            enc, anon = d.find("Encrypted"), d.find("Anonymized")
            descriptions.append(ObjectDescription(
                tuple(x.get("UID", "") for x in d.findall("MPPS")), tuple(x.get("Number", "") for x in d.findall("Accession")), sops,
                tuple(x.get("UID", "") for x in contains.findall("StudyIDs")) if contains is not None else None,
                _bool(enc.text) if enc is not None else None, _bool(anon.text) if anon is not None else None,
            ))
        q = po.find("ParticipantObjectQuery")
        name = po.find("ParticipantObjectName")
        id_type = po.find("ParticipantObjectIDTypeCode")
        objects.append(ParticipantObject(
            po.get("ParticipantObjectID", ""), _get_code(id_type) if id_type is not None else Code("", "", ""),
            (name.text or "") if name is not None else None,
            base64.b64decode("".join((q.text or "").split())) if q is not None else None,
            tuple((d.get("type", ""), base64.b64decode("".join(d.get("value", "").split()))) for d in po.findall("ParticipantObjectDetail")),
            tuple(descriptions), _int(po.get("ParticipantObjectTypeCode")), _int(po.get("ParticipantObjectTypeCodeRole")),
            _int(po.get("ParticipantObjectDataLifeCycle")), po.get("ParticipantObjectSensitivity"),
        ))
    desc = ev.find("EventOutcomeDescription")
    return AuditMessage(
        event_id=_get_code(ev.find("EventID")),
        time=parse_time(ev.get("EventDateTime", "")),
        outcome=_int(ev.get("EventOutcomeIndicator")) or 0,
        participants=tuple(participants),
        source_id=src.get("AuditSourceID", "") if src is not None else "",
        action=(ev.get("EventActionCode") or "").strip() or None,
        event_types=tuple(_get_code(c) for c in ev.findall("EventTypeCode")),
        outcome_description=(desc.text or "") if desc is not None else None,
        site_id=src.get("AuditEnterpriseSiteID") if src is not None else None,
        source_types=tuple(_get_code(c) for c in src.findall("AuditSourceTypeCode")) if src is not None else (),
        objects=tuple(objects),
    )


def from_xml(data: bytes) -> AuditMessage:
    """Parse a message we wrote (trusted: our own sealed records)."""
    return from_element(parse_tree(data))
