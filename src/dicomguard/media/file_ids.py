"""PS3.10 File IDs for a patient/study/series/instance hierarchy.

A File ID is an ordered list of components (PS3.10 8.2): at most 8
components, each of 1 to 8 characters from A-Z, 0-9 and underscore
(PS3.10 8.5). The allocator lays a medium out as

    DICOM/PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn

(patient, study, series, instance; numbers from 1 in order of first arrival).
Components are opaque counters, never derived from attribute values, so no
identifier of the patient ends up in a path name.

Properties:

* deterministic: the same arrival order gives the same File IDs;
* grouped: every instance of a series lands in that series' folder even when
  series or studies arrive interleaved;
* a study stays under the patient it first arrived with (a study belongs to
  one patient; the archive refuses conflicting identities at ingest);
* one File ID per SOP Instance UID: a second object with the same UID is an
  error, since a DICOMDIR cannot reference two files for one instance.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from dicomguard.media.errors import MediaError

FileId = tuple[str, ...]
"""The components of a File ID, outermost first (PS3.10 8.2)."""

COMPONENT = re.compile(r"[A-Z0-9_]{1,8}")
"""One File ID component (PS3.10 8.2 length, PS3.10 8.5 character set)."""

MAX_COMPONENTS = 8
"""PS3.10 8.2: a File ID has at most eight components."""

ROOT = "DICOM"

_DIGITS = 6
_PER_LEVEL = 10**_DIGITS - 1  # two-letter prefix + 6 digits = the 8 characters a component may have


def is_conformant(file_id: Sequence[str]) -> bool:
    """Whether ``file_id`` is a PS3.10 File ID (8.2 structure, 8.5 character set)."""
    return 0 < len(file_id) <= MAX_COMPONENTS and all(COMPONENT.fullmatch(c) for c in file_id)


def as_path(file_id: Sequence[str]) -> str:
    """The File ID as a ZIP member name: components joined by ``/`` (APPNOTE 4.4.17 forward slashes)."""
    return "/".join(file_id)


class FileIdAllocator:
    """Assigns File IDs in arrival order; see the module docstring for the layout and its properties."""

    def __init__(self, root: str = ROOT) -> None:
        if not COMPONENT.fullmatch(root):
            raise ValueError("the root folder must be one PS3.10 File ID component")
        self._root = root
        self._patients: dict[tuple[str, ...], str] = {}
        self._studies: dict[str, tuple[str, str]] = {}  # study UID -> (patient component, study component)
        self._study_count: dict[str, int] = {}  # patient component -> studies so far
        self._series: dict[tuple[str, str], str] = {}  # (study UID, series UID) -> series component
        self._series_count: dict[str, int] = {}  # study UID -> series so far
        self._instance_count: dict[tuple[str, str], int] = {}
        self._assigned: dict[str, FileId] = {}

    def assign(self, *, patient_key: tuple[str, ...], study_uid: str, series_uid: str, sop_instance_uid: str) -> FileId:
        """The File ID of one instance; raises :class:`MediaError` for a repeated SOP Instance UID or a full level."""
        if sop_instance_uid in self._assigned:
            raise MediaError("SOP Instance UID already on the medium", sop_instance_uid=sop_instance_uid)
        study = self._studies.get(study_uid)
        if study is None:
            patient = self._patients.get(patient_key)
            if patient is None:
                patient = _component("PT", len(self._patients) + 1)
            study_number = self._study_count.get(patient, 0) + 1
            study = (patient, _component("ST", study_number))
            self._patients.setdefault(patient_key, patient)
            self._study_count[patient] = study_number
            self._studies[study_uid] = study
        series_key = (study_uid, series_uid)
        series = self._series.get(series_key)
        if series is None:
            series_number = self._series_count.get(study_uid, 0) + 1
            series = _component("SE", series_number)
            self._series_count[study_uid] = series_number
            self._series[series_key] = series
        instance_number = self._instance_count.get(series_key, 0) + 1
        file_id = (self._root, *study, series, _component("IM", instance_number))
        self._instance_count[series_key] = instance_number
        self._assigned[sop_instance_uid] = file_id
        return file_id

    @property
    def assigned(self) -> Mapping[str, FileId]:
        """SOP Instance UID -> File ID, in assignment order (a read-only view)."""
        return MappingProxyType(self._assigned)


def _component(prefix: str, number: int) -> str:
    if number > _PER_LEVEL:
        # More than 999,999 patients, studies, series or instances below one parent: not a share link's medium.
        raise MediaError(f"more than {_PER_LEVEL} {prefix} entries under one folder")
    return f"{prefix}{number:0{_DIGITS}d}"
