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
interactions.

Records imported from other systems (origin not ``local``,
:mod:`dicomguard.audit.origin`) are converted the same way, and marked as
*asserted by* their source, never as this archive's observation:

* ``source.observer`` is the asserting source. R4 defines ``AuditEvent.source``
  as "the system that is reporting the event": for an imported message that is
  the device that sent it (``Reference`` of type ``Device``, identified by its
  AE title, which the archive verified by its client certificate) or the file
  it was read from (identifier system ``urn:dicomguard:audit-import``), not
  this archive and not whatever the message's AuditSourceID claims;
* the message's own AuditSourceID, a claim, is kept on ``source`` in the
  extension ``urn:dicomguard:fhir:claimed-audit-source-id`` (``valueString``);
* the same source is an ``agent`` of type v3-ParticipationType ``INF``
  (informant: "a source of reported information"), ``requestor`` false, with
  the address it connected from, so that an agent-based reader (BALP lists
  agents, not the observer) also sees who asserts the event. The agents the
  message names keep their claimed roles and identifiers unchanged.
"""

from __future__ import annotations

import base64
from typing import Any

from dicomguard.audit.codes import DCM, LOCAL, RFC3881, Code, ObjectRole, SourceType
from dicomguard.audit.message import AuditMessage, format_time
from dicomguard.audit.origin import LOCAL as ORIGIN_LOCAL
from dicomguard.audit.origin import Origin

SYSTEMS = {
    DCM: "http://dicom.nema.org/resources/ontology/DCM",
    LOCAL: "urn:dicomguard:codesystem:audit",
}
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
CLAIMED_SOURCE = "urn:dicomguard:fhir:claimed-audit-source-id"
"""Extension on ``source`` of an imported event: the AuditSourceID its message claims."""
IMPORT_ORIGIN = "urn:dicomguard:audit-import"
"""Identifier system of a file an imported message was read from."""
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


def _asserter(origin: Origin) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``source.observer``, informant ``agent``) of a message imported from ``origin``."""
    if origin.kind == "device":
        who: dict[str, Any] = {"type": "Device", "identifier": {"value": origin.name}}
    else:  # a file (or an origin of an older form): named, not a FHIR resource type
        who = {"identifier": {"system": IMPORT_ORIGIN, "value": origin.name or origin.raw}}
    who["display"] = origin.asserted_by or origin.raw
    agent: dict[str, Any] = {"type": {"coding": [{"system": PARTICIPATION, "code": "INF", "display": "informant"}]},
                             "who": who, "requestor": False}
    if origin.address:
        agent["network"] = {"address": origin.address, "type": "2"}  # IP address (DICOM NetworkAccessPointTypeCode 2)
    return who, agent


def audit_event(record_id: str, m: AuditMessage, origin: str = ORIGIN_LOCAL) -> dict[str, Any]:
    """One FHIR R4 AuditEvent resource (JSON object) for one audit message; ``origin``: of its record (module docstring)."""
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
    asserted = Origin.parse(origin)
    if asserted.imported:
        observer, informant = _asserter(asserted)
        source = {"extension": [{"url": CLAIMED_SOURCE, "valueString": m.source_id}], "observer": observer}
        agents.append(informant)
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
