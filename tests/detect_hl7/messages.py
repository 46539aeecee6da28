"""HL7 v2.5.1 messages of a small radiology feed (ER7, segments ended by CR), as an interface engine sends them.

PHI of the fixtures is listed in :data:`PHI`: none of it may appear in an error or an acknowledgement.
"""

from __future__ import annotations

PHI = ("MRN-0001", "Doe", "John", "Oak Road", "Springfield", "MRN-0002", "Star", "Vera", "Hollywood", "ACC-100", "asmith",
       "1.2.840.99.1")


def msh(mtype: str, control: str = "MSG0001", processing: str = "P", version: str = "2.5.1", extra: str = "",
        time: str = "20260105103000+0100") -> str:
    return f"MSH|^~\\&|HIS|HOSP|DICOMGUARD|RAD|{time}||{mtype}|{control}|{processing}|{version}{extra}\r"


def adt(event: str = "A08", control: str = "MSG0001", pid5: str = "Doe^John^Q^^^^L", pid11: str = "12 Oak Road^Apt 4^Springfield^^12345^^H",
        vip: str = "", pid3: str = "MRN-0001^^^HOSP^MR~X-77^^^SSA", pv1: bool = True) -> bytes:
    text = (msh(f"ADT^{event}^ADT_A01", control) + f"EVN|{event}|20260105103000\r"
            + f"PID|1||{pid3}||{pid5}||19700101|M|||{pid11}\r")
    if pv1:
        fields = ["PV1", "1", "I", "WARD7^101^1", "", "", "", "asmith^Smith^Ann", "bjones^Jones^Bob", "", "", "", "", "", "",
                  "", vip, "cdoe^Doe^C", "", "V0001"] + [""] * 24 + ["20260105090000"]
        text += "|".join(fields) + "\r"
    return text.encode()


def orm(control_code: str = "NW", control: str = "MSG0002", accession: str = "ACC-100", ordered: str = "20260105110000+0100",
        zds: str = "1.2.840.99.1^DICOMGUARD^Application^DICOM") -> bytes:
    orc = ["ORC", control_code, "PL-1", "FL-1", "", "", "", "", "", ordered, "", "", "asmith^Smith^Ann"]
    obr = ["OBR", "1", "PL-1", "FL-1", "CTHEAD^CT head"] + [""] * 11 + ["bjones^Jones^Bob", "", accession] + [""] * 5 + ["CT"]
    text = (msh("ORM^O01^ORM_O01", control) + "PID|1||MRN-0001^^^HOSP^MR||Doe^John\r" + "PV1|1|O|ED^^^HOSP\r"
            + "|".join(orc) + "\r" + "|".join(obr) + "\r")
    if zds:
        text += f"ZDS|{zds}\r"
    return text.encode()


def omi(control: str = "MSG0003") -> bytes:
    """An imaging order with two scheduled studies (IPC, HL7 v2.5.1 Chapter 4)."""
    orc = ["ORC", "NW", "PL-2", "FL-2", "", "", "", "", "", "20260106080000", "", "", "dwho^Who^D"]
    obr = ["OBR", "1", "PL-2", "FL-2", "MRBRAIN^MR brain"] + [""] * 13 + ["ACC-200"] + [""] * 5 + ["MR"]
    return (msh("OMI^O23^OMI_O23", control) + "PID|1||MRN-0002^^^HOSP^MR||Star^Vera\r" + "PV1|1|I|NEURO^1^2\r"
            + "|".join(orc) + "\r" + "|".join(obr) + "\r"
            + "IPC|ACC-200|RP-1|1.2.840.99.2|SPS-1|MR^Magnetic resonance^DCM\r"
            + "IPC|ACC-201|RP-2|1.2.840.99.3|SPS-2|CT\r").encode()


def mfn(event: str = "MAD", control: str = "MSG0004") -> bytes:
    return (msh("MFN^M02^MFN_M02", control) + "MFI|STF||UPD|||NE\r"
            + f"MFE|{event}|||eking^^99LOCAL|CWE\r"
            + "STF|E-42^King^99LOCAL|eking^^^HOSP~NPI-9^^^NPI|King^Eve^^^^^L|RAD|F||NEURO^Neuroradiology||||"
              "1 Elm Street^^Shelbyville^^^^H\r").encode()
