"""Validation of audit messages against the grammar of PS3.15 A.5.1 (the "audit-message" RELAX NG schema).

The standard publishes the schema as RELAX NG; its text is not redistributed
here. This module implements the same grammar by hand, rule by rule, for
messages we receive from other systems (import, syslog listener). The tests
check it against the published ``.rng`` with lxml on named valid and invalid
messages, so the two cannot drift apart unnoticed.

RELAX NG semantics kept: child elements in the grammar's order; attributes in
any order but only those the grammar names (a namespaced attribute such as
``xsi:noNamespaceSchemaLocation`` is not allowed); whitespace-only text between
elements ignored; enumerated values compared as whitespace-normalized tokens;
XML Schema datatypes (dateTime, boolean, integer, base64Binary) checked on
their collapsed lexical form.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# re.ASCII: XML Schema digits are 0-9 (\d alone also matches Arabic-Indic, fullwidth ... digits).
_DATETIME = re.compile(
    r"^-?(\d{4,})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-](\d{2}):(\d{2}))?$", re.ASCII
)
_INTEGER = re.compile(r"^[+-]?\d+$", re.ASCII)
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")

INF = 1 << 30


def _collapse(v: str) -> str:
    return " ".join(v.split())


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def valid_datetime(v: str) -> bool:
    """xsd:dateTime lexical form and ranges (XML Schema 1.0 Part 2, 3.2.7)."""
    m = _DATETIME.match(_collapse(v))
    if not m or len(m.group(1)) > 9:  # a year of thousands of digits is no date the archive keeps, and int() refuses it
        return False
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if year == 0 or not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month):
        return False
    if minute > 59 or second > 59 or hour > 24:
        return False
    if hour == 24 and (minute or second or (m.group(7) and int(m.group(7)[1:]))):
        return False
    return m.group(9) is None or (int(m.group(9)) * 60 + int(m.group(10)) <= 14 * 60 and int(m.group(10)) <= 59)


def valid_boolean(v: str) -> bool:
    return _collapse(v) in ("true", "false", "1", "0")


def valid_integer(v: str) -> bool:
    return bool(_INTEGER.match(_collapse(v)))


def valid_base64(v: str) -> bool:
    s = "".join(v.split())
    if not _B64.match(s) or len(s) % 4:
        return False
    if s.endswith("=="):
        return s[-3] in "AQgw"
    if s.endswith("="):
        return s[-2] in "AEIMQUYcgkosw048"
    return True


def _enum(*values: str) -> Callable[[str], bool]:
    allowed = frozenset(values)
    return lambda v: _collapse(v) in allowed


def _any(_: str) -> bool:
    return True


_ACTION = _enum("C", "R", "U", "D", "E")
_OUTCOME = _enum("0", "4", "8", "12")
_NAP_TYPE = _enum("1", "2", "3", "4", "5")
_PO_TYPE = _enum("1", "2", "3", "4")
_PO_ROLE = _enum(*(str(i) for i in range(1, 27)))
_PO_LIFECYCLE = _enum(*(str(i) for i in range(1, 16)))

Checker = Callable[[str], bool]
AttrSpec = dict[str, tuple[bool, Checker]]  # name -> (required, value check)

_CODED: AttrSpec = {"csd-code": (True, _any), "codeSystemName": (True, _any), "displayName": (False, _any), "originalText": (True, _any)}


class _Validator:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, what: str) -> None:
        self.problems.append(f"{path}: {what}")

    # -- helpers -----------------------------------------------------------------------

    def attrs(self, el, path: str, spec: AttrSpec) -> None:  # type: ignore[no-untyped-def]
        for name, value in el.attrib.items():
            if name.startswith("{"):
                self.bad(path, f"attribute {name} is not allowed (namespaced)")
                continue
            if name not in spec:
                self.bad(path, f"attribute {name} is not allowed")
                continue
            if not spec[name][1](value):
                self.bad(path, f"attribute {name} has an invalid value")
        for name, (required, _) in spec.items():
            if required and name not in el.attrib:
                self.bad(path, f"attribute {name} is required")

    def children(self, el, path: str, allow_text: bool = False) -> list:  # type: ignore[no-untyped-def]
        kids = []
        if not allow_text and (el.text or "").strip():
            self.bad(path, "text is not allowed here")
        for child in el:
            if not isinstance(child.tag, str):  # comment or processing instruction: ignored by RELAX NG
                if (child.tail or "").strip() and not allow_text:
                    self.bad(path, "text is not allowed here")
                continue
            kids.append(child)
            if (child.tail or "").strip() and not allow_text:
                self.bad(path, "text is not allowed here")
        return kids

    def sequence(self, kids: list, path: str, pattern: list[tuple[tuple[str, ...], int, int]]) -> list[tuple[str, object]]:  # type: ignore[type-arg]
        """Match child names against [(names, min, max)] in order; returns (slot name, element) pairs."""
        out: list[tuple[str, object]] = []
        i = 0
        for names, lo, hi in pattern:
            n = 0
            while i < len(kids) and kids[i].tag in names and n < hi:
                out.append((kids[i].tag, kids[i]))
                i += 1
                n += 1
            if n < lo:
                self.bad(path, f"expected {' or '.join(names)}" + (f" (at least {lo})" if lo > 1 else ""))
                return out
        if i < len(kids):
            tag = kids[i].tag if isinstance(kids[i].tag, str) else "?"
            self.bad(path, f"element {tag} is not allowed here")
        return out

    def empty(self, el, path: str) -> None:  # type: ignore[no-untyped-def]
        self.sequence(self.children(el, path), path, [])

    def coded(self, el, path: str) -> None:  # type: ignore[no-untyped-def]
        self.attrs(el, path, _CODED)
        self.empty(el, path)

    def data(self, el, path: str, check: Checker) -> None:  # type: ignore[no-untyped-def]
        if len(el):
            self.bad(path, "no child elements are allowed here")
        if not check(el.text or ""):
            self.bad(path, "invalid value")

    # -- the grammar ---------------------------------------------------------------------

    def message(self, root) -> None:  # type: ignore[no-untyped-def]
        if root.tag != "AuditMessage":
            self.bad("/", "the root element must be AuditMessage (no namespace)")
            return
        path = "/AuditMessage"
        self.attrs(root, path, {})
        slots = self.sequence(self.children(root, path), path, [
            (("EventIdentification",), 1, 1), (("ActiveParticipant",), 1, INF),
            (("AuditSourceIdentification",), 1, 1), (("ParticipantObjectIdentification",), 0, INF),
        ])
        for tag, el in slots:
            p = f"{path}/{tag}"
            getattr(self, tag)(el, p)

    def EventIdentification(self, el, path: str) -> None:  # type: ignore[no-untyped-def]  # noqa: N802
        self.attrs(el, path, {"EventActionCode": (False, _ACTION), "EventDateTime": (True, valid_datetime),
                              "EventOutcomeIndicator": (True, _OUTCOME)})
        for tag, kid in self.sequence(self.children(el, path), path, [
            (("EventID",), 1, 1), (("EventTypeCode",), 0, INF), (("EventOutcomeDescription",), 0, 1),
        ]):
            if tag == "EventOutcomeDescription":
                self.attrs(kid, f"{path}/{tag}", {})
                self.data(kid, f"{path}/{tag}", _any)
            else:
                self.coded(kid, f"{path}/{tag}")

    def ActiveParticipant(self, el, path: str) -> None:  # type: ignore[no-untyped-def]  # noqa: N802
        self.attrs(el, path, {
            "UserID": (True, _any), "AlternativeUserID": (False, _any), "UserName": (False, _any),
            "UserIsRequestor": (True, valid_boolean), "NetworkAccessPointID": (False, _any),
            "NetworkAccessPointTypeCode": (False, _NAP_TYPE),
        })
        for tag, kid in self.sequence(self.children(el, path), path, [(("RoleIDCode",), 0, INF), (("MediaIdentifier",), 0, 1)]):
            p = f"{path}/{tag}"
            if tag == "RoleIDCode":
                self.coded(kid, p)
            else:
                self.attrs(kid, p, {})
                for _, media in self.sequence(self.children(kid, p), p, [(("MediaType",), 1, 1)]):
                    self.coded(media, f"{p}/MediaType")

    def AuditSourceIdentification(self, el, path: str) -> None:  # type: ignore[no-untyped-def]  # noqa: N802
        self.attrs(el, path, {"AuditEnterpriseSiteID": (False, _any), "AuditSourceID": (True, _any)})
        for _, kid in self.sequence(self.children(el, path), path, [(("AuditSourceTypeCode",), 0, INF)]):
            p = f"{path}/AuditSourceTypeCode"
            names = set(kid.attrib)
            # csd-code alone, or with the coded-value attributes (codeSystemName and originalText together)
            if names & {"codeSystemName", "displayName", "originalText"}:
                self.attrs(kid, p, _CODED)
            else:
                self.attrs(kid, p, {"csd-code": (True, _any)})
            self.empty(kid, p)

    def ParticipantObjectIdentification(self, el, path: str) -> None:  # type: ignore[no-untyped-def]  # noqa: N802
        self.attrs(el, path, {
            "ParticipantObjectID": (True, _any), "ParticipantObjectTypeCode": (False, _PO_TYPE),
            "ParticipantObjectTypeCodeRole": (False, _PO_ROLE), "ParticipantObjectDataLifeCycle": (False, _PO_LIFECYCLE),
            "ParticipantObjectSensitivity": (False, _any),
        })
        for tag, kid in self.sequence(self.children(el, path), path, [
            (("ParticipantObjectIDTypeCode",), 1, 1), (("ParticipantObjectName", "ParticipantObjectQuery"), 1, 1),
            (("ParticipantObjectDetail",), 0, INF), (("ParticipantObjectDescription",), 0, INF),
        ]):
            p = f"{path}/{tag}"
            if tag == "ParticipantObjectIDTypeCode":
                self.coded(kid, p)
            elif tag == "ParticipantObjectName":
                self.attrs(kid, p, {})
                self.data(kid, p, _any)
            elif tag == "ParticipantObjectQuery":
                self.attrs(kid, p, {})
                self.data(kid, p, valid_base64)
            elif tag == "ParticipantObjectDetail":
                self.attrs(kid, p, {"type": (True, _any), "value": (True, valid_base64)})
                self.empty(kid, p)
            else:
                self.description(kid, p)

    def description(self, el, path: str) -> None:  # type: ignore[no-untyped-def]
        self.attrs(el, path, {})
        for tag, kid in self.sequence(self.children(el, path), path, [
            (("MPPS",), 0, INF), (("Accession",), 0, INF), (("SOPClass",), 0, INF),
            (("ParticipantObjectContainsStudy",), 0, 1), (("Encrypted",), 0, 1), (("Anonymized",), 0, 1),
        ]):
            p = f"{path}/{tag}"
            if tag == "MPPS":
                self.attrs(kid, p, {"UID": (True, _any)})
                self.empty(kid, p)
            elif tag == "Accession":
                self.attrs(kid, p, {"Number": (True, _any)})
                self.empty(kid, p)
            elif tag == "SOPClass":
                self.attrs(kid, p, {"UID": (False, _any), "NumberOfInstances": (True, valid_integer)})
                for _, inst in self.sequence(self.children(kid, p), p, [(("Instance",), 0, INF)]):
                    self.attrs(inst, f"{p}/Instance", {"UID": (True, _any)})
                    self.empty(inst, f"{p}/Instance")
            elif tag == "ParticipantObjectContainsStudy":
                self.attrs(kid, p, {})
                for _, sid in self.sequence(self.children(kid, p), p, [(("StudyIDs",), 0, INF)]):
                    self.attrs(sid, f"{p}/StudyIDs", {"UID": (True, _any)})
                    self.empty(sid, f"{p}/StudyIDs")
            else:
                self.attrs(kid, p, {})
                self.data(kid, p, valid_boolean)


def validate(root) -> list[str]:  # type: ignore[no-untyped-def]
    """Every way ``root`` (an lxml element) departs from the A.5.1 grammar; empty when valid."""
    v = _Validator()
    v.message(root)
    return v.problems
