"""HL7 v2 context messages to context rows: mapping, update semantics, escapes, MLLP framing, ACKs, and errors that
name the segment and field but never a value."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dicomguard.detect import hl7v2
from dicomguard.detect.context import context_from_texts
from dicomguard.detect.hl7v2 import FramingError, Hl7Error, MllpReader, Outcome, ack, ack_fields, context_update, frame, merge
from tests.detect_hl7 import messages as M
from tests.detect_hl7.messages import PHI


def apply(*messages: bytes, texts: dict[str, str] | None = None) -> dict[str, str]:
    merged, _ = merge(texts or {}, [context_update(m) for m in messages])
    return {**(texts or {}), **merged}


def load(texts: dict[str, str]):  # type: ignore[no-untyped-def]
    return context_from_texts(texts.get("users", ""), texts.get("patients", ""), texts.get("orders", ""))


def test_adt_gives_the_patient_and_links_the_visit_clinicians() -> None:
    ctx = load(apply(M.adt(vip="VIP")))
    p = ctx.patients["MRN-0001"]  # PID-3: the first CX's ID
    assert (p.name, p.address, p.vip) == ("Doe^John Q", "12 Oak Road, Apt 4, Springfield", True)
    rows = sorted((o.accession, o.ordering_user, o.department, o.ordered_at) for o in ctx.orders)
    admitted = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # PV1-44 20260105090000 in MSH-7's offset (+0100)
    assert rows == [("encounter:MRN-0001:V0001:admitting:cdoe", "cdoe", "WARD7", admitted),
                    ("encounter:MRN-0001:V0001:attending:asmith", "asmith", "WARD7", admitted),
                    ("encounter:MRN-0001:V0001:referring:bjones", "bjones", "WARD7", admitted)]
    assert all(o.patient_id == "MRN-0001" and not o.study_uid for o in ctx.orders)


@pytest.mark.parametrize("event", sorted(hl7v2.ADT_EVENTS))
def test_every_accepted_adt_event_upserts_the_patient(event: str) -> None:
    assert "MRN-0001" in load(apply(M.adt(event))).patients


def test_adt_update_semantics_absent_keeps_explicit_null_clears() -> None:
    first = apply(M.adt(vip="Y"))
    # A later A31 without PV1 and without an address: name replaced, address and VIP flag kept.
    later = apply(M.adt("A31", pid5="Doe^Johnny", pid11="", pv1=False), texts=first)
    p = load(later).patients["MRN-0001"]
    assert (p.name, p.address, p.vip) == ("Doe^Johnny", "12 Oak Road, Apt 4, Springfield", True)
    cleared = apply(M.adt("A08", pid11='""', vip="N"), texts=later)
    p = load(cleared).patients["MRN-0001"]
    assert (p.address, p.vip) == ("", False)
    assert load(apply(M.adt(vip='""'), texts=first)).patients["MRN-0001"].vip is False


def test_orm_new_order_and_cancel() -> None:
    texts = apply(M.orm())
    [o] = load(texts).orders
    assert (o.accession, o.patient_id, o.study_uid, o.modality, o.ordering_user, o.department, o.reading_group) == (
        "ACC-100", "MRN-0001", "1.2.840.99.1", "CT", "asmith", "ED", "")  # OBR-18, PID-3, ZDS-1, OBR-24, ORC-12, PV1-3
    assert o.ordered_at == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # ORC-9 with its own offset
    texts = apply(M.orm(control="MSG9", ordered="20260105120000+0100"), texts=texts)  # the same accession: replaced
    assert [o.ordered_at.hour for o in load(texts).orders] == [11]
    texts = apply(M.orm("CA", control="MSG10"), texts=texts)
    assert load(texts).orders == []
    # a discontinue of an order never seen is not an error
    assert load(apply(M.orm("DC"))).orders == []


def test_cancel_keeps_other_orders_and_rows_without_accession() -> None:
    base = {"orders": "accession,patient_id,study_uid,modality,ordering_user,department,ordered_at,reading_group\n"
                      ",P9,,,u9,,2026-01-01T00:00:00+00:00,\nOTHER,P8,,,u8,,2026-01-01T00:00:00+00:00,neuro\n"}
    texts = apply(M.orm(), M.orm("CA"), texts=base)
    assert sorted(o.accession for o in load(texts).orders) == ["", "OTHER"]


def test_omi_one_row_per_scheduled_study() -> None:
    orders = sorted(load(apply(M.omi())).orders, key=lambda o: o.accession)
    assert [(o.accession, o.study_uid, o.modality, o.ordering_user, o.department) for o in orders] == [
        ("ACC-200", "1.2.840.99.2", "MR", "dwho", "NEURO"), ("ACC-201", "1.2.840.99.3", "CT", "dwho", "NEURO")]
    assert orders[0].ordered_at == datetime(2026, 1, 6, 7, 0, tzinfo=UTC)  # no offset in ORC-9: MSH-7's


def test_staff_master_file_adds_and_deletes_users() -> None:
    texts = apply(M.mfn())
    u = load(texts).users["eking"]  # STF-2: the first identifier
    assert (u.name, u.role, u.department, u.home_address) == ("King^Eve", "RAD", "Neuroradiology", "1 Elm Street, Shelbyville")
    assert load(apply(M.mfn("MDL", "MSG5"), texts=texts)).users == {}


def test_escape_sequences_and_other_delimiters() -> None:
    name = "O\\F\\Neil\\S\\x\\T\\y\\R\\z\\E\\^Ann\\H\\e\\N\\"
    ctx = load(apply(M.adt(pid5=name, pid11=r"\X4F616B\ Road^^Springfield")))
    p = ctx.patients["MRN-0001"]
    assert p.name == "O|Neil^x&y~z\\^Anne"
    assert p.address == "Oak Road, Springfield"
    # the same message with other delimiters (MSH-1 "#", MSH-2 "$%!*")
    other = M.adt().decode().replace("|", "#").replace("^", "$").replace("~", "%").replace("&", "*").replace("\\", "!")
    assert load(apply(other.encode())).patients["MRN-0001"].name == "Doe^John Q"


def test_latin1_character_set_by_msh18() -> None:
    msg = M.adt(pid5="Müller^Jörg").decode().replace("|2.5.1\r", "|2.5.1||||||8859/1\r", 1).encode("iso8859-1")
    assert load(apply(msg)).patients["MRN-0001"].name == "Müller^Jörg"
    with pytest.raises(Hl7Error, match="MSH-18"):
        context_update(M.adt(pid5="Müller").decode().encode("iso8859-1"))  # not UTF-8 and no MSH-18


def _without(msg: bytes, old: bytes, new: bytes = b"") -> bytes:
    assert old in msg
    return msg.replace(old, new, 1)


BAD = {  # name: (message, ACK code, words the reason holds)
    "no PID-3": (_without(M.adt(), b"MRN-0001^^^HOSP^MR~X-77^^^SSA"), "AE", "PID-3 missing"),
    "no PID": (_without(M.adt(), b"PID|1||MRN-0001^^^HOSP^MR~X-77^^^SSA||Doe^John^Q^^^^L||19700101|M|||12 Oak Road^Apt 4^Springfield^^12345^^H\r"),
               "AE", "PID segment missing"),
    "bad ORC-9": (M.orm(ordered="2026-01-05 Doe"), "AE", "ORC-9 is not an HL7 date/time"),
    "bad month": (M.orm(ordered="20261305"), "AE", "ORC-9 is not an HL7 date/time"),
    "unknown escape": (M.adt(pid5=r"Doe\Zsecret\^John"), "AE", "PID-5: unsupported escape sequence"),
    "control character by hex escape": (M.adt(pid5=r"Doe\X0A\John^x"), "AE", "PID-5: hexadecimal escape of a control character"),
    "unterminated escape": (M.adt(pid5=r"Doe\F^John"), "AE", "PID-5: unterminated escape sequence"),
    "no accession": (M.orm(accession="").replace(b"PL-1", b"").replace(b"FL-1", b""), "AE",
                     "IPC-1, OBR-18, ORC-3, OBR-3, ORC-2 and OBR-2 missing"),
    "OBR before ORC": (M.orm().replace(b"ORC|", b"NTE|"), "AE", "OBR segment before any ORC segment"),
    "no ORC-1": (M.orm(control_code=""), "AE", "ORC-1 missing"),
    "LF separators": (M.adt().replace(b"\r", b"\n"), "AE", "control character"),
    "NUL byte": (_without(M.adt(), b"Doe", b"D\x00oe"), "AE", "control character"),
    "not MSH first": (b"PID|1||MRN-0001\r" + M.adt(), "AR", "MSH segment missing"),
    "two MSH": (M.adt() + M.adt(), "AE", "MSH must be the first segment"),
    "bad segment id": (M.adt() + b"pid|Doe\r", "AE", "segment 5: not a segment ID"),
    "unsupported type": (M.adt().replace(b"ADT^A08^ADT_A01", b"ORU^R01^ORU_R01"), "AR", "message type ORU^R01 not accepted"),
    "unsupported event": (M.adt().replace(b"ADT^A08^ADT_A01", b"ADT^A03^ADT_A03"), "AR", "message type ADT^A03 not accepted"),
    "merge": (M.adt().replace(b"ADT^A08^ADT_A01", b"ADT^A40^ADT_A39"), "AR", "ADT^A40 (patient merge) is not applied"),
    "garbage type": (M.adt().replace(b"ADT^A08^ADT_A01", b"Doe^John"), "AR", "MSH-9 message type not accepted"),
    "training": (M.adt().replace(b"|P|2.5.1", b"|T|2.5.1"), "AR", "MSH-11 processing ID is not P"),
    "version 3": (M.adt().replace(b"|P|2.5.1", b"|P|3.0"), "AR", "MSH-12 version not supported"),
    "charset": (M.adt().replace(b"|2.5.1\r", b"|2.5.1||||||ISO IR87\r"), "AR", "MSH-18 character set not supported"),
    "staff file": (M.mfn().replace(b"MFI|STF", b"MFI|Doe"), "AR", "MFI-1 master file not accepted"),
    "staff without id": (M.mfn().replace(b"STF|E-42^King^99LOCAL|eking^^^HOSP~NPI-9^^^NPI", b"STF||").replace(b"eking^^99LOCAL", b""),
                         "AE", "STF-2, STF-1 and MFE-4 missing"),
    "oversize": (M.adt() + b"NTE|" + b"x" * hl7v2.MAX_MESSAGE_BYTES + b"\r", "AR", "larger than"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_errors_name_segment_and_field_never_a_value(name: str) -> None:
    message, code, words = BAD[name]
    with pytest.raises(Hl7Error) as caught:
        context_update(message)
    err = caught.value
    assert (err.ack, words in err.reason) == (code, True), err.reason
    reply = ack(message, Outcome.of(err))
    for text in (err.reason, str(err), reply.decode("utf-8", "replace")):
        for value in (*PHI, "secret", "2026-01-05 Doe", "Zsecret"):
            assert value not in text, (name, value, text)
    fields = ack_fields(reply)
    assert fields["code"] == code and fields["text"] == err.reason


def test_ack_swaps_sender_and_receiver_and_echoes_the_control_id() -> None:
    reply = ack(M.adt(control="CTRL-7"), Outcome("AA"), now=datetime(2026, 1, 5, 12, 0, tzinfo=UTC)).decode()
    msh, msa = reply.rstrip("\r").split("\r")
    f = msh.split("|")
    assert f[:5] == ["MSH", "^~\\&", "DICOMGUARD", "RAD", "HIS"] and f[5] == "HOSP" and f[6] == "20260105120000+0000"
    assert f[8] == "ACK^A08^ACK" and f[10:12] == ["P", "2.5.1"] and f[9].startswith("DG")
    assert msa == "MSA|AA|CTRL-7|"
    err = ack(M.adt(), Outcome("AE", "PID-3 missing", hl7v2.REQUIRED_FIELD, ("PID", 3))).decode()
    assert "\rERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 missing\r" in err
    # a reason holding delimiters is escaped, and bytes that are no HL7 message still get an answer
    odd = ack(b"\x00garbage", Outcome("AR", "a|b^c", hl7v2.UNSUPPORTED_TYPE))
    assert ack_fields(odd) == {"code": "AR", "control_id": "", "text": "a|b^c"}


def test_mllp_reader_frames_and_bounds() -> None:
    reader = MllpReader(max_bytes=10)
    assert reader.feed(b"\x0babc") == [] and reader.pending == 3
    assert reader.feed(b"de\x1c") == []  # the CR after the end byte is still to come
    assert reader.feed(b"\r\r\n\x0bx\x1c\r\x0by") == [b"abcde", b"x"]
    assert reader.pending == 1  # an unfinished frame is never returned
    for stream, why in ((b"junk", "outside"), (b"\x0b" + b"x" * 11, "over 10 bytes"), (b"\x0bab\x0bc", "start byte inside"),
                        (b"\x0bab\x1cX", "not followed by CR")):
        with pytest.raises(FramingError, match=why):
            MllpReader(max_bytes=10).feed(stream)
    with pytest.raises(FramingError):  # the bound counts across reads
        r = MllpReader(max_bytes=10)
        r.feed(b"\x0b" + b"x" * 6)
        r.feed(b"y" * 5)
    assert MllpReader().feed(frame(M.adt())) == [M.adt()]
