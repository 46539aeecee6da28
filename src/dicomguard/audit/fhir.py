"""FHIR R4 AuditEvent resources from DICOM audit messages, following IHE Basic Audit Log Patterns (BALP).

Mapping (FHIR R4 AuditEvent "DICOM" mappings; BALP agent and entity patterns):

* ``type`` = the DICOM EventID, ``subtype`` = its EventTypeCodes, ``action``,
  ``recorded``, ``outcome`` and ``outcomeDesc`` as in the message;
* each ActiveParticipant is an ``agent``: its RoleIDCode as ``type`` (BALP: the
  client is Source Role ID, the server Destination Role ID; a person who asked
  for data without a DICOM role is ``IRCP`` information recipient),
  ``who.identifier`` = UserID, ``altId``, ``name``, ``requestor``, ``network``;
* AuditSourceIdentification is ``source`` (observer, site, type);
* each ParticipantObjectIdentification is an ``entity``: patients as type 1
  Person / role 1 Patient with the Patient ID as identifier; studies as type 2
  with the Study Instance UID (``urn:oid:``) and their instance counts; queries
  as role 24 Query with the base64 query (BALP Query); details as
  ``valueBase64Binary``.

The resources do not claim a BALP RESTful profile in ``meta.profile``: those
profiles fix ``type`` to ``rest``, and DICOM events are not RESTful
interactions. Records imported from other systems are converted the same way.
"""

from __future__ import annotations

import base64
from typing import Any

from dicomguard.audit.codes import DCM, LOCAL, RFC3881, Code, ObjectRole, SourceType
from dicomguard.audit.message import AuditMessage, format_time

SYSTEMS = {
    DCM: "http://dicom.nema.org/resources/ontology/DCM",
    LOCAL: "urn:dicomguard:codesystem:audit",
}
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_SOURCE_TYPES = {str(int(SourceType.APPLICATION_SERVER)): "Application Server", str(int(SourceType.SECURITY_SERVER)): "Security Server"}


def coding(c: Code) -> dict[str, str]:
    system = SYSTEMS.get(c.system) or (f"urn:dicomguard:codesystem:{c.system}" if c.system and c.system != RFC3881 else "urn:ietf:rfc:3881")
    out = {"system": system, "code": c.code}
    if c.meaning:
        out["display"] = c.meaning
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _what(o) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    if o.is_study or (o.object_id and all(ch.isdigit() or ch == "." for ch in o.object_id) and o.id_type.code in ("110180", "110181")):
        return {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{o.object_id}"}}
    if o.is_patient:
        pid, _, rest = o.object_id.partition("^^^")
        ident: dict[str, Any] = {"value": pid}
        if rest:
            ident["assigner"] = {"display": rest}
        return {"identifier": ident, "type": "Patient"}
    return {"identifier": {"value": o.object_id}}


def audit_event(record_id: str, m: AuditMessage) -> dict[str, Any]:
    """One FHIR R4 AuditEvent resource (JSON object) for one audit message."""
    agents = []
    for p in m.participants:
        agent: dict[str, Any] = {"who": {"identifier": {"value": p.user_id}}, "requestor": bool(p.requestor)}
        if p.roles:
            agent["type"] = {"coding": [coding(p.roles[0])]}
            if len(p.roles) > 1:
                agent["role"] = [{"coding": [coding(r)]} for r in p.roles[1:]]
        elif p.requestor:
            agent["type"] = {"coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}]}
        if p.alt_user_id:
            agent["altId"] = p.alt_user_id
        if p.user_name:
            agent["name"] = p.user_name
        if p.nap_id:
            agent["network"] = {"address": p.nap_id, **({"type": str(p.nap_type)} if p.nap_type else {})}
        if p.media_type is not None:
            agent["media"] = coding(p.media_type)
        agents.append(agent)
    entities = []
    for o in m.objects:
        entity: dict[str, Any] = {"what": _what(o)}
        if o.type_code:
            entity["type"] = {"system": ENTITY_TYPE, "code": str(o.type_code)}
        role = ObjectRole.QUERY if o.query is not None else o.role
        if role:
            entity["role"] = {"system": OBJECT_ROLE, "code": str(int(role))}
        if o.lifecycle:
            entity["lifecycle"] = {"system": LIFECYCLE, "code": str(o.lifecycle)}
        if o.sensitivity:
            entity["securityLabel"] = [{"code": o.sensitivity}]
        if o.query is not None:
            entity["query"] = _b64(o.query)
        elif o.name and o.name != o.object_id:
            entity["name"] = o.name
        details = [{"type": t, "valueBase64Binary": _b64(v)} for t, v in o.details]
        for d in o.descriptions:
            for sc in d.sop_classes:
                details.append({"type": f"SOPClass {sc.uid or ''}".strip(), "valueString": str(sc.count)})
            for acc in d.accessions:
                details.append({"type": "Accession", "valueString": acc})
        if details:
            entity["detail"] = details
        entities.append(entity)
    source: dict[str, Any] = {"observer": {"display": m.source_id}}
    if m.site_id:
        source["site"] = m.site_id
    if m.source_types:
        source["type"] = [{"system": SOURCE_TYPE, "code": t.code, **({"display": _SOURCE_TYPES[t.code]} if t.code in _SOURCE_TYPES else {})}
                          for t in m.source_types]
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": record_id,
        "type": coding(m.event_id),
    }
    if m.event_types:
        event["subtype"] = [coding(c) for c in m.event_types]
    if m.action:
        event["action"] = m.action
    event["recorded"] = format_time(m.time)
    event["outcome"] = str(m.outcome)
    if m.outcome_description:
        event["outcomeDesc"] = m.outcome_description
    event["agent"] = agents
    event["source"] = source
    if entities:
        event["entity"] = entities
    return event


def bundle(events: list[dict[str, Any]], bundle_id: str, timestamp: str) -> dict[str, Any]:
    """A ``collection`` Bundle of AuditEvents (for a FHIR audit repository's batch import)."""
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "collection",
        "timestamp": timestamp,
        "entry": [{"fullUrl": f"urn:uuid:{_uuid(e['id'])}", "resource": e} for e in events],
    }


def _uuid(hex32: str) -> str:
    h = (hex32 + "0" * 32)[:32]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
