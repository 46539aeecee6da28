"""Our A.5.1 validator (used at run time on imported messages) agrees with the published RELAX NG schema.

One table of named messages, valid and invalid, each checked by both. The
schema text is read from ../shared only; the project carries its own
implementation of the grammar (dicomguard.audit.schema).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from lxml import etree

from dicomguard.audit import schema as ours
from dicomguard.audit.codes import (
    Code,
    EventIds,
    EventTypes,
    MediaTypes,
    ObjectIdTypes,
    Roles,
)
from dicomguard.audit.message import (
    AuditMessage,
    ObjectDescription,
    Participant,
    ParticipantObject,
    SopClassRef,
    from_element,
    to_xml,
)


def full_message() -> AuditMessage:
    """A message using every part of the grammar."""
    return AuditMessage(
        event_id=EventIds.INSTANCES_TRANSFERRED, time=datetime(2026, 2, 28, 23, 59, 59, 5, tzinfo=UTC), outcome=4,
        participants=(
            Participant("CT1", True, (Roles.SOURCE,), "AETITLES=CT1", "CT scanner", "10.0.0.5", 2),
            Participant("DICOMGUARD", False, (Roles.DESTINATION, Roles.APPLICATION), None, None, "pacs.example.org", 1),
            Participant("file://pacs", False, (Roles.DESTINATION_MEDIA,), media_type=MediaTypes.URI),
        ),
        source_id="DICOMGUARD", action="C", event_types=(EventTypes.USE_OF_RESTRICTED_FUNCTION,),
        outcome_description="partial", site_id="Hospital",
        source_types=(Code("4", "", ""), Code("5", "RFC-3881", "Security Server")),
        objects=(
            ParticipantObject("1.2.3", ObjectIdTypes.STUDY_INSTANCE_UID, type_code=2, role=3, lifecycle=6, sensitivity="N",
                              descriptions=(ObjectDescription(("1.2.9",), ("ACC1",), (SopClassRef("1.2.840.10008.5.1.4.1.1.2", 2, ("1.2.3.1", "1.2.3.2")),
                                                                                       SopClassRef(None, 0)),
                                                              ("1.2.3",), True, False),)),
            ParticipantObject("PID1^^^HOSP", ObjectIdTypes.PATIENT_NUMBER, name="PID1", type_code=1, role=1,
                              details=(("Alert Description", b"x" * 7), ("empty", b""))),
            ParticipantObject("1.2.840.10008.5.1.4.1.2.2.1", ObjectIdTypes.SOP_CLASS_UID, query=b"\x08\x00R\x00" * 5, type_code=2, role=24),
        ),
    )


def _root() -> etree._Element:
    return etree.fromstring(to_xml(full_message()))


def _edit(fn: Callable[[etree._Element], None]) -> Callable[[], bytes]:
    def make() -> bytes:
        root = _root()
        fn(root)
        return etree.tostring(root)
    return make


def _text(xml: str) -> Callable[[], bytes]:
    return lambda: xml.encode()


def _set(path: str, attr: str, value: str) -> Callable[[], bytes]:
    return _edit(lambda r: r.find(path).set(attr, value))


def _drop_attr(path: str, attr: str) -> Callable[[], bytes]:
    return _edit(lambda r: r.find(path).attrib.pop(attr))


def _remove(path: str) -> Callable[[], bytes]:
    def fn(r: etree._Element) -> None:
        el = r.find(path)
        el.getparent().remove(el)
    return _edit(fn)


def _pretty() -> bytes:
    return etree.tostring(_root(), pretty_print=True)


def _move_source_first(r: etree._Element) -> None:
    src = r.find("AuditSourceIdentification")
    r.remove(src)
    r.insert(1, src)


def _swap_query_and_name(r: etree._Element) -> None:
    po = r.findall("ParticipantObjectIdentification")[1]
    etree.SubElement(po, "ParticipantObjectQuery").text = "AAAA"
    po.append(po.find("ParticipantObjectDetail"))  # keep order: name, query, detail... (query after name: invalid)


VALID: dict[str, Callable[[], bytes]] = {
    "every part of the grammar": lambda: to_xml(full_message()),
    "indented with whitespace": _pretty,
    "comments and a processing instruction": _edit(lambda r: (r.insert(0, etree.Comment(" c ")), r.find("ActiveParticipant").append(etree.PI("x", "y")))),
    "time with an offset and no fraction": _set("EventIdentification", "EventDateTime", "2026-02-28T23:59:59+02:00"),
    "time without a zone": _set("EventIdentification", "EventDateTime", "2026-02-28T23:59:59.5"),
    "leap day": _set("EventIdentification", "EventDateTime", "2024-02-29T00:00:00Z"),
    "boolean as 1": _set("ActiveParticipant", "UserIsRequestor", "1"),
    "outcome with surrounding spaces": _set("EventIdentification", "EventOutcomeIndicator", " 4 "),
    "base64 query with line breaks": _edit(lambda r: setattr(r.find("ParticipantObjectIdentification/ParticipantObjectQuery"), "text", "CABS\nAA==")),
    "no participant objects": _edit(lambda r: [r.remove(p) for p in r.findall("ParticipantObjectIdentification")]),
    "minimal": _text('<AuditMessage><EventIdentification EventDateTime="2026-01-01T00:00:00Z" EventOutcomeIndicator="0">'
                     '<EventID csd-code="110100" codeSystemName="DCM" originalText="Application Activity"/></EventIdentification>'
                     '<ActiveParticipant UserID="x" UserIsRequestor="false"/><AuditSourceIdentification AuditSourceID="s"/></AuditMessage>'),
    "namespace declared but unused": _text('<AuditMessage xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><EventIdentification '
                     'EventDateTime="2026-01-01T00:00:00Z" EventOutcomeIndicator="0"><EventID csd-code="1" codeSystemName="DCM" '
                     'originalText="t"/></EventIdentification><ActiveParticipant UserID="x" UserIsRequestor="true"/>'
                     '<AuditSourceIdentification AuditSourceID="s"/></AuditMessage>'),
}

INVALID: dict[str, Callable[[], bytes]] = {
    "wrong root": _text("<Audit/>"),
    "root in a namespace": _text('<AuditMessage xmlns="urn:x"/>'),
    "no EventIdentification": _remove("EventIdentification"),
    "no ActiveParticipant": _edit(lambda r: [r.remove(p) for p in r.findall("ActiveParticipant")]),
    "no AuditSourceIdentification": _remove("AuditSourceIdentification"),
    "coded value without originalText": _drop_attr("EventIdentification/EventID", "originalText"),
    "codeSystem instead of codeSystemName": _edit(lambda r: (r.find("EventIdentification/EventID").attrib.pop("codeSystemName"),
                                                             r.find("EventIdentification/EventID").set("codeSystem", "DCM"))),
    "unknown action code": _set("EventIdentification", "EventActionCode", "X"),
    "unknown outcome": _set("EventIdentification", "EventOutcomeIndicator", "1"),
    "month 13": _set("EventIdentification", "EventDateTime", "2026-13-01T00:00:00Z"),
    "February 30": _set("EventIdentification", "EventDateTime", "2026-02-30T00:00:00Z"),
    "date only": _set("EventIdentification", "EventDateTime", "2026-02-28"),
    "free text time": _set("EventIdentification", "EventDateTime", "yesterday"),
    "requestor yes": _set("ActiveParticipant", "UserIsRequestor", "yes"),
    "no UserID": _drop_attr("ActiveParticipant", "UserID"),
    "network access point type 6": _set("ActiveParticipant", "NetworkAccessPointTypeCode", "6"),
    "source before participants": _edit(_move_source_first),
    "unknown element": _edit(lambda r: r.find("ActiveParticipant").append(etree.Element("Extra"))),
    "unknown attribute": _set("ActiveParticipant", "Color", "red"),
    "xsi:noNamespaceSchemaLocation": _set(".", "{http://www.w3.org/2001/XMLSchema-instance}noNamespaceSchemaLocation", "a.rnc"),
    "participant object without name or query": _remove("ParticipantObjectIdentification[2]/ParticipantObjectName"),
    "participant object with name and query": _edit(_swap_query_and_name),
    "query is not base64": _edit(lambda r: setattr(r.find("ParticipantObjectIdentification[3]/ParticipantObjectQuery"), "text", "abc")),
    "base64 with non-zero padding bits": _edit(lambda r: setattr(r.find("ParticipantObjectIdentification[3]/ParticipantObjectQuery"), "text", "AC==")),
    "detail value is not base64": _set("ParticipantObjectIdentification[2]/ParticipantObjectDetail", "value", "abc"),
    "SOPClass without NumberOfInstances": _drop_attr("ParticipantObjectIdentification/ParticipantObjectDescription/SOPClass", "NumberOfInstances"),
    "NumberOfInstances not a number": _set("ParticipantObjectIdentification/ParticipantObjectDescription/SOPClass", "NumberOfInstances", "many"),
    "text inside ActiveParticipant": _edit(lambda r: setattr(r.find("ActiveParticipant"), "text", "hello")),
    "object role 27": _set("ParticipantObjectIdentification", "ParticipantObjectTypeCodeRole", "27"),
    "Encrypted yes": _edit(lambda r: setattr(r.find("ParticipantObjectIdentification/ParticipantObjectDescription/Encrypted"), "text", "yes")),
    "two EventIdentification": _edit(lambda r: r.insert(1, etree.fromstring(etree.tostring(r.find("EventIdentification"))))),
    "description elements out of order": _edit(lambda r: r.find("ParticipantObjectIdentification/ParticipantObjectDescription").append(
        etree.Element("MPPS", UID="1"))),
    "AuditSourceTypeCode with a name but no originalText": _edit(lambda r: r.find("AuditSourceIdentification/AuditSourceTypeCode").set("codeSystemName", "x")),
}


@pytest.mark.parametrize("name", list(VALID))
def test_valid_messages(schema, name: str) -> None:
    doc = etree.fromstring(VALID[name]())
    assert schema.validate(doc), f"the corpus is wrong: {schema.error_log}"
    assert ours.validate(doc) == []
    from_element(doc)  # and the model reads it


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_messages(schema, name: str) -> None:
    doc = etree.fromstring(INVALID[name]())
    assert not schema.validate(doc), "the corpus is wrong: the published schema accepts it"
    assert ours.validate(doc), "our validator accepts what the schema refuses"


def test_ours_is_stricter_than_libxml2_on_base64_alphabet(schema) -> None:
    """libxml2 skips characters outside the base64 alphabet; XML Schema 1.0 (3.2.16) does not allow them, nor do we."""
    r = _root()
    r.find("ParticipantObjectIdentification[3]/ParticipantObjectQuery").text = "@@@@"
    assert schema.validate(r)
    assert ours.validate(r)
