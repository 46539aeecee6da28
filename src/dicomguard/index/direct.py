"""Statements of the per-object write path, run on the transaction's DBAPI cursor (ADR 0024).

Every stored object runs about a dozen statements in its index transaction (its row, the journal release, the
ledger append and checkpoint, the audit record). Through SQLAlchemy Core each costs 50-190 µs of interpreter work
on this project's machines (cache key, execution context, result set-up; an expanding ``IN`` is rendered again
on every run), while SQLite's own work is 2-20 µs. A :class:`DirectStatement` is compiled by SQLAlchemy once per
dialect (and per length of its list parameter) and then run on the DBAPI cursor of the same connection, inside
the same transaction, with the same conversions:

* parameters pass the dialect's bind processors of their types, as SQLAlchemy would apply them, and an insert
  fills the scalar defaults of the columns it does not set; a column with a callable or SQL default that the
  caller leaves out is refused when the statement is compiled, never silently stored as NULL;
* result values pass the dialect's result processors (a SQLite Boolean comes back as ``bool``);
* a DBAPI error is raised as SQLAlchemy's exception of the same kind (``IntegrityError``, ...), so callers that
  catch a unique-key race keep working unchanged.

Nothing here builds SQL from values: the text is SQLAlchemy's compilation of a fixed statement, and every value
is a bound parameter of the driver.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, Insert

Processor = Callable[[Any], Any]
_NAMED = re.compile(r"%\((\w+)\)s")
MAX_LIST = 64
"""Longest list bound to an expanding parameter in one run: longer lists run in chunks, so a statement has at most
this many compiled variants per dialect."""


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    """Bind names in the order the driver takes them (the keys of a named paramstyle)."""
    positional: bool
    fixed: dict[str, Any]
    """Values bound in the statement itself (``id == 1``) and scalar column defaults."""
    bind: dict[str, Processor]
    results: tuple[Processor | None, ...]
    dialect: Dialect

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        merged = self.fixed | dict(values) if self.fixed else values
        try:
            if self.positional:
                bind = self.bind
                return tuple(bind[n](merged[n]) if n in bind else merged[n] for n in self.names)
            return {n: (self.bind[n](merged[n]) if n in self.bind else merged[n]) for n in self.names}
        except KeyError as missing:
            raise exc.ArgumentError(f"no value for bind parameter {missing.args[0]!r}") from None

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(value if p is None or value is None else p(value) for p, value in zip(self.results, raw, strict=True))


class DirectStatement:
    """A fixed Core statement run on the DBAPI cursor of a :class:`~sqlalchemy.Connection` (see the module).

    ``expanding``: the name of the statement's one expanding ``IN`` parameter, if it has one; the statement is
    then compiled once per list length. Inserts are compiled once per set of columns given.
    """

    def __init__(self, statement: ClauseElement | Callable[[str], ClauseElement], expanding: str | None = None) -> None:
        self._statement = statement
        self._expanding = expanding
        self._compiled: dict[tuple[str, object], _Compiled] = {}
        self._lock = threading.Lock()

    # -- running ------------------------------------------------------------------------------

    def execute(self, conn: Connection, values: Mapping[str, Any] | None = None) -> int:
        """Run once (a long list parameter: once per chunk); the number of rows it changed."""
        values = values or {}
        if self._too_long(values):
            return sum(self.execute(conn, part) for part in self._chunks(values))
        compiled, cursor = self._execute(conn, values)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run once per row (``executemany``); every row gives the same keys."""
        if not rows:
            return
        compiled = self._get(conn.dialect, rows[0])
        params = [compiled.parameters(r) for r in rows]
        self._run(conn, compiled, lambda cur, sql: cur.executemany(sql, params)).close()

    def all(self, conn: Connection, values: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        values = values or {}
        if self._too_long(values):
            return [row for part in self._chunks(values) for row in self.all(conn, part)]
        compiled, cursor = self._execute(conn, values)
        try:
            return [compiled.row(r) for r in cursor.fetchall()]
        finally:
            cursor.close()

    def first(self, conn: Connection, values: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        rows = self.all(conn, values)
        return rows[0] if rows else None

    def scalar(self, conn: Connection, values: Mapping[str, Any] | None = None) -> Any:
        row = self.first(conn, values)
        return row[0] if row is not None else None

    def _execute(self, conn: Connection, values: Mapping[str, Any]) -> tuple[_Compiled, Any]:
        """One run with ``values`` (a list parameter no longer than :data:`MAX_LIST`): the compiled form and its open cursor."""
        compiled = self._get(conn.dialect, values)
        params = compiled.parameters(self._expand(values))
        return compiled, self._run(conn, compiled, lambda cur, sql: cur.execute(sql, params))

    @staticmethod
    def _run(conn: Connection, compiled: _Compiled, call: Callable[[Any, str], Any]) -> Any:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None, "the connection is closed"
        cursor = dbapi.cursor()
        try:
            call(cursor, compiled.sql)
        except compiled.dialect.loaded_dbapi.Error as error:
            cursor.close()
            raise exc.DBAPIError.instance(compiled.sql, None, error, compiled.dialect.loaded_dbapi.Error,
                                          dialect=compiled.dialect) from error
        except BaseException:
            cursor.close()
            raise
        return cursor

    def _too_long(self, values: Mapping[str, Any]) -> bool:
        return self._expanding is not None and len(values[self._expanding]) > MAX_LIST

    def _chunks(self, values: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
        assert self._expanding is not None
        items = list(values[self._expanding])
        for i in range(0, len(items), MAX_LIST):
            yield {**values, self._expanding: items[i:i + MAX_LIST]}

    def _expand(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        if self._expanding is None:
            return values
        items = values[self._expanding]
        expanded = {k: v for k, v in values.items() if k != self._expanding}
        expanded.update({f"{self._expanding}_{i}": v for i, v in enumerate(items, 1)})
        return expanded

    # -- compiling ------------------------------------------------------------------------------

    def _get(self, dialect: Dialect, values: Mapping[str, Any]) -> _Compiled:
        if self._expanding is not None:
            variant: object = len(values[self._expanding])
        elif self._is_insert(dialect.name):
            variant = frozenset(values)
        else:
            variant = None
        key = (dialect.name, variant)
        found = self._compiled.get(key)
        if found is None:
            with self._lock:
                found = self._compiled.get(key) or self._compile(dialect, values)
                self._compiled[key] = found
        return found

    def _base(self, dialect_name: str) -> ClauseElement:
        return self._statement(dialect_name) if callable(self._statement) else self._statement

    def _is_insert(self, dialect_name: str) -> bool:
        return isinstance(self._base(dialect_name), Insert)

    def _compile(self, dialect: Dialect, values: Mapping[str, Any]) -> _Compiled:
        statement = self._base(dialect.name)
        fixed: dict[str, Any] = {}
        sql: str | None = None
        order: Sequence[str] | None = None
        if self._expanding is not None:
            n = len(values[self._expanding])
            if n == 0:
                raise exc.ArgumentError(f"{self._expanding}: an empty list")
            compiled = statement.compile(dialect=dialect)
            state = compiled.construct_expanded_state({**values, self._expanding: [None] * n})
            sql, order = state.statement, state.positiontup
        elif isinstance(statement, Insert):
            compiled = statement.compile(dialect=dialect, column_keys=list(values))
            fixed = _insert_defaults(statement, set(values), compiled.binds)
        else:
            compiled = statement.compile(dialect=dialect)
        sql = sql if sql is not None else compiled.string
        positional = bool(dialect.positional)
        if positional:
            names = tuple(order if order is not None else compiled.positiontup or ())
        else:
            names = tuple(dict.fromkeys(_NAMED.findall(sql)))
        expanded = {f"{self._expanding}_{i}" for i in range(1, len(values[self._expanding]) + 1)} if self._expanding else set()
        bind: dict[str, Processor] = {}
        for name in names:
            param = compiled.binds[self._expanding] if name in expanded else compiled.binds.get(name)
            if param is None:
                raise exc.ArgumentError(f"bind parameter {name!r} is not the statement's")
            if not param.required and name not in values and name not in expanded:
                fixed.setdefault(name, param.effective_value)
            process = param.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                bind[name] = process
        results: tuple[Processor | None, ...] = ()
        selected = getattr(statement, "selected_columns", None)
        if selected is not None:
            results = tuple(col.type.dialect_impl(dialect).result_processor(dialect, None) for col in selected)
        return _Compiled(sql, names, positional, fixed, bind, results, dialect)


def _insert_defaults(statement: Insert, given: set[str], binds: Iterable[str]) -> dict[str, Any]:
    """The scalar defaults of the columns an insert sets without being given them; any other default is refused."""
    table = statement.table
    fixed: dict[str, Any] = {}
    for name in binds:
        if name in given:
            continue
        column = table.c.get(name)  # type: ignore[attr-defined]
        default = getattr(column, "default", None)
        if column is None or default is None or not getattr(default, "is_scalar", False):
            raise exc.ArgumentError(f"{table}: a direct insert must give {name!r} (its default is not a constant)")
        fixed[name] = default.arg
    return fixed
