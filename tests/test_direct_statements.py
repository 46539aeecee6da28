"""Statements run on the DBAPI cursor (``index.direct``, ADR 0024) store and return exactly what SQLAlchemy would.

Each test runs on SQLite and PostgreSQL. The reference for every value is SQLAlchemy Core itself: the same rows
inserted through ``Connection.execute`` into a twin table read back identically.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    exc,
    func,
    select,
)
from sqlalchemy.orm import Session

from dicomguard.index.db import insert_ignore_statement, make_engine, read_session, write_session
from dicomguard.index.direct import MAX_LIST, DirectStatement

META = MetaData()


def _table(name: str) -> Table:
    return Table(
        name, META,
        Column("uid", String(64), primary_key=True),
        Column("n", BigInteger),
        Column("small", Integer),
        Column("digest", LargeBinary(32)),
        Column("at", DateTime(timezone=True)),
        Column("flag", Boolean, nullable=False, default=False),
    )


THINGS = _table("direct_things")
TWINS = _table("direct_twins")
STAMPED = Table("direct_stamped", META, Column("uid", String(64), primary_key=True),
                Column("made", DateTime(timezone=True), nullable=False, default=lambda: datetime.now(UTC)))


@pytest.fixture
def engine(empty_db_url: str, tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(empty_db_url or f"sqlite:///{tmp_path / 'direct.db'}")
    META.create_all(eng)
    try:
        yield eng
    finally:
        eng.dispose()


def _rows(n: int) -> list[dict[str, object]]:
    at = datetime(2026, 12, 5, 11, 46, 2, 123456, tzinfo=UTC)
    return [{"uid": f"1.2.{i}", "n": 2**40 + i, "small": None if i % 3 == 0 else -i, "digest": bytes([i % 256]) * 32,
             "at": at + timedelta(microseconds=i), "flag": i % 2 == 0} for i in range(n)]


def _read(engine: Engine, table: Table) -> list[tuple[object, ...]]:
    with read_session(engine) as s:
        return [tuple(r) for r in s.execute(select(table).order_by(table.c.uid))]


def test_inserted_rows_read_back_as_sqlalchemy_stores_them(engine: Engine) -> None:
    rows = _rows(7)
    with write_session(engine) as s:
        DirectStatement(THINGS.insert()).execute_many(s.connection(), rows)
        s.connection().execute(TWINS.insert(), rows)
    mine, theirs = _read(engine, THINGS), _read(engine, TWINS)
    assert mine == theirs
    assert len(mine) == 7 and mine[0][5] is True and mine[1][5] is False  # Booleans, not 0/1
    stored = mine[1][4]
    assert (stored if stored.tzinfo else stored.replace(tzinfo=UTC)) == rows[1]["at"]  # SQLite gives UTC back naive


def test_a_constant_default_is_filled_and_a_computed_one_must_be_given(engine: Engine) -> None:
    row = {k: v for k, v in _rows(1)[0].items() if k != "flag"}
    with write_session(engine) as s:
        DirectStatement(THINGS.insert()).execute(s.connection(), row)
    assert _read(engine, THINGS)[0][5] is False
    with write_session(engine) as s, pytest.raises(exc.ArgumentError, match="must give 'made'"):
        DirectStatement(STAMPED.insert()).execute(s.connection(), {"uid": "1.2.3"})
    assert _read(engine, STAMPED) == []  # refused before anything ran: never a NULL where a default was meant


def test_selected_values_pass_the_result_processors(engine: Engine) -> None:
    with write_session(engine) as s:
        s.connection().execute(THINGS.insert(), _rows(3))
    one = DirectStatement(select(THINGS.c.flag, THINGS.c.digest, THINGS.c.n).where(THINGS.c.uid == bindparam("uid")))
    with read_session(engine) as s:
        row = one.first(s.connection(), {"uid": "1.2.0"})
        assert row == (True, b"\x00" * 32, 2**40) and row[0] is True  # a bool, not SQLite's 1
        assert one.first(s.connection(), {"uid": "1.2.9"}) is None
        assert DirectStatement(select(func.max(THINGS.c.n))).scalar(s.connection()) == 2**40 + 2


@pytest.mark.parametrize("count", [1, 3, MAX_LIST, MAX_LIST * 2 + 5])
def test_an_expanding_list_of_any_length_selects_and_deletes_every_match(engine: Engine, count: int) -> None:
    rows = _rows(count + 4)
    with write_session(engine) as s:
        s.connection().execute(THINGS.insert(), rows)
    wanted = [str(r["uid"]) for r in rows[:count]] + ["9.9.9"]  # one that is not there
    pick = DirectStatement(select(THINGS.c.uid).where(THINGS.c.uid.in_(bindparam("uids", expanding=True))), expanding="uids")
    drop = DirectStatement(THINGS.delete().where(THINGS.c.uid.in_(bindparam("uids", expanding=True))), expanding="uids")
    with read_session(engine) as s:
        assert sorted(u for (u,) in pick.all(s.connection(), {"uids": wanted})) == sorted(wanted[:-1])
    with write_session(engine) as s:
        assert drop.execute(s.connection(), {"uids": wanted}) == count
    assert [r[0] for r in _read(engine, THINGS)] == sorted(str(r["uid"]) for r in rows[count:])


def test_a_duplicate_key_raises_sqlalchemys_integrity_error_and_the_transaction_rolls_back(engine: Engine) -> None:
    insert = DirectStatement(THINGS.insert())
    with pytest.raises(exc.IntegrityError), write_session(engine) as s:
        insert.execute(s.connection(), _rows(1)[0])
        insert.execute(s.connection(), _rows(1)[0])
    assert _read(engine, THINGS) == []  # the first insert was in the same transaction: gone with it


def test_insert_ignore_keeps_the_first_row(engine: Engine) -> None:
    first, second = _rows(2)
    second = second | {"uid": first["uid"]}
    ignore = DirectStatement(lambda dialect: insert_ignore_statement(dialect, THINGS))
    with write_session(engine) as s:
        ignore.execute(s.connection(), first)
        assert ignore.execute(s.connection(), second) == 0
    assert _read(engine, THINGS)[0][1] == first["n"]


def test_values_are_bound_never_spliced_into_the_sql(engine: Engine) -> None:
    hostile = "x'); DROP TABLE direct_things; --"
    with write_session(engine) as s:
        DirectStatement(THINGS.insert()).execute(s.connection(), _rows(1)[0] | {"uid": hostile})
    assert _read(engine, THINGS)[0][0] == hostile


def test_it_runs_inside_the_sessions_transaction(engine: Engine) -> None:
    with Session(bind=engine) as s:
        s.begin()
        DirectStatement(THINGS.insert()).execute(s.connection(), _rows(1)[0])
        s.rollback()
    assert _read(engine, THINGS) == []


def test_a_missing_value_is_refused(engine: Engine) -> None:
    update = DirectStatement(THINGS.update().where(THINGS.c.uid == bindparam("key")).values(n=bindparam("new_n")))
    with write_session(engine) as s, pytest.raises(exc.ArgumentError, match="new_n"):
        update.execute(s.connection(), {"key": "1.2.0"})
