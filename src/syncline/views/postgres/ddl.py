"""Schema changes in the SQL replica: user types, CREATE TABLE and column diffs.

Identifiers are always quoted with :class:`psycopg.sql.Identifier`; type names are the
source's ``format_type()`` output and are composed verbatim.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from syncline.core.errors import ViewError
from syncline.core.events import Relation, UserType
from syncline.core.renames import column_renames

Cur = psycopg.Cursor[tuple[Any, ...]]
_shape_counter = itertools.count()


def type_sql(type_name: str) -> sql.SQL:
    """A type name as the source's ``format_type()`` printed it (already quoted there)."""
    return sql.SQL(type_name)


def _type_exists(cur: Cur, ut: UserType) -> bool:
    cur.execute(
        "SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE n.nspname = %s AND t.typname = %s",
        (ut.schema, ut.name),
    )
    return cur.fetchone() is not None


def _enum_labels(cur: Cur, ut: UserType) -> list[str]:
    cur.execute(
        "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid"
        " JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE n.nspname = %s AND t.typname = %s ORDER BY e.enumsortorder",
        (ut.schema, ut.name),
    )
    return [str(r[0]) for r in cur.fetchall()]


class MissingExtension(ViewError):
    """The replica lacks an extension a source column's type comes from (fixable there)."""

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            fixable=True,
            action="do what the error says in the replica; syncline retries by itself with back-off",
        )


def create_extension(cur: Cur, ut: UserType) -> None:
    """Create the extension that brings type ``ut`` (kind ``x``, ``base`` = extension), in
    the schema the source has it in; a clear error when the server does not ship it."""
    cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", (ut.base,))
    if cur.fetchone() is None:
        raise MissingExtension(
            f"type {ut.schema}.{ut.name} comes from extension {ut.base!r}, which the replica's "
            f"server does not have: install it there (for hstore, citext, ltree, cube: "
            f"PostgreSQL's contrib package), then CREATE EXTENSION {ut.base} SCHEMA {ut.schema} "
            "in the replica database"
        )
    cur.execute(sql.SQL("SELECT 1 FROM pg_extension WHERE extname = %s"), (ut.base,))
    if cur.fetchone() is not None:
        raise MissingExtension(
            f"type {ut.schema}.{ut.name} comes from extension {ut.base!r}, which the replica has "
            f"in another schema: ALTER EXTENSION {ut.base} SET SCHEMA {ut.schema} in the replica"
        )
    cur.execute(
        sql.SQL("CREATE EXTENSION IF NOT EXISTS {} SCHEMA {}").format(
            sql.Identifier(ut.base), sql.Identifier(ut.schema)
        )
    )


def set_sequences(cur: Cur, seqs: dict[str, Any]) -> None:
    """Create the source's sequences the replica lacks and set each to the source's last
    value (``schema.name`` -> [data type, last value]), so the replica can be promoted."""
    for q, (typ, value) in sorted(seqs.items()):
        typ = typ if typ in ("smallint", "integer", "bigint") else "bigint"
        schema, _, name = q.partition(".")
        ident = sql.Identifier(schema, name)
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        cur.execute(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {} AS {}").format(ident, sql.SQL(typ)))
        cur.execute("SELECT pg_catalog.setval(%s::regclass, %s::bigint, true)", (ident.as_string(cur), value))


def add_enum_labels(cur: Cur, wanted: dict[tuple[str, str], set[str]]) -> list[str]:
    """Add the labels of ``wanted`` (enum schema, name -> labels the rows use) that the
    replica's enums lack, after their last label (pgoutput does not announce labels added
    on the source). Returns the labels added, as ``schema.enum.label``; commit before use."""
    added = []
    for (schema, name), labels in wanted.items():
        have = set(_enum_labels(cur, UserType(schema, name, "e")))
        for label in sorted(labels - have):
            cur.execute(
                sql.SQL("ALTER TYPE {} ADD VALUE IF NOT EXISTS {}").format(
                    sql.Identifier(schema, name), sql.Literal(label)
                )
            )
            added.append(f"{schema}.{name}.{label}")
    return added


def ensure_user_types(cur: Cur, types: Iterable[UserType]) -> bool:
    """Create the user types that do not exist yet (in the given order: dependencies first)
    and add enum labels the replica lacks. Returns True when something was changed.

    Run this in its own transaction: a new enum label cannot be used in the transaction
    that added it.
    """
    changed = False
    latest: dict[tuple[str, str], UserType] = {}
    for ut in types:  # first occurrence fixes the order, the last one the definition
        latest[(ut.schema, ut.name)] = ut
    for ut in latest.values():
        ident = sql.Identifier(ut.schema, ut.name)
        if _type_exists(cur, ut):
            if ut.kind == "e":
                have = _enum_labels(cur, ut)
                pos: sql.Composable
                for i, label in enumerate(ut.labels):
                    if label in have:
                        continue
                    if i > 0:
                        pos = sql.SQL(" AFTER {}").format(sql.Literal(ut.labels[i - 1]))
                    elif have:
                        pos = sql.SQL(" BEFORE {}").format(sql.Literal(have[0]))
                    else:
                        pos = sql.SQL("")
                    cur.execute(
                        sql.SQL("ALTER TYPE {} ADD VALUE IF NOT EXISTS {}{}").format(
                            ident, sql.Literal(label), pos
                        )
                    )
                    have.append(label)
                    changed = True
            continue
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(ut.schema)))
        if ut.kind == "x":
            create_extension(cur, ut)
            changed = True
            continue
        if ut.kind == "e":
            stmt = sql.SQL("CREATE TYPE {} AS ENUM ({})").format(
                ident, sql.SQL(", ").join(sql.Literal(x) for x in ut.labels)
            )
        elif ut.kind == "c":
            stmt = sql.SQL("CREATE TYPE {} AS ({})").format(
                ident,
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(a), type_sql(t)) for a, t in ut.attributes
                ),
            )
        elif ut.kind == "d":
            stmt = sql.SQL("CREATE DOMAIN {} AS {}").format(ident, type_sql(ut.base))
        elif ut.kind == "r":
            stmt = sql.SQL("CREATE TYPE {} AS RANGE (subtype = {})").format(
                ident,
                type_sql(ut.base),
            )
        else:
            raise ValueError(f"unsupported user type kind {ut.kind!r} for {ut.schema}.{ut.name}")
        cur.execute(stmt)
        changed = True
    return changed


def table_exists(cur: Cur, schema: str, name: str) -> bool:
    cur.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, name),
    )
    return cur.fetchone() is not None


def _column_defs(rel: Relation) -> sql.Composed:
    parts: list[sql.Composable] = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), type_sql(c.type_name)) for c in rel.columns
    ]
    if rel.key:
        parts.append(
            sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in rel.key))
        )
    return sql.SQL(", ").join(parts)


def create_table(cur: Cur, rel: Relation) -> None:
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(rel.schema)))
    cur.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            sql.Identifier(rel.schema, rel.name), _column_defs(rel)
        )
    )


def drop_table(cur: Cur, schema: str, name: str) -> None:
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, name)))


def rename_table(cur: Cur, old: Relation, new: Relation) -> None:
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(new.schema)))
    if old.schema != new.schema:
        cur.execute(
            sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                sql.Identifier(old.schema, old.name), sql.Identifier(new.schema)
            )
        )
    if old.name != new.name:
        cur.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(new.schema, old.name), sql.Identifier(new.name)
            )
        )


def _attributes(cur: Cur, regclass: str) -> list[tuple[str, int, int]]:
    cur.execute(
        "SELECT attname, atttypid::bigint, atttypmod FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (regclass,),
    )
    return [(str(r[0]), int(r[1]), int(r[2])) for r in cur.fetchall()]


def _primary_key(cur: Cur, regclass: str) -> tuple[str | None, tuple[str, ...]]:
    cur.execute(
        "SELECT c.conname, array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i)"
        " FROM pg_constraint c WHERE c.conrelid = %s::regclass AND c.contype = 'p'",
        (regclass,),
    )
    row = cur.fetchone()
    if row is None:
        return None, ()
    return str(row[0]), tuple(str(x) for x in row[1])


def alter_table(cur: Cur, old: Relation | None, new: Relation) -> None:
    """Bring the existing replica table ``new.schema.new.name`` to ``new``'s shape, comparing
    with the replica's catalogue (types compared by oid and typmod, not by spelling)."""
    target = sql.Identifier(new.schema, new.name)
    regclass = target.as_string(cur)
    actual = _attributes(cur, regclass)
    # The desired types as this server resolves them: an empty temp table of that shape.
    shape = f"_syncline_shape_{next(_shape_counter)}"
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
            sql.Identifier(shape),
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c.name), type_sql(c.type_name)) for c in new.columns
            ),
        )
    )
    desired = _attributes(cur, sql.Identifier(shape).as_string(cur))
    cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(shape)))

    def alter(action: sql.Composable) -> None:
        cur.execute(sql.SQL("ALTER TABLE {} ").format(target) + action)

    actual_names = [a[0] for a in actual]
    desired_names = [c.name for c in new.columns]
    # Renames: pgoutput sends no attnum; core.renames tells a renamed column from a dropped
    # and an added one (a renamed column keeps its place, an added one comes last).
    if old is not None:
        for oname, nname in column_renames(old.columns, new.columns).items():
            if oname in actual_names and nname not in actual_names and oname not in desired_names:
                alter(sql.SQL("RENAME COLUMN {} TO {}").format(sql.Identifier(oname), sql.Identifier(nname)))
                actual_names[actual_names.index(oname)] = nname
        actual = [(n, t, m) for n, (_, t, m) in zip(actual_names, actual, strict=True)]

    pk_name, pk_cols = _primary_key(cur, regclass)
    pk_changed = pk_cols != new.key
    if pk_changed and pk_name is not None:
        alter(sql.SQL("DROP CONSTRAINT {}").format(sql.Identifier(pk_name)))
        for k in pk_cols:
            if k in desired_names and k not in new.key:
                alter(sql.SQL("ALTER COLUMN {} DROP NOT NULL").format(sql.Identifier(k)))
    for name, _, _ in actual:
        if name not in desired_names:
            alter(sql.SQL("DROP COLUMN {}").format(sql.Identifier(name)))
    have = {n: (t, m) for n, t, m in actual}
    for col, (_, typid, typmod) in zip(new.columns, desired, strict=True):
        ident = sql.Identifier(col.name)
        tname = type_sql(col.type_name)
        if col.name not in have:
            alter(sql.SQL("ADD COLUMN {} {}").format(ident, tname))
        elif have[col.name] != (typid, typmod):
            alter(sql.SQL("ALTER COLUMN {} TYPE {} USING {}::text::{}").format(ident, tname, ident, tname))
    if pk_changed and new.key:
        alter(sql.SQL("ADD PRIMARY KEY ({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in new.key)))
