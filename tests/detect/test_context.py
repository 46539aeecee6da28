"""Loading the detection context: exact columns, UTF-8 with or without BOM, all or nothing with file:line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomguard.detect import (
    ContextError,
    load_context_dir,
    load_orders_csv,
    load_patients_csv,
    load_users_csv,
)

USERS = "user_id,name,role,department,home_address\nu1,Smith^Ann,radiologist,rad-neuro,1 Elm Street\n"
PATIENTS = "patient_id,name,address,vip\nP1,Doe^John,2 Oak Road,true\nP2,Roe^Jane,3 Oak Road,false\n"
ORDERS = ("accession,patient_id,study_uid,modality,ordering_user,department,ordered_at,reading_group\n"
          "A1,P1,1.2.3,CT,u1,cardiology,2026-03-01T09:00:00Z,rad-neuro|rad-body\n")


def _dir(tmp_path: Path, users: str = USERS, patients: str = PATIENTS, orders: str = ORDERS) -> Path:
    (tmp_path / "users.csv").write_text(users, encoding="utf-8")
    (tmp_path / "patients.csv").write_text(patients, encoding="utf-8")
    (tmp_path / "orders.csv").write_text(orders, encoding="utf-8")
    return tmp_path


def test_loads_all_three(tmp_path: Path) -> None:
    ctx = load_context_dir(_dir(tmp_path))
    assert ctx.users["u1"].department == "rad-neuro"
    assert ctx.patients["P1"].vip and not ctx.patients["P2"].vip
    assert ctx.orders[0].reading_groups == {"rad-neuro", "rad-body"}
    assert ctx.orders_by_patient["P1"][0].accession == "A1"


def test_bom_accepted(tmp_path: Path) -> None:
    p = tmp_path / "users.csv"
    p.write_bytes(b"\xef\xbb\xbf" + USERS.encode())
    assert "u1" in load_users_csv(p)


def test_missing_column(tmp_path: Path) -> None:
    p = tmp_path / "users.csv"
    p.write_text("user_id,name,role,department\nu1,A,b,c\n", encoding="utf-8")
    with pytest.raises(ContextError, match=r"users\.csv:1: missing column\(s\) home_address"):
        load_users_csv(p)


def test_bad_date_names_line(tmp_path: Path) -> None:
    p = tmp_path / "orders.csv"
    p.write_text(ORDERS + "A2,P2,1.2.4,MR,u1,cardiology,yesterday,rad-body\n", encoding="utf-8")
    with pytest.raises(ContextError, match=r"orders\.csv:3: ordered_at"):
        load_orders_csv(p)


def test_latin1_bytes_refused_with_line(tmp_path: Path) -> None:
    p = tmp_path / "patients.csv"
    p.write_bytes(PATIENTS.encode() + "P3,Müller^Jörg,4 Elm,false\n".encode("latin-1"))
    with pytest.raises(ContextError, match=r"patients\.csv:4: not UTF-8"):
        load_patients_csv(p)


def test_bad_boolean_and_nothing_half_loaded(tmp_path: Path) -> None:
    d = _dir(tmp_path, patients=PATIENTS + "P3,X^Y,5 Elm,maybe\n")
    with pytest.raises(ContextError, match=r"patients\.csv:4:"):
        load_context_dir(d)


def test_short_row_refused(tmp_path: Path) -> None:
    p = tmp_path / "users.csv"
    p.write_text(USERS + "u2,B^C,nurse\n", encoding="utf-8")
    with pytest.raises(ContextError, match=r"users\.csv:3: wrong number of fields"):
        load_users_csv(p)
