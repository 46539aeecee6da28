"""Which SR content items survive the Clean Structured Content option (PS3.15 E.3.4).

Under the option, an SR content tree is kept and cleaned item by item: the
clinical findings (``TEXT``, ``CODE``, ``NUM`` and the image references) stay,
and identifying content goes:

* every ``PNAME`` item (person names: observers, subjects, physicians) is removed
  with its subtree;
* items whose concept name says they *are* an identity (subject name, ID, birth
  date, observer and device identities, organization names) are removed unless an
  option retains that kind of information; these are the identity concepts of the
  content-item table of PS3.15 E.3.4 (DCM codes of PS3.16);
* what remains is cleaned by the ordinary rules: ``TextValue`` is scrubbed of the
  object's identifying values, dates follow the date options, UIDs are replaced.
"""

from __future__ import annotations

from typing import Final

from pydicom.dataset import Dataset

from dicomguard.deid.options import Option

_VALUE_TYPE: Final = 0x0040A040
_CONCEPT_NAME: Final = 0x0040A043

_IDENTITY_CONCEPTS: Final[dict[str, Option | None]] = {
    # DCM code value -> the option that retains it (None: always removed).
    "121028": Option.RETAIN_UIDS,  # Subject UID
    "121029": None,  # Subject Name
    "121030": None,  # Subject ID
    "121031": None,  # Subject Birth Date
    "121032": Option.RETAIN_PATIENT_CHARACTERISTICS,  # Subject Sex
    "121033": Option.RETAIN_PATIENT_CHARACTERISTICS,  # Subject Age
    "121008": None,  # Person Observer Name
    "121009": Option.RETAIN_INSTITUTION_IDENTITY,  # Person Observer's Organization Name
    "121012": Option.RETAIN_DEVICE_IDENTITY,  # Device Observer UID
    "121013": Option.RETAIN_DEVICE_IDENTITY,  # Device Observer Name
    "121014": Option.RETAIN_DEVICE_IDENTITY,  # Device Observer Manufacturer
    "121015": Option.RETAIN_DEVICE_IDENTITY,  # Device Observer Model Name
    "121016": Option.RETAIN_DEVICE_IDENTITY,  # Device Observer Serial Number
    "121017": Option.RETAIN_DEVICE_IDENTITY,  # Device Observer Physical Location During Observation
    "113873": Option.RETAIN_INSTITUTION_IDENTITY,  # Organization Name
}


def _text(item: Dataset, tag: int) -> str:
    elem = item.get(tag)
    if elem is None or elem.value is None:
        return ""
    return str(elem.value).strip()


def keep_content_item(item: Dataset, options: frozenset[Option]) -> bool:
    """False if the content item (and its subtree) must be removed under Clean Structured Content."""
    if _text(item, _VALUE_TYPE).upper() == "PNAME":
        return False
    concept = item.get(_CONCEPT_NAME)
    if concept is None or not concept.value:
        return True
    code = concept.value[0]
    if str(code.get("CodingSchemeDesignator", "")).strip() != "DCM":
        return True
    value = str(code.get("CodeValue", "")).strip()
    if value not in _IDENTITY_CONCEPTS:
        return True
    retained_by = _IDENTITY_CONCEPTS[value]
    return retained_by is not None and retained_by in options
