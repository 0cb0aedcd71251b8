"""Stored generated columns (issue 9, item 6).

pgoutput does not send generated columns (before PostgreSQL 18, and by default after). Their
expressions are immutable functions of the row, so the capture computes each value on the
source from the row's own values, exactly as the server stored it, and logs the table with
every column: each view then holds the values like any other column's.

A generated value whose inputs include an unchanged TOASTed value (not sent by the server)
cannot be computed; unless the old row supplies the input (REPLICA IDENTITY FULL) it is
logged as unchanged, and the view keeps the value it stores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq, sql

from syncline.core.errors import SourceError, TransientSourceError
from syncline.core.events import UNCHANGED, Row, RowChange
from syncline.sources.postgres.pgoutput import (
    RelationMessage,
    decode_change,
    encode_delete,
    encode_insert,
    encode_update,
)

log = logging.getLogger("syncline.capture")


@dataclass(frozen=True, slots=True)
class GeneratedPlan:
    """How a table's published rows become full rows."""

    message: RelationMessage
    """The relation message with the generated columns in their places."""
    sources: tuple[int, ...]
    """For each full column: the index of the published column, or -1 for a generated one."""
    generated: tuple[int, ...]
    """Full-column indexes of the generated columns, in ``query``'s output order."""
    inputs: tuple[tuple[int, ...], ...]
    """For each generated column: the full-column indexes its expression reads."""
    query: bytes
    """Evaluates every generated column from the published columns' texts ($1...)."""


def generated_plan(conn: psycopg.Connection[Any], msg: RelationMessage) -> GeneratedPlan | None:
    """The plan for ``msg``'s table, or None when it has no stored generated column."""
    try:
        rows = conn.execute(
            "SELECT a.attnum, a.attname, a.atttypid, a.atttypmod, a.attgenerated,"
            " pg_catalog.format_type(a.atttypid, a.atttypmod),"
            " pg_catalog.pg_get_expr(d.adbin, d.adrelid),"
            " ARRAY(SELECT dep.refobjsubid FROM pg_catalog.pg_depend dep"
            "   WHERE dep.refobjid = a.attrelid AND dep.refobjsubid > 0 AND dep.refobjsubid <> a.attnum"
            "   AND ((dep.classid = 'pg_catalog.pg_attrdef'::regclass AND dep.objid = d.oid)"
            "     OR (dep.classid = 'pg_catalog.pg_class'::regclass AND dep.objid = a.attrelid"
            "       AND dep.objsubid = a.attnum)))"
            " FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_attrdef d"
            "   ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (msg.oid,),
        ).fetchall()
    except psycopg.OperationalError as e:
        raise TransientSourceError(f"catalogue lookup failed: {e}") from e
    if not any(r[4] == "s" for r in rows):
        return None
    published = [c[1] for c in msg.columns]
    plain = [str(r[1]) for r in rows if r[4] != "s"]
    if published == [str(r[1]) for r in rows]:
        return None  # PostgreSQL 18+ with publish_generated_columns = stored sent them
    if plain != published:
        # the catalogue has moved on since this message: keep the message as it is
        log.warning(
            "%s.%s: columns changed since; its generated columns are not logged", msg.schema, msg.name
        )
        return None
    columns: list[tuple[int, str, int, int]] = []
    sources: list[int] = []
    generated: list[int] = []
    inputs: list[tuple[int, ...]] = []
    exprs: list[str] = []
    by_attnum: dict[int, int] = {}
    for attnum, name, typ, typmod, gen, _fmt, expr, deps in rows:
        by_attnum[int(attnum)] = len(columns)
        if gen == "s":
            generated.append(len(columns))
            sources.append(-1)
            exprs.append(f"({expr})::{_fmt}")
            inputs.append(tuple(int(d) for d in deps))  # attnums for now
            columns.append((1 if msg.replident == "f" else 0, str(name), int(typ), int(typmod)))
        else:
            sources.append(published.index(str(name)))
            columns.append(msg.columns[sources[-1]])
    inputs = [tuple(by_attnum[a] for a in deps if a in by_attnum) for deps in inputs]
    params = sql.SQL(", ").join(
        sql.SQL("${}::{} AS {}").format(sql.SQL(str(i + 1)), sql.SQL(str(r[5])), sql.Identifier(str(r[1])))
        for i, r in enumerate(r for r in rows if r[4] != "s")
    )
    query = sql.SQL("SELECT {} FROM (SELECT {}) AS _syncline_row").format(
        sql.SQL(", ").join(sql.SQL(e) for e in exprs), params
    )
    message = RelationMessage(msg.oid, msg.schema, msg.name, msg.replident, tuple(columns))
    return GeneratedPlan(message, tuple(sources), tuple(generated), tuple(inputs), query.as_bytes(conn))


class GeneratedColumns:
    """Per relation oid, the plan in force; rewrites change messages into full rows."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.plans: dict[int, GeneratedPlan] = {}
        self._warned: set[int] = set()

    def relation(self, msg: RelationMessage) -> RelationMessage:
        """Note ``msg``'s shape; return it with the generated columns added."""
        plan = generated_plan(self.conn, msg)
        if plan is None:
            self.plans.pop(msg.oid, None)
            return msg
        self.plans[msg.oid] = plan
        return plan.message

    def change(self, buf: bytes) -> bytes:
        """An Insert, Update or Delete message with the generated values filled in."""
        if buf[0] == 0x54 or not self.plans:
            return buf
        ch = decode_change(buf, 0)
        assert isinstance(ch, RowChange)
        plan = self.plans.get(ch.relid)
        if plan is None:
            return buf
        old_kind = bytes([buf[5]]) if ch.op != "insert" else b""
        full_old = ch.old is not None and old_kind == b"O"
        old = None
        if ch.old is not None:
            old = self._fill(plan, ch.old, None) if full_old else self._keyonly(plan, ch.old)
        if ch.op == "insert":
            assert ch.new is not None
            return encode_insert(ch.relid, self._fill(plan, ch.new, None))
        if ch.op == "delete":
            assert old is not None
            return encode_delete(ch.relid, old, old_kind)
        assert ch.new is not None
        new = self._fill(plan, ch.new, old if full_old else None)
        if old is None:
            return encode_update(ch.relid, new)
        return encode_update(ch.relid, new, old, old_kind)

    @staticmethod
    def _keyonly(plan: GeneratedPlan, row: Row) -> Row:
        return tuple(None if s < 0 else row[s] for s in plan.sources)

    def _fill(self, plan: GeneratedPlan, row: Row, old: Row | None) -> Row:
        full = [UNCHANGED if s < 0 else row[s] for s in plan.sources]
        if old is not None:  # a full old row supplies unchanged TOASTed values
            full = [o if v is UNCHANGED else v for v, o in zip(full, old, strict=True)]
        args: list[bytes | None] = []
        for i, s in enumerate(plan.sources):
            v = full[i]
            if s >= 0:
                args.append(v.encode() if isinstance(v, str) else None)
        res = self.conn.pgconn.exec_params(plan.query, args, result_format=0)
        if res.status != pq.ExecStatus.TUPLES_OK:
            msg = (res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"").decode(errors="replace")
            raise SourceError(
                f"cannot compute the generated columns of table {plan.message.schema}."
                f"{plan.message.name}: {msg}"
            )
        for j, gi in enumerate(plan.generated):
            if any(full[i] is UNCHANGED for i in plan.inputs[j]):
                if plan.message.oid not in self._warned:
                    self._warned.add(plan.message.oid)
                    log.warning(
                        "%s.%s: a generated column reads a TOASTed value the server did not send; "
                        "views keep its stored value (REPLICA IDENTITY FULL sends it)",
                        plan.message.schema,
                        plan.message.name,
                    )
                continue  # stays UNCHANGED
            got = res.get_value(0, j)
            full[gi] = None if got is None else got.decode()
        return tuple(full)
