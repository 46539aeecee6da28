"""What the detector knows besides the audit trail: users, patients and orders (the "why" of an access).

Explanation-based auditing (Fabbri and LeFevre, "Explanation-Based Auditing",
PVLDB 5(1), 2011) explains an access by a path through the hospital's own
records: the user ordered the study, reads for the order's reading group,
works in the department that ordered it. These records come as three CSV files
(UTF-8, with or without a byte-order mark). Loading is all or nothing: a
missing column, an unreadable value or bytes that are not UTF-8 raise
:class:`ContextError` naming the file and line, and no partial context is
returned, because a half-loaded order list would make legitimate accesses look
unexplained (false alerts) and a half-loaded user list would hide signatures.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

USERS_COLUMNS: Final = ("user_id", "name", "role", "department", "home_address")
PATIENTS_COLUMNS: Final = ("patient_id", "name", "address", "vip")
ORDERS_COLUMNS: Final = ("accession", "patient_id", "study_uid", "modality", "ordering_user", "department",
                         "ordered_at", "reading_group")
_TRUE: Final = frozenset({"true", "1", "yes", "y"})
_FALSE: Final = frozenset({"false", "0", "no", "n", ""})


class ContextError(ValueError):
    """A context file that cannot be loaded entirely ("file:line: reason")."""


@dataclass(frozen=True, slots=True)
class UserInfo:
    user_id: str
    name: str
    role: str
    department: str
    home_address: str


@dataclass(frozen=True, slots=True)
class PatientInfo:
    patient_id: str
    name: str
    address: str
    vip: bool


@dataclass(frozen=True, slots=True)
class Order:
    accession: str
    patient_id: str
    study_uid: str
    modality: str
    ordering_user: str
    department: str
    ordered_at: datetime
    reading_group: str

    @property
    def reading_groups(self) -> frozenset[str]:
        """Several groups may read one order ("neuro|body")."""
        return frozenset(g.strip() for g in self.reading_group.split("|") if g.strip())


@dataclass
class Context:
    users: dict[str, UserInfo]
    patients: dict[str, PatientInfo]
    orders: list[Order]
    orders_by_patient: dict[str, list[Order]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.orders_by_patient:
            self.reindex()

    def reindex(self) -> None:
        """Rebuild the per-patient order index (orders sorted by time) after ``orders`` changed."""
        by_patient: dict[str, list[Order]] = {}
        for o in sorted(self.orders, key=lambda o: o.ordered_at):
            by_patient.setdefault(o.patient_id, []).append(o)
        self.orders_by_patient = by_patient


def parse_datetime(value: str) -> datetime:
    """ISO 8601 date or date-time; a value without offset is taken as UTC."""
    v = value.strip()
    if v.endswith(("Z", "z")):
        v = v[:-1] + "+00:00"
    t = datetime.fromisoformat(v)  # raises ValueError on anything else
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError("not a boolean (true/false, yes/no, 1/0)")


T = TypeVar("T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _rows(path: str | os.PathLike[str], columns: Sequence[str], build: Callable[[dict[str, str]], T]) -> list[T]:
    return _rows_of(os.fspath(path), Path(path).read_bytes(), columns, build)


def _rows_of(name: str, data: bytes, columns: Sequence[str], build: Callable[[dict[str, str]], T]) -> list[T]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ContextError(f"{name}:{line}: not UTF-8 text") from None
    # csv.reader and one dict per row built in C: the same rows as csv.DictReader (blank lines skipped, a repeated
    # column name keeps its last value), a few times faster for an order list of a million rows.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise ContextError(f"{name}:1: {exc}") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise ContextError(f"{name}:1: missing column(s) {', '.join(missing)}")
    width = len(header)
    position = {c: i for i, c in enumerate(header)}  # a repeated name: its last position, as DictReader keeps its last value
    needed = max(position[c] for c in columns) + 1  # a shorter row lacks a value we use
    out: list[T] = []
    try:
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) > width or len(row) < needed:
                raise ContextError(f"{name}:{line}: wrong number of fields")
            try:
                out.append(build(dict(zip(header, row))))
            except (ValueError, KeyError) as exc:
                raise ContextError(f"{name}:{line}: {exc}") from None
    except csv.Error as exc:
        raise ContextError(f"{name}:{reader.line_num}: {exc}") from None
    return out


def _required(row: dict[str, str], column: str) -> str:
    v = row[column].strip()
    if not v:
        raise ValueError(f"empty {column}")
    return v


def load_users_csv(path: str | os.PathLike[str]) -> dict[str, UserInfo]:
    rows = _rows(path, USERS_COLUMNS, lambda r: UserInfo(_required(r, "user_id"), r["name"].strip(), r["role"].strip(),
                                                          r["department"].strip(), r["home_address"].strip()))
    return _unique(path, rows, lambda u: u.user_id)


def load_patients_csv(path: str | os.PathLike[str]) -> dict[str, PatientInfo]:
    rows = _rows(path, PATIENTS_COLUMNS, lambda r: PatientInfo(_required(r, "patient_id"), r["name"].strip(),
                                                                r["address"].strip(), _parse_bool(r["vip"])))
    return _unique(path, rows, lambda p: p.patient_id)


def _order(r: dict[str, str]) -> Order:
    try:
        ordered_at = parse_datetime(r["ordered_at"])
    except ValueError:
        raise ValueError("ordered_at is not an ISO 8601 date-time") from None
    return Order(r["accession"].strip(), _required(r, "patient_id"), r["study_uid"].strip(), r["modality"].strip(),
                 r["ordering_user"].strip(), r["department"].strip(), ordered_at, r["reading_group"].strip())


def load_orders_csv(path: str | os.PathLike[str]) -> list[Order]:
    return _rows(path, ORDERS_COLUMNS, _order)


def _unique(path: str | os.PathLike[str], rows: list[T], key: Callable[[T], str]) -> dict[str, T]:
    out: dict[str, T] = {}
    for i, row in enumerate(rows):
        k = key(row)
        if k in out:
            raise ContextError(f"{os.fspath(path)}:{i + 2}: duplicate id (of an earlier line)")  # the id itself is PHI
        out[k] = row
    return out


def load_context_dir(path: str | os.PathLike[str]) -> Context:
    """users.csv, patients.csv and orders.csv of one folder, all three or nothing."""
    base = Path(path)
    return Context(load_users_csv(base / "users.csv"), load_patients_csv(base / "patients.csv"),
                   load_orders_csv(base / "orders.csv"))


def context_from_texts(users: str = "", patients: str = "", orders: str = "",
                       explained_pairs: Sequence[tuple[str, str]] = ()) -> Context:
    """The context from CSV texts kept sealed in the archive (never written to disk in clear); an empty text is an
    empty table. ``explained_pairs`` are (user, patient) links a person confirmed (a false-positive disposition):
    they explain like an order placed by that user, at any time."""
    user_rows = _rows_of("users", users.encode(), USERS_COLUMNS, lambda r: UserInfo(
        _required(r, "user_id"), r["name"].strip(), r["role"].strip(), r["department"].strip(), r["home_address"].strip())) if users else []
    patient_rows = _rows_of("patients", patients.encode(), PATIENTS_COLUMNS, lambda r: PatientInfo(
        _required(r, "patient_id"), r["name"].strip(), r["address"].strip(), _parse_bool(r["vip"]))) if patients else []
    order_rows = _rows_of("orders", orders.encode(), ORDERS_COLUMNS, _order) if orders else []
    confirmed = [Order(f"confirmed:{u}", p, "", "", u, "", _EPOCH, "") for u, p in explained_pairs]
    return Context(_unique("users", user_rows, lambda u: u.user_id), _unique("patients", patient_rows, lambda p: p.patient_id),
                   order_rows + confirmed)
