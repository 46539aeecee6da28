"""The detector's context from an HL7 v2 feed: ER7 messages over MLLP, mapped onto the CSV rows of :mod:`context`.

A hospital interface engine sends ADT, order and staff messages as they happen; each one is an *incremental*
change (an upsert or a removal by key) of the three context documents, not a replacement. This module is pure:
bytes in, rows and acknowledgements out; the listener and the service around it live in
``dicomguard.app.detection``.

Message syntax (HL7 v2.5.1 Chapter 2): segments end with CR (2.5.2; a CR LF pair is read as CR, any other
control character refuses the message); the field separator is MSH-1 and the component, repetition, escape and
subcomponent characters are MSH-2 (2.5.4; a fifth, v2.7 truncation character is allowed). Values are split
first and unescaped afterwards (2.7): ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` become the delimiters they stand for,
``\\H\\``/``\\N\\`` (highlighting) are dropped, ``\\Xhh..\\`` is decoded in the message's character set (a
control character so written refuses the message); any other or unterminated escape refuses the message. A
field holding ``""`` is an explicit null: in an update it clears the value, whereas an absent (empty) field
leaves the stored value as it is (2.5.3). The character set is MSH-18 ("UNICODE UTF-8", "8859/1".."8859/15");
absent or "ASCII" is read as UTF-8, its superset. Only production messages (MSH-11 "P") of version 2.x
(MSH-12) are applied: a training or debugging message must never change what the detector believes.

Mapping (what the explainer of :mod:`explain` and the signatures of :mod:`signatures` read):

* **ADT^A01/A04/A05/A08/A28/A31** (Chapter 3: 3.3.1, 3.3.4, 3.3.5, 3.3.8, 3.3.28, 3.3.31) -> one ``patients``
  row, upserted field by field: patient_id = PID-3 (3.4.2), the first repetition's ID (CX.1); name = PID-5
  (legal name "L" preferred, else the first) as DICOM PN ``Family^Given Middle``, the form the signatures
  compare (as :mod:`fhir` writes it); address = PID-11 (home "H" preferred) as "street, other, city"; vip =
  PV1-16 VIP indicator (3.4.3; HL7 table 0099): any value but "N" is a VIP, ``""`` or "N" is not, absent keeps
  the stored flag. The visit's clinicians are linked to the patient like an order they placed, which the
  explainer reads as the ``ordering-user`` path (and the patient counts as having an encounter): PV1-7
  attending, PV1-8 referring, PV1-9 consulting and PV1-17 admitting doctor (each repetition's XCN.1) each give
  one ``orders`` row with accession ``encounter:<PID-3>:<PV1-19 visit number>:<role>:<XCN.1>``, department =
  PV1-3 point of care (PL.1), else PV1-10 hospital service, ordered_at = PV1-44 admit date/time, else EVN-2,
  else MSH-7; no study, modality or reading group. FHIR R4 has no such rows (an ``Encounter`` participant is
  not imported there either): this is the v2 feed's equivalent of a clinician's order.
* **ADT^A40** (patient merge, 3.3.40) is rejected (AR): merging two patients' context is a decision, made by a
  full import after the merge, not by a feed. Other ADT events are rejected as "not accepted".
* **ORM^O01** and **OMI^O23** (Chapter 4; ORC 4.5.1, OBR 4.5.3, IPC): one order per ORC group, one row per IPC
  segment (each scheduled study) or one row without IPC. accession = IPC-1, else OBR-18 (placer field 1, where
  the IHE Radiology Technical Framework carries the DICOM Accession Number in ORM), else the filler order number
  ORC-3 / OBR-3 (the department system's number), else the placer order number ORC-2 / OBR-2: the first present,
  so a cancel must name the order the way its new-order message did. patient_id = PID-3; study_uid = IPC-3, else
  ZDS-1 (IHE RAD-4); modality = IPC-5, else OBR-24 diagnostic service section ID (as IHE uses it: "CT", "MR");
  ordering_user = ORC-12, else OBR-16 (XCN.1); department = PV1-3 point of care, else PV1-10; ordered_at = ORC-9,
  else OBR-7, else MSH-7; reading_group is left empty (v2 has no field for it). An order is upserted by
  accession (every stored row of that accession replaced); ORC-1 order control CA, DC, OC, OD, CR or DR removes
  it.
* **MFN^M02** (Chapter 8, staff and practitioner master file) with MFI-1 "STF" or "PRA": per MFE/STF record
  (STF of Chapter 15), user_id = STF-2 (first CX.1), else STF-1, else MFE-4; name STF-3; role STF-4 staff type;
  department STF-7 (text, else identifier); home_address STF-11 (home "H" preferred). MFE-1 MAD, MUP, MAC and MDC
  upsert the user (a deactivated account is still a known person), MDL removes it.
* Anything else is rejected (AR, "message type not accepted").

Times (TS/DTM, Chapter 2A) are ``YYYY[MM[DD[HH[MM[SS[.S{1,4}]]]]]][+/-ZZZZ]``, written as ISO 8601 UTC; a time
without offset takes MSH-7's offset, else UTC.

Errors raise :class:`Hl7Error` with the acknowledgement code (AE: the message is wrong; AR: it is not accepted)
and a reason that names the segment and field ("PID-3 missing", "order 2: ORC-9 is not an HL7 date/time"),
never a value: values are PHI. Acknowledgements follow the original acknowledgement mode (2.9.2): MSA-1
AA/AE/AR, MSA-2 the message's control ID, MSA-3 and an ERR segment (2.15.5, error code of HL7 table 0357) with
the reason. Framing is MLLP (HL7 v2.5.1 Appendix C.4; HL7 Transport Specification MLLP Release 2): 0x0B,
the message, 0x1C 0x0D; a frame over :data:`MAX_MESSAGE_BYTES`, a byte outside a frame other than CR/LF, or a
start byte inside a frame is a :class:`FramingError` (the stream cannot be resynchronised). Nothing here
recurses over the input.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from dicomguard.detect.context import ORDERS_COLUMNS, PATIENTS_COLUMNS, USERS_COLUMNS

MAX_MESSAGE_BYTES: Final = 1024 * 1024
"""Largest MLLP frame accepted (an ADT or order message is a few kilobytes)."""
START_BLOCK: Final = b"\x0b"
END_BLOCK: Final = b"\x1c\x0d"

ADT_EVENTS: Final = frozenset({"A01", "A04", "A05", "A08", "A28", "A31"})
CANCEL_CONTROLS: Final = frozenset({"CA", "DC", "OC", "OD", "CR", "DR"})
"""ORC-1 order control codes (HL7 table 0119) that end an order: cancel and discontinue, requested or done."""
STAFF_UPSERT: Final = frozenset({"MAD", "MUP", "MAC", "MDC"})
STAFF_DELETE: Final = "MDL"

# HL7 table 0357 (message error condition codes)
SEGMENT_SEQUENCE: Final = 100
REQUIRED_FIELD: Final = 101
DATA_TYPE: Final = 102
TABLE_VALUE: Final = 103
UNSUPPORTED_TYPE: Final = 200
UNSUPPORTED_EVENT: Final = 201
UNSUPPORTED_PROCESSING_ID: Final = 202
UNSUPPORTED_VERSION: Final = 203
INTERNAL_ERROR: Final = 207

_SEGMENT_ID: Final = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_TYPE_CODE: Final = re.compile(r"^[A-Z0-9]{3}$")
_VERSION: Final = re.compile(r"^2\.[1-9](\.[0-9]{1,2})?$")
_TS: Final = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?(?:([+-])(\d{2})(\d{2}))?$")
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x0c\x0e-\x1f\x7f]")
_HEX: Final = re.compile(r"^X([0-9A-Fa-f]{2})+$")
_CHARSETS: Final = {"": "utf-8", "ASCII": "utf-8", "UNICODE UTF-8": "utf-8",
                    **{f"8859/{n}": f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)}}


class Hl7Error(ValueError):
    """A message that is not applied. ``ack`` is AE (application error: the message is wrong) or AR (application
    reject: not accepted here); ``reason`` names the segment and field, never a value; ``code`` is of HL7 table
    0357; ``location`` the (segment, field) for ERR-2."""

    def __init__(self, reason: str, ack: str = "AE", code: int = REQUIRED_FIELD, location: tuple[str, int] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ack = ack
        self.code = code
        self.location = location


class FramingError(ValueError):
    """The MLLP stream broke (oversize frame, bytes outside a frame, a start byte inside one): close the connection."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one message's acknowledgement says (MSA-1 AA/AE/AR, the reason, table 0357 code, ERR-2 location)."""

    ack: str
    reason: str = ""
    code: int = 0
    location: tuple[str, int] | None = None

    @classmethod
    def of(cls, exc: Hl7Error) -> Outcome:
        return cls(exc.ack, exc.reason, exc.code, exc.location)


# --- MLLP ---------------------------------------------------------------------------------------------------------

def frame(message: bytes) -> bytes:
    """One MLLP block: start byte, the message, end bytes (HL7 v2.5.1 Appendix C.4)."""
    return START_BLOCK + message + END_BLOCK


class MllpReader:
    """Splits an MLLP byte stream into messages, bounded by ``max_bytes`` per message.

    CR and LF between frames are tolerated (some senders end a block with a newline); any other byte outside a
    frame, a start byte inside one, 0x1C not followed by CR, or a frame over the bound raises
    :class:`FramingError`. An unfinished frame is never returned (a connection closed mid-frame applies nothing).
    """

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._in_frame = False
        self._end_seen = False  # 0x1C read, its CR not yet

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame."""
        return len(self._buf)

    @property
    def in_frame(self) -> bool:
        """A frame was started and not finished."""
        return self._in_frame

    def feed(self, data: bytes) -> list[bytes]:
        """The messages completed by ``data`` (without their framing bytes)."""
        out: list[bytes] = []
        i, n = 0, len(data)
        while i < n:
            if self._end_seen:
                if data[i] != 0x0D:
                    raise FramingError("an MLLP end byte not followed by CR")
                out.append(bytes(self._buf))
                self._buf.clear()
                self._in_frame = self._end_seen = False
                i += 1
            elif not self._in_frame:
                if data[i] == 0x0B:
                    self._in_frame = True
                elif data[i] not in (0x0D, 0x0A):
                    raise FramingError("a byte outside an MLLP frame")
                i += 1
            else:
                end = data.find(b"\x1c", i)
                chunk = data[i:] if end < 0 else data[i:end]
                if b"\x0b" in chunk:
                    raise FramingError("an MLLP start byte inside a frame")
                if len(self._buf) + len(chunk) > self.max_bytes:
                    raise FramingError(f"an MLLP frame over {self.max_bytes} bytes")
                self._buf += chunk
                if end < 0:
                    break
                self._end_seen = True
                i = end + 1
        return out


# --- ER7 parsing --------------------------------------------------------------------------------------------------

@dataclass
class Message:
    """A parsed ER7 message: segments as (id, fields), ``fields[n]`` being SEG-n (MSH-1 is the field separator)."""

    field_sep: str
    component: str
    repetition: str
    escape: str
    subcomponent: str
    charset: str
    segments: list[tuple[str, list[str]]] = field(default_factory=list)

    def all(self, segment_id: str) -> list[list[str]]:
        return [f for sid, f in self.segments if sid == segment_id]

    def first(self, segment_id: str) -> list[str] | None:
        return next((f for sid, f in self.segments if sid == segment_id), None)

    @staticmethod
    def raw(fields: list[str] | None, n: int) -> str:
        """The raw (escaped) text of field n, "" when the segment or field is absent."""
        return fields[n] if fields is not None and n < len(fields) else ""

    def reps(self, fields: list[str] | None, n: int) -> list[str]:
        raw = self.raw(fields, n)
        return raw.split(self.repetition) if raw else []

    def part(self, raw_rep: str, comp: int = 1, sub: int = 1, where: str = "") -> str:
        """Component ``comp``, subcomponent ``sub`` (1-based) of one repetition, unescaped and stripped."""
        comps = raw_rep.split(self.component)
        if comp > len(comps):
            return ""
        subs = comps[comp - 1].split(self.subcomponent)
        if sub > len(subs):
            return ""
        value = subs[sub - 1]
        return "" if value == '""' else self.unescape(value, where).strip()

    def value(self, fields: list[str] | None, n: int, comp: int = 1, sub: int = 1, where: str = "") -> str:
        """The first repetition's component of field n ("" when absent or null)."""
        reps = self.reps(fields, n)
        return self.part(reps[0], comp, sub, where) if reps else ""

    def unescape(self, text: str, where: str) -> str:
        """HL7 v2.5.1 2.7: escape sequences to the characters they stand for."""
        e = self.escape
        if not e or e not in text:
            return text
        out: list[str] = []
        i = 0
        while True:
            j = text.find(e, i)
            if j < 0:
                out.append(text[i:])
                return "".join(out)
            out.append(text[i:j])
            k = text.find(e, j + 1)
            if k < 0:
                raise Hl7Error(f"{where}: unterminated escape sequence", code=DATA_TYPE, location=_loc(where))
            code = text[j + 1:k]
            simple = {"F": self.field_sep, "S": self.component, "T": self.subcomponent, "R": self.repetition, "E": e,
                      "H": "", "N": ""}
            if code in simple:
                out.append(simple[code])
            elif _HEX.match(code):
                try:
                    decoded = bytes.fromhex(code[1:]).decode(self.charset)
                except UnicodeDecodeError:
                    raise Hl7Error(f"{where}: hexadecimal escape not in the message's character set", code=DATA_TYPE,
                                   location=_loc(where)) from None
                if _CONTROL.search(decoded) or "\r" in decoded:
                    raise Hl7Error(f"{where}: hexadecimal escape of a control character", code=DATA_TYPE, location=_loc(where))
                out.append(decoded)
            else:
                raise Hl7Error(f"{where}: unsupported escape sequence", code=DATA_TYPE, location=_loc(where))
            i = k + 1


def _loc(where: str) -> tuple[str, int] | None:
    m = re.search(r"([A-Z][A-Z0-9]{2})-(\d+)", where)
    return (m.group(1), int(m.group(2))) if m else None


def _header_fields(data: bytes) -> tuple[str, str, list[str]] | None:
    """(field separator, encoding characters, MSH fields with ``fields[n]`` = MSH-n) read leniently from the first
    segment, or None when it is not an MSH segment with usable delimiters."""
    end = data.find(b"\r")
    head = (data if end < 0 else data[:end]).decode("latin-1")
    if len(head) < 8 or not head.startswith("MSH"):
        return None
    sep = head[3]
    enc = head[4:].split(sep, 1)[0]
    if sep.isalnum() or sep in " \r\n" or len(enc) not in (4, 5) or len(set(enc + sep)) != len(enc) + 1 \
            or any(c.isalnum() or c in " \r\n" for c in enc):
        return None
    fields = head.split(sep)
    return sep, enc, [fields[0], sep, *fields[1:]]


def parse(data: bytes) -> Message:
    """An ER7 message from its bytes; raises :class:`Hl7Error` (AE/AR) naming what is wrong, never a value."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise Hl7Error(f"message larger than {MAX_MESSAGE_BYTES} bytes", "AR", INTERNAL_ERROR)
    header = _header_fields(data)
    if header is None:
        raise Hl7Error("MSH segment missing or MSH-1/MSH-2 delimiters invalid", "AR", SEGMENT_SEQUENCE, ("MSH", 1))
    sep, enc, msh = header
    charset_code = (msh[18] if len(msh) > 18 else "").split(enc[1])[0].strip()
    charset = _CHARSETS.get(charset_code.upper())
    if charset is None:
        raise Hl7Error("MSH-18 character set not supported", "AR", TABLE_VALUE, ("MSH", 18))
    try:
        text = data.decode(charset)
    except UnicodeDecodeError:
        raise Hl7Error("message bytes are not in the character set of MSH-18", "AE", DATA_TYPE, ("MSH", 18)) from None
    m = Message(sep, enc[0], enc[1], enc[2], enc[3], charset)
    for n, line in enumerate(text.replace("\r\n", "\r").split("\r"), 1):
        if not line:
            continue
        if _CONTROL.search(line):
            raise Hl7Error(f"segment {n}: control character (segments end with CR)", "AE", DATA_TYPE)
        sid = line[:3]
        if not _SEGMENT_ID.match(sid) or (len(line) > 3 and line[3] != sep):
            raise Hl7Error(f"segment {n}: not a segment ID", "AE", SEGMENT_SEQUENCE)
        if n == 1 and sid != "MSH" or n > 1 and sid == "MSH":
            raise Hl7Error(f"segment {n}: MSH must be the first segment and only there", "AE", SEGMENT_SEQUENCE, ("MSH", 1))
        fields = line.split(sep)
        if sid == "MSH":
            fields = [fields[0], sep, *fields[1:]]
        m.segments.append((sid, fields))
    return m


# --- values -------------------------------------------------------------------------------------------------------

def parse_ts(value: str, default_offset: timedelta | None, where: str) -> datetime:
    """HL7 TS/DTM (Chapter 2A) as an aware UTC datetime; no offset: ``default_offset``, else UTC."""
    m = _TS.match(value)
    if not m:
        raise Hl7Error(f"{where} is not an HL7 date/time", code=DATA_TYPE, location=_loc(where))
    year, month, day, hour, minute, second, frac, sign, oh, om = m.groups()
    if sign:
        offset = timedelta(hours=int(oh), minutes=int(om)) * (1 if sign == "+" else -1)
    else:
        offset = default_offset or timedelta(0)
    try:
        t = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0),
                     int((frac or "0").ljust(6, "0")[:6]), tzinfo=timezone(offset))
    except ValueError:
        raise Hl7Error(f"{where} is not an HL7 date/time", code=DATA_TYPE, location=_loc(where)) from None
    return t.astimezone(UTC)


def _offset_of(value: str) -> timedelta | None:
    m = _TS.match(value)
    if not m or not m.group(8):
        return None
    return timedelta(hours=int(m.group(9)), minutes=int(m.group(10))) * (1 if m.group(8) == "+" else -1)


def _tri(m: Message, fields: list[str] | None, n: int, read: Callable[[list[str]], str]) -> str | None:
    """HL7 2.5.3 update semantics: None when field n is absent (keep), "" when it is ``""`` (clear), else the value."""
    raw = m.raw(fields, n)
    if raw == "":
        return None
    if raw == '""':
        return ""
    return read(raw.split(m.repetition))


def _prefer(m: Message, reps: list[str], comp: int, code: str) -> str:
    """The repetition whose component ``comp`` is ``code`` (a name or address type), else the first."""
    return next((r for r in reps if m.part(r, comp) == code), reps[0] if reps else "")


def _name(m: Message, reps: list[str], where: str) -> str:
    """XPN as DICOM PN ``Family^Given Middle`` (legal name preferred)."""
    rep = _prefer(m, reps, 7, "L")
    family = m.part(rep, 1, 1, where)
    given = " ".join(v for v in (m.part(rep, 2, 1, where), m.part(rep, 3, 1, where)) if v)
    return f"{family}^{given}" if family and given else family or given


def _address(m: Message, reps: list[str], where: str) -> str:
    """XAD as "street, other designation, city" (home "H" preferred)."""
    rep = _prefer(m, reps, 7, "H")
    return ", ".join(v for v in (m.part(rep, 1, 1, where), m.part(rep, 2, 1, where), m.part(rep, 3, 1, where)) if v)


# --- the updates --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PatientUpdate:
    """One patient's fields to change (None: keep the stored value; a new patient starts empty, not VIP)."""

    patient_id: str
    name: str | None = None
    address: str | None = None
    vip: bool | None = None


@dataclass(frozen=True, slots=True)
class UserUpdate:
    user_id: str
    name: str | None = None
    role: str | None = None
    department: str | None = None
    home_address: str | None = None


@dataclass(frozen=True)
class ContextUpdate:
    """What one message changes: upserts by key and removals (orders as whole rows, grouped by accession)."""

    message_type: str
    users: tuple[UserUpdate, ...] = ()
    removed_users: tuple[str, ...] = ()
    patients: tuple[PatientUpdate, ...] = ()
    orders: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = ()
    """(accession, its rows with the columns of ``ORDERS_COLUMNS``): every stored row of the accession is replaced."""
    removed_orders: tuple[str, ...] = ()

    @property
    def changes(self) -> int:
        return (len(self.users) + len(self.removed_users) + len(self.patients) + sum(len(r) for _, r in self.orders)
                + len(self.removed_orders))


def context_update(data: bytes) -> ContextUpdate:
    """Parse and map one message (see the module's mapping); raises :class:`Hl7Error`."""
    m = parse(data)
    msh = m.segments[0][1]
    mtype = _message_type(m, msh)
    version = m.value(msh, 12, where="MSH-12")
    if not version:
        raise Hl7Error("MSH-12 missing", "AR", REQUIRED_FIELD, ("MSH", 12))
    if not _VERSION.match(version):
        raise Hl7Error("MSH-12 version not supported (2.x)", "AR", UNSUPPORTED_VERSION, ("MSH", 12))
    processing = m.value(msh, 11, where="MSH-11")
    if not processing:
        raise Hl7Error("MSH-11 missing", "AR", REQUIRED_FIELD, ("MSH", 11))
    if processing != "P":
        raise Hl7Error("MSH-11 processing ID is not P (production): not applied", "AR", UNSUPPORTED_PROCESSING_ID, ("MSH", 11))
    sent = m.value(msh, 7, where="MSH-7")
    offset = _offset_of(sent)
    code, event = mtype.split("^")
    if code == "ADT" and event == "A40":
        raise Hl7Error("ADT^A40 (patient merge) is not applied: import the merged context instead", "AR", UNSUPPORTED_EVENT,
                       ("MSH", 9))
    if code == "ADT" and event in ADT_EVENTS:
        return _adt(m, mtype, offset)
    if (code, event) in (("ORM", "O01"), ("OMI", "O23")):
        return _orders(m, mtype, offset)
    if (code, event) == ("MFN", "M02"):
        return _staff(m, mtype)
    raise Hl7Error(f"message type {mtype} not accepted", "AR", UNSUPPORTED_EVENT if code in ("ADT", "ORM", "OMI", "MFN")
                   else UNSUPPORTED_TYPE, ("MSH", 9))


def _message_type(m: Message, msh: list[str]) -> str:
    code, event = m.value(msh, 9, 1, where="MSH-9"), m.value(msh, 9, 2, where="MSH-9")
    if not code or not event:
        raise Hl7Error("MSH-9 missing", "AR", REQUIRED_FIELD, ("MSH", 9))
    if not (_TYPE_CODE.match(code) and _TYPE_CODE.match(event)):
        raise Hl7Error("MSH-9 message type not accepted", "AR", UNSUPPORTED_TYPE, ("MSH", 9))
    return f"{code}^{event}"


def _time(m: Message, candidates: Iterable[tuple[list[str] | None, int, str]], offset: timedelta | None) -> str:
    """The first present of (segment, field, name) as ISO 8601 UTC; an error if none is."""
    names = []
    for fields, n, name in candidates:
        names.append(name)
        value = m.value(fields, n, where=name)
        if value:
            return parse_ts(value, offset, name).isoformat()
    raise Hl7Error(f"{', '.join(names[:-1])} and {names[-1]} missing", location=_loc(names[0]))


def _patient_id(m: Message, pid: list[str] | None, where: str = "") -> str:
    if pid is None:
        raise Hl7Error(f"{where}PID segment missing", code=SEGMENT_SEQUENCE, location=("PID", 0))
    value = m.value(pid, 3, where="PID-3")
    if not value:
        raise Hl7Error(f"{where}PID-3 missing", location=("PID", 3))
    return value


def _department(m: Message, pv1: list[str] | None) -> str:
    return m.value(pv1, 3, where="PV1-3") or m.value(pv1, 10, where="PV1-10")


_CLINICIANS: Final = ((7, "attending"), (8, "referring"), (9, "consulting"), (17, "admitting"))


def _adt(m: Message, mtype: str, offset: timedelta | None) -> ContextUpdate:
    pid = m.first("PID")
    patient_id = _patient_id(m, pid)
    pv1 = m.first("PV1")
    name = _tri(m, pid, 5, lambda reps: _name(m, reps, "PID-5"))
    address = _tri(m, pid, 11, lambda reps: _address(m, reps, "PID-11"))
    vip: bool | None = None
    if pv1 is not None:
        flag = _tri(m, pv1, 16, lambda reps: m.part(reps[0], where="PV1-16"))
        vip = None if flag is None else flag not in ("", "N")
    orders: list[tuple[str, tuple[tuple[str, ...], ...]]] = []
    if pv1 is not None:
        clinicians = [(role, m.part(rep, 1, where=f"PV1-{n}")) for n, role in _CLINICIANS for rep in m.reps(pv1, n)]
        clinicians = [(role, user) for role, user in clinicians if user]
        if clinicians:
            evn = m.first("EVN")
            at = _time(m, ((pv1, 44, "PV1-44"), (evn, 2, "EVN-2"), (m.segments[0][1], 7, "MSH-7")), offset)
            visit = m.value(pv1, 19, where="PV1-19")
            department = _department(m, pv1)
            seen: set[str] = set()
            for role, user in clinicians:
                accession = f"encounter:{patient_id}:{visit}:{role}:{user}"
                if accession not in seen:
                    seen.add(accession)
                    orders.append((accession, ((accession, patient_id, "", "", user, department, at, ""),)))
    return ContextUpdate(mtype, patients=(PatientUpdate(patient_id, name, address, vip),), orders=tuple(orders))


@dataclass
class _OrderGroup:
    n: int
    orc: list[str]
    obr: list[str] | None = None
    ipc: list[list[str]] = field(default_factory=list)
    zds: list[str] | None = None


def _order_groups(m: Message) -> list[_OrderGroup]:
    groups: list[_OrderGroup] = []
    for sid, fields in m.segments:
        if sid == "ORC":
            groups.append(_OrderGroup(len(groups) + 1, fields))
        elif sid in ("OBR", "IPC", "ZDS"):
            if not groups:
                raise Hl7Error(f"{sid} segment before any ORC segment", code=SEGMENT_SEQUENCE, location=(sid, 0))
            g = groups[-1]
            if sid == "OBR":
                if g.obr is not None:
                    raise Hl7Error(f"order {g.n}: OBR segment repeated", code=SEGMENT_SEQUENCE, location=("OBR", 0))
                g.obr = fields
            elif sid == "IPC":
                g.ipc.append(fields)
            else:
                g.zds = fields
    if not groups:
        raise Hl7Error("ORC segment missing", code=SEGMENT_SEQUENCE, location=("ORC", 0))
    return groups


def _orders(m: Message, mtype: str, offset: timedelta | None) -> ContextUpdate:
    pid, pv1 = m.first("PID"), m.first("PV1")
    upserts: dict[str, list[tuple[str, ...]]] = {}
    removed: list[str] = []
    for g in _order_groups(m):
        w = f"order {g.n}: "
        control = m.value(g.orc, 1, where=w + "ORC-1")
        if not control:
            raise Hl7Error(w + "ORC-1 missing", location=("ORC", 1))
        base = (m.value(g.obr, 18, where=w + "OBR-18") or m.value(g.orc, 3, where=w + "ORC-3")
                or m.value(g.obr, 3, where=w + "OBR-3") or m.value(g.orc, 2, where=w + "ORC-2")
                or m.value(g.obr, 2, where=w + "OBR-2"))
        procedures = [(m.value(ipc, 1, where=w + "IPC-1") or base, ipc) for ipc in g.ipc] or [(base, None)]
        if any(not acc for acc, _ in procedures):
            raise Hl7Error(w + "IPC-1, OBR-18, ORC-3, OBR-3, ORC-2 and OBR-2 missing", location=("OBR", 18))
        if control in CANCEL_CONTROLS:
            for acc, _ in procedures:
                upserts.pop(acc, None)
                if acc not in removed:
                    removed.append(acc)
            continue
        patient_id = _patient_id(m, pid, w)
        ordering = m.value(g.orc, 12, where=w + "ORC-12") or m.value(g.obr, 16, where=w + "OBR-16")
        at = _time(m, ((g.orc, 9, w + "ORC-9"), (g.obr, 7, w + "OBR-7"), (m.segments[0][1], 7, "MSH-7")), offset)
        department = _department(m, pv1)
        for acc, ipc in procedures:
            study = m.value(ipc, 3, where=w + "IPC-3") or m.value(g.zds, 1, where=w + "ZDS-1")
            modality = m.value(ipc, 5, where=w + "IPC-5") or m.value(g.obr, 24, where=w + "OBR-24")
            if acc in removed:
                removed.remove(acc)
            upserts.setdefault(acc, []).append((acc, patient_id, study, modality, ordering, department, at, ""))
    return ContextUpdate(mtype, orders=tuple((acc, tuple(rows)) for acc, rows in upserts.items()), removed_orders=tuple(removed))


def _staff(m: Message, mtype: str) -> ContextUpdate:
    mfi = m.first("MFI")
    if mfi is None:
        raise Hl7Error("MFI segment missing", code=SEGMENT_SEQUENCE, location=("MFI", 0))
    if m.value(mfi, 1, where="MFI-1") not in ("STF", "PRA"):
        raise Hl7Error("MFI-1 master file not accepted (STF or PRA)", "AR", TABLE_VALUE, ("MFI", 1))
    records: list[tuple[int, list[str], list[str] | None]] = []
    for sid, fields in m.segments:
        if sid == "MFE":
            records.append((len(records) + 1, fields, None))
        elif sid == "STF":
            if not records or records[-1][2] is not None:
                raise Hl7Error("STF segment without its MFE segment", code=SEGMENT_SEQUENCE, location=("STF", 0))
            records[-1] = (records[-1][0], records[-1][1], fields)
    if not records:
        raise Hl7Error("MFE segment missing", code=SEGMENT_SEQUENCE, location=("MFE", 0))
    users: dict[str, UserUpdate] = {}
    removed: list[str] = []
    for n, mfe, stf in records:
        w = f"record {n}: "
        event = m.value(mfe, 1, where=w + "MFE-1")
        if event not in STAFF_UPSERT and event != STAFF_DELETE:
            raise Hl7Error(w + ("MFE-1 missing" if not event else "MFE-1 record-level event code not accepted"),
                           code=TABLE_VALUE if event else REQUIRED_FIELD, location=("MFE", 1))
        user_id = m.value(stf, 2, where=w + "STF-2") or m.value(stf, 1, where=w + "STF-1") or m.value(mfe, 4, where=w + "MFE-4")
        if not user_id:
            raise Hl7Error(w + "STF-2, STF-1 and MFE-4 missing", location=("STF", 2))
        if event == STAFF_DELETE:
            users.pop(user_id, None)
            removed.append(user_id)
            continue
        if stf is None:
            raise Hl7Error(w + "STF segment missing", code=SEGMENT_SEQUENCE, location=("STF", 0))
        department = _tri(m, stf, 7, lambda reps, w=w: m.part(reps[0], 2, where=w + "STF-7") or m.part(reps[0], 1, where=w + "STF-7"))
        users[user_id] = UserUpdate(
            user_id, _tri(m, stf, 3, lambda reps, w=w: _name(m, reps, w + "STF-3")),
            _tri(m, stf, 4, lambda reps, w=w: m.part(reps[0], where=w + "STF-4")), department,
            _tri(m, stf, 11, lambda reps, w=w: _address(m, reps, w + "STF-11")))
        if user_id in removed:
            removed.remove(user_id)
    return ContextUpdate(mtype, users=tuple(users.values()), removed_users=tuple(removed))


# --- merging into the stored documents ------------------------------------------------------------------------------

def _read(text: str, columns: Sequence[str]) -> list[dict[str, str]]:
    if not text:
        return []
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    return [{c: (row.get(c) or "") for c in columns} for row in reader]


def _write(columns: Sequence[str], rows: Iterable[Mapping[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([row[c] for c in columns] for row in rows)
    return buf.getvalue()


def merge(texts: Mapping[str, str], updates: Sequence[ContextUpdate]) -> tuple[dict[str, str], dict[str, int]]:
    """Apply ``updates`` in order to the stored CSV texts (kind -> text); returns the new texts of the kinds touched
    and their row counts. Users and patients are upserted field by field by their id, orders replaced whole by
    accession; removals drop every row of the key. Rows of other keys are kept exactly as stored."""
    touched = {kind for u in updates for kind, changed in (("users", u.users or u.removed_users), ("patients", u.patients),
                                                          ("orders", u.orders or u.removed_orders)) if changed}
    out: dict[str, str] = {}
    counts: dict[str, int] = {}
    if "users" in touched:
        users = {r["user_id"].strip(): r for r in _read(texts.get("users", ""), USERS_COLUMNS)}
        for u in updates:
            for user_id in u.removed_users:
                users.pop(user_id, None)
            for uu in u.users:
                row = users.setdefault(uu.user_id, {c: "" for c in USERS_COLUMNS} | {"user_id": uu.user_id})
                for col in ("name", "role", "department", "home_address"):
                    value = getattr(uu, col)
                    if value is not None:
                        row[col] = value
        out["users"], counts["users"] = _write(USERS_COLUMNS, users.values()), len(users)
    if "patients" in touched:
        patients = {r["patient_id"].strip(): r for r in _read(texts.get("patients", ""), PATIENTS_COLUMNS)}
        for u in updates:
            for pu in u.patients:
                row = patients.setdefault(pu.patient_id, {"patient_id": pu.patient_id, "name": "", "address": "", "vip": "false"})
                if pu.name is not None:
                    row["name"] = pu.name
                if pu.address is not None:
                    row["address"] = pu.address
                if pu.vip is not None:
                    row["vip"] = "true" if pu.vip else "false"
        out["patients"], counts["patients"] = _write(PATIENTS_COLUMNS, patients.values()), len(patients)
    if "orders" in touched:
        orders = _read(texts.get("orders", ""), ORDERS_COLUMNS)
        for u in updates:
            gone = set(u.removed_orders) | {acc for acc, _ in u.orders}
            if gone:
                orders = [r for r in orders if r["accession"].strip() not in gone]
            orders.extend(dict(zip(ORDERS_COLUMNS, row, strict=True)) for _, rows in u.orders for row in rows)
        out["orders"], counts["orders"] = _write(ORDERS_COLUMNS, orders), len(orders)
    return out, counts


# --- acknowledgements -----------------------------------------------------------------------------------------------

def _clean(value: str, limit: int = 199) -> str:
    return "".join(c for c in value if c >= " " and c != "\x7f")[:limit]


def ack(data: bytes, outcome: Outcome, now: datetime | None = None) -> bytes:
    """The original-mode acknowledgement (HL7 v2.5.1 2.9.2) of ``data``: MSH with sender and receiver swapped,
    MSA-1 ``outcome.ack``, MSA-2 the message's control ID (MSH-10), MSA-3 and ERR (2.15.5) with the reason."""
    header = _header_fields(data)
    sep, enc, msh = header if header is not None else ("|", "^~\\&", [])
    comp = enc[0]

    def raw(n: int) -> str:
        return _clean(msh[n]) if n < len(msh) else ""

    def esc(text: str) -> str:
        e = enc[2]
        text = text.replace(e, f"{e}E{e}")
        for ch, code in ((sep, "F"), (enc[0], "S"), (enc[1], "R"), (enc[3], "T")):
            text = text.replace(ch, f"{e}{code}{e}")
        return text

    trigger = raw(9).split(comp)[1] if len(raw(9).split(comp)) > 1 else ""
    trigger = trigger if _TYPE_CODE.match(trigger) else ""
    version = raw(12).split(comp)[0]
    version = version if _VERSION.match(version) else "2.5.1"
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
    control = re.split("[" + re.escape(enc[0] + enc[1] + enc[3]) + "]", raw(10))[0]
    segments = [sep.join(["MSH", enc, raw(5), raw(6), raw(3), raw(4), stamp, "", f"ACK{comp}{trigger}{comp}ACK" if trigger else "ACK",
                          "DG" + uuid.uuid4().hex[:18], "P", version]),
                sep.join(["MSA", outcome.ack, control, esc(outcome.reason)])]
    if outcome.ack != "AA":
        location = f"{outcome.location[0]}{comp}1{comp}{outcome.location[1]}" if outcome.location else ""
        code = outcome.code or INTERNAL_ERROR
        segments.append(sep.join(["ERR", "", location, f"{code}{comp}{_CODE_TEXT.get(code, 'Application error')}{comp}HL70357",
                                  "E", "", "", "", esc(outcome.reason)]))
    return ("\r".join(segments) + "\r").encode("utf-8")


_CODE_TEXT: Final = {SEGMENT_SEQUENCE: "Segment sequence error", REQUIRED_FIELD: "Required field missing",
                     DATA_TYPE: "Data type error", TABLE_VALUE: "Table value not found",
                     UNSUPPORTED_TYPE: "Unsupported message type", UNSUPPORTED_EVENT: "Unsupported event code",
                     UNSUPPORTED_PROCESSING_ID: "Unsupported processing id", UNSUPPORTED_VERSION: "Unsupported version id",
                     INTERNAL_ERROR: "Application internal error"}


def ack_fields(data: bytes) -> dict[str, str]:
    """MSA-1, MSA-2 and MSA-3 of an acknowledgement (for tests and clients), unescaped."""
    m = parse(data)
    msa = m.first("MSA")
    return {"code": m.value(msa, 1), "control_id": m.value(msa, 2), "text": m.value(msa, 3)}
