"""Catalogue queries on an ordinary connection: pre-flight checks, table discovery, the
publication, slot state, and relation details (type names, primary keys, user types)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from syncline.core.errors import SourceError, SourceUnreachable, TransientSourceError, first_line
from syncline.core.events import Column, Relation, UserType
from syncline.core.patterns import table_selected
from syncline.sources.postgres.pgoutput import RelationMessage
from syncline.sources.postgres.replication import session_conninfo

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "_syncline")


def connect(dsn: str, autocommit: bool = True) -> psycopg.Connection[Any]:
    try:
        conn = psycopg.connect(session_conninfo(dsn), autocommit=autocommit)
    except psycopg.OperationalError as e:
        raise SourceUnreachable(f"cannot connect to the source database: {first_line(e)}") from e
    conn.execute("SET search_path = ''")
    return conn


@dataclass(frozen=True, slots=True)
class ServerInfo:
    version: int
    wal_level: str
    superuser: bool
    replication: bool
    encoding: str
    database: str
    user: str


def server_info(conn: psycopg.Connection[Any]) -> ServerInfo:
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('wal_level'),"
        " r.rolsuper, r.rolreplication, pg_encoding_to_char(d.encoding), current_database(),"
        " current_user FROM pg_catalog.pg_roles r, pg_catalog.pg_database d"
        " WHERE r.rolname = current_user AND d.datname = current_database()"
    ).fetchone()
    assert row is not None
    return ServerInfo(
        int(row[0]),
        str(row[1]),
        bool(row[2]),
        bool(row[3]),
        str(row[4]),
        str(row[5]),
        str(row[6]),
    )


def check_server(info: ServerInfo, allow_superuser: bool | None = None) -> None:
    if info.superuser and allow_superuser is False:
        raise SourceError(
            f"role {info.user!r} is a superuser and source.allow_superuser = false: connect as a role "
            "with REPLICATION and SELECT on the tables (README, Security: the least-privileged role)"
        )
    if info.wal_level != "logical":
        raise SourceError(
            f"wal_level is '{info.wal_level}' on the source; logical decoding needs "
            "wal_level = logical (ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL)"
        )
    if not (info.superuser or info.replication):
        raise SourceError(
            f"role {info.user!r} lacks the REPLICATION attribute (ALTER ROLE {info.user} WITH REPLICATION)"
        )
    if info.encoding != "UTF8":
        raise SourceError(f"source database encoding is {info.encoding}; syncline needs UTF8")
    if info.version < 130000:
        raise SourceError(
            f"PostgreSQL 13 or newer is required (the source runs {info.version // 10000}); "
            "15, 16 and 18 are tested"
        )


@dataclass(frozen=True, slots=True)
class TableInfo:
    oid: int
    schema: str
    name: str
    relkind: str
    replident: str
    has_pk: bool
    can_select: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def discover_tables(conn: psycopg.Connection[Any], patterns: tuple[str, ...]) -> list[TableInfo]:
    rows = conn.execute(
        "SELECT c.oid, n.nspname, c.relname, c.relkind, c.relreplident,"
        " EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid"
        "   AND i.indisprimary),"
        " pg_catalog.has_table_privilege(c.oid, 'SELECT')"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p'"
        " AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%'"
        " ORDER BY n.nspname, c.relname",
        (list(SYSTEM_SCHEMAS),),
    ).fetchall()
    out = []
    for oid, schema, name, relkind, ri, has_pk, sel in rows:
        q = f"{schema}.{name}"
        if table_selected(patterns, q):
            out.append(
                TableInfo(
                    int(oid),
                    str(schema),
                    str(name),
                    str(relkind),
                    str(ri),
                    bool(has_pk),
                    bool(sel),
                )
            )
    return out


def catalogue_mark(conn: psycopg.Connection[Any], tables: list[TableInfo]) -> str:
    """A digest of what the capture's catalogue poll acts on for ``tables`` (those
    :func:`discover_tables` found): their names, keys and privileges, their columns (names,
    types, defaults, enum labels) and their partitions. The poll publishes the mark it has
    acted on; ``wait`` compares it with the catalogue's mark of now: equal, every DDL that
    rewrote, dropped or renamed before the wait is in the stream or in a queued copy."""
    oids = sorted(t.oid for t in tables)
    if not oids:
        return "none"
    row = conn.execute(  # digested by the server: one row back, however many columns
        "SELECT md5(coalesce(string_agg(line, E'\\n' ORDER BY rel, num, sub), '')) FROM ("
        " SELECT a.attrelid::bigint AS rel, a.attnum::bigint AS num, 0::bigint AS sub,"
        "  a.attrelid || ' ' || a.attnum || ' ' || a.atttypid || ' ' || a.atttypmod || ' '"
        "  || (a.atthasdef OR a.atthasmissing) || ' ' || quote_literal(a.attname)"
        "  || coalesce(' ' || e.labels, '') AS line"
        " FROM pg_catalog.pg_attribute a LEFT JOIN ("
        "  SELECT enumtypid, string_agg(quote_literal(enumlabel), ',' ORDER BY enumsortorder) AS labels"
        "  FROM pg_catalog.pg_enum GROUP BY enumtypid) e ON e.enumtypid = a.atttypid"
        " WHERE a.attrelid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped"
        " UNION ALL ("
        "  WITH RECURSIVE tree (root, relid) AS ("
        "   SELECT r.oid, r.oid FROM pg_catalog.pg_class r WHERE r.oid = ANY(%(oids)s) AND r.relkind = 'p'"
        "   UNION ALL SELECT t.root, i.inhrelid FROM tree t"
        "   JOIN pg_catalog.pg_inherits i ON i.inhparent = t.relid)"
        "  SELECT root::bigint, -1, relid::bigint, 'part ' || root || ' ' || relid FROM tree)) x",
        {"oids": oids},
    ).fetchone()
    h = hashlib.sha256()
    for t in sorted(tables, key=lambda t: t.oid):
        h.update(repr(("table", t.oid, t.qualified, t.relkind, t.replident, t.has_pk, t.can_select)).encode())
    h.update(str(row[0] if row else "").encode())
    return h.hexdigest()[:32]


def table_info(conn: psycopg.Connection[Any], oid: int) -> TableInfo | None:
    """The table ``oid`` as the catalogue has it now (None: gone)."""
    row = conn.execute(
        "SELECT c.oid, n.nspname, c.relname, c.relkind, c.relreplident,"
        " EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),"
        " pg_catalog.has_table_privilege(c.oid, 'SELECT')"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = %s",
        (oid,),
    ).fetchone()
    if row is None:
        return None
    return TableInfo(
        int(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), bool(row[5]), bool(row[6])
    )


def table_columns(conn: psycopg.Connection[Any], tables: list[TableInfo]) -> dict[str, list[str]]:
    """Column names of ``tables`` by ``schema.table`` (in column order)."""
    rows = conn.execute(
        "SELECT attrelid, attname FROM pg_catalog.pg_attribute"
        " WHERE attrelid = ANY(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attrelid, attnum",
        ([t.oid for t in tables],),
    ).fetchall()
    by_oid: dict[int, list[str]] = {t.oid: [] for t in tables}
    for oid, name in rows:
        by_oid[int(oid)].append(str(name))
    return {t.qualified: by_oid[t.oid] for t in tables}


def check_tables(tables: list[TableInfo]) -> None:
    problems = []
    for t in tables:
        if t.replident == "n":
            problems.append(
                f"table {t.qualified} has REPLICA IDENTITY NOTHING: updates and deletes cannot "
                f"be captured (ALTER TABLE {t.qualified} REPLICA IDENTITY DEFAULT, with a "
                "primary key, or FULL)"
            )
        elif t.replident == "d" and not t.has_pk:
            problems.append(
                f"table {t.qualified} has no primary key: add one, or set "
                f"ALTER TABLE {t.qualified} REPLICA IDENTITY FULL"
            )
        if not t.can_select:
            problems.append(f"no SELECT privilege on table {t.qualified} (needed for the snapshot)")
    if problems:
        raise SourceError("; ".join(problems))


def publication_tables(conn: psycopg.Connection[Any], name: str) -> set[str] | None:
    row = conn.execute(
        "SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = %s", (name,)
    ).fetchone()
    if row is None:
        return None
    rows = conn.execute(
        "SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = %s",
        (name,),
    ).fetchall()
    return {f"{s}.{t}" for s, t in rows}


def ensure_publication(
    conn: psycopg.Connection[Any],
    name: str,
    tables: list[TableInfo],
    version: int,
) -> list[str]:
    """Create the publication for ``tables`` (via partition roots), or add/remove tables so
    that it publishes exactly them. Returns the tables added to an existing publication."""
    existing = publication_tables(conn, name)
    # ONLY: an inheritance parent's children are tables of their own
    idents = sql.SQL(", ").join(
        sql.SQL("{}{}").format(sql.SQL("" if t.relkind == "p" else "ONLY "), sql.Identifier(t.schema, t.name))
        for t in tables
    )
    opts = sql.SQL(" WITH (publish_via_partition_root = true)") if version >= 130000 else sql.SQL("")
    if version >= 180000:
        # PostgreSQL 18 refuses updates of a REPLICA IDENTITY FULL table whose generated
        # columns its publications do not publish; published, they need no computing.
        opts = sql.SQL(" WITH (publish_via_partition_root = true, publish_generated_columns = stored)")
    try:
        if existing is None:
            what = sql.SQL(" FOR TABLE {}").format(idents) if tables else sql.SQL("")
            conn.execute(sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(name)) + what + opts)
        else:
            if version >= 180000:
                row = conn.execute(
                    "SELECT pubgencols::text FROM pg_catalog.pg_publication WHERE pubname = %s", (name,)
                ).fetchone()
                if row is not None and row[0] != "s":
                    conn.execute(
                        sql.SQL("ALTER PUBLICATION {} SET (publish_generated_columns = stored)").format(
                            sql.Identifier(name)
                        )
                    )
            if existing != {t.qualified for t in tables} and tables:
                conn.execute(
                    sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(sql.Identifier(name), idents)
                )
                return sorted({t.qualified for t in tables} - existing)
    except psycopg.errors.InsufficientPrivilege as e:
        raise SourceError(
            f"cannot create or alter publication {name!r}: {first_line(e)} (a superuser can create it:"
            f" CREATE PUBLICATION {name} FOR TABLE ... WITH (publish_via_partition_root = true))"
        ) from e
    return []


@dataclass(frozen=True, slots=True)
class SlotInfo:
    name: str
    plugin: str
    database: str
    active_pid: int | None
    confirmed_flush: int
    restart_lsn: int
    wal_status: str


def slot_info(conn: psycopg.Connection[Any], name: str) -> SlotInfo | None:
    row = conn.execute(
        "SELECT slot_name, coalesce(plugin, ''), coalesce(database, ''), active_pid,"
        " coalesce(confirmed_flush_lsn - '0/0', 0)::bigint,"
        " coalesce(restart_lsn - '0/0', 0)::bigint,"
        " coalesce(wal_status, '') FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
        (name,),
    ).fetchone()
    if row is None:
        return None
    return SlotInfo(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        int(row[3]) if row[3] is not None else None,
        int(row[4]),
        int(row[5]),
        str(row[6]),
    )


# --- relation details ---------------------------------------------------------------------


# An index's key columns are (i.indkey::int2[])[0:i.indnkeyatts - 1]: ``indkey`` also lists
# its INCLUDE columns, which are stored in the index but are not part of its key.


class RelationCatalog:
    """Builds :class:`Relation` objects from Relation messages or table oids."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._types: dict[tuple[int, int], tuple[str, str, str, str]] = {}
        self._cache: dict[tuple[RelationMessage, tuple[str, ...]], Relation] = {}

    def primary_key(self, oid: int) -> tuple[str, ...]:
        rows = self.conn.execute(
            "SELECT a.attname FROM pg_catalog.pg_index i"
            " JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid"
            "  AND a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1])"
            " WHERE i.indrelid = %s AND i.indisprimary"
            " ORDER BY array_position((i.indkey::int2[])[0:i.indnkeyatts - 1], a.attnum)",
            (oid,),
        ).fetchall()
        return tuple(str(r[0]) for r in rows)

    def _type(self, oid: int, typmod: int) -> tuple[str, str, str, str]:
        """(type_name, category, element, base) with domains resolved."""
        key = (oid, typmod)
        hit = self._types.get(key)
        if hit is not None:
            return hit
        row = self.conn.execute(
            "SELECT pg_catalog.format_type(t.oid, %s), t.typtype, t.typcategory, t.typbasetype,"
            " t.typtypmod, t.typelem FROM pg_catalog.pg_type t WHERE t.oid = %s",
            (typmod if typmod != -1 else None, oid),
        ).fetchone()
        if row is None:
            res = (f"unknown type {oid}", "X", "", "text")
        else:
            name, typtype, cat, basetype, basemod, elem = row
            if typtype == "d":
                _bname, bcat, belem, bbase = self._type(int(basetype), int(basemod))
                res = (str(name), bcat, belem, bbase)
            elif cat == "A" and elem:
                ename, _c, _e, ebase = self._type(int(elem), typmod)
                res = (
                    str(name),
                    "A",
                    ebase,
                    str(name).replace(ename, ebase, 1) if ename != ebase else str(name),
                )
            else:
                res = (str(name), str(cat), "", str(name))
        self._types[key] = res
        return res

    def user_types(self, type_oids: list[int]) -> tuple[UserType, ...]:
        """User-defined types the columns depend on, dependencies first."""
        out: list[UserType] = []
        seen: set[int] = set()

        def visit(oid: int) -> None:
            if oid in seen:
                return
            seen.add(oid)
            row = self.conn.execute(
                "SELECT n.nspname, t.typname, t.typtype, t.typelem, t.typbasetype, t.typtypmod,"
                " t.typrelid, t.typcategory FROM pg_catalog.pg_type t"
                " JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = %s",
                (oid,),
            ).fetchone()
            if row is None:
                return
            nsp, name, typtype, elem, basetype, basemod, relid, cat = row
            if cat == "A" and elem:
                visit(int(elem))
                return
            if nsp in ("pg_catalog", "information_schema"):
                return
            ext = self.conn.execute(
                "SELECT e.extname FROM pg_catalog.pg_depend d"
                " JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid"
                " WHERE d.classid = 'pg_catalog.pg_type'::regclass AND d.objid = %s"
                " AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'",
                (oid,),
            ).fetchone()
            if ext is not None:  # hstore, citext, ltree...: the extension brings it
                out.append(UserType(str(nsp), str(name), "x", base=str(ext[0])))
                return
            if typtype == "e":
                labels = tuple(
                    str(r[0])
                    for r in self.conn.execute(
                        "SELECT enumlabel FROM pg_catalog.pg_enum WHERE enumtypid = %s"
                        " ORDER BY enumsortorder",
                        (oid,),
                    )
                )
                out.append(UserType(str(nsp), str(name), "e", labels=labels))
            elif typtype == "d":
                visit(int(basetype))
                base = self.conn.execute(
                    "SELECT pg_catalog.format_type(%s, %s)",
                    (basetype, basemod if basemod != -1 else None),
                ).fetchone()
                out.append(UserType(str(nsp), str(name), "d", base=str(base[0]) if base else "text"))
            elif typtype == "c":
                attrs = self.conn.execute(
                    "SELECT attname, atttypid, pg_catalog.format_type(atttypid, atttypmod)"
                    " FROM pg_catalog.pg_attribute WHERE attrelid = %s AND attnum > 0"
                    " AND NOT attisdropped ORDER BY attnum",
                    (relid,),
                ).fetchall()
                for _n, t, _f in attrs:
                    visit(int(t))
                out.append(
                    UserType(
                        str(nsp),
                        str(name),
                        "c",
                        attributes=tuple((str(a), str(f)) for a, _t, f in attrs),
                    )
                )
            elif typtype == "r":
                sub = self.conn.execute(
                    "SELECT rngsubtype, pg_catalog.format_type(rngsubtype, NULL)"
                    " FROM pg_catalog.pg_range WHERE rngtypid = %s",
                    (oid,),
                ).fetchone()
                if sub is not None:
                    visit(int(sub[0]))
                    out.append(UserType(str(nsp), str(name), "r", base=str(sub[1])))

        for t in type_oids:
            visit(t)
        return tuple(out)

    def relation(self, msg: RelationMessage) -> Relation:
        try:
            # the primary key is not in the message (with REPLICA IDENTITY FULL or USING
            # INDEX the message stays the same when a key is added or changed)
            pk = self.primary_key(msg.oid)
        except psycopg.OperationalError as e:
            raise TransientSourceError(f"catalogue lookup failed: {first_line(e)}") from e
        hit = self._cache.get((msg, pk))
        if hit is not None:
            return hit
        try:
            cols = []
            for flags, name, typ, typmod in msg.columns:
                tname, cat, elem, base = self._type(typ, typmod)
                cols.append(Column(name, typ, typmod, tname, cat, elem, base, bool(flags & 1)))
            key = pk
            names = {c.name for c in cols}
            if not key or not set(key) <= names:
                # REPLICA IDENTITY USING INDEX: the index's (NOT NULL) columns are a key.
                # FULL without a primary key: no key; rows are matched by all their values.
                key = () if msg.replident == "f" else tuple(c.name for c in cols if c.in_identity)
            utypes = self.user_types([c.type_oid for c in cols])
        except psycopg.OperationalError as e:
            raise TransientSourceError(f"catalogue lookup failed: {first_line(e)}") from e
        rel = Relation(msg.oid, msg.schema, msg.name, msg.replident, tuple(cols), key, utypes)
        self._cache[(msg, pk)] = rel
        return rel

    def partition_root(self, oid: int) -> TableInfo | None:
        """The partitioned root of a leaf partition (None for other relations)."""
        row = self.conn.execute(
            "SELECT r.oid, n.nspname, r.relname, r.relkind, r.relreplident,"
            " EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = r.oid AND i.indisprimary)"
            " FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_class r ON r.oid = pg_catalog.pg_partition_root(c.oid)"
            " JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace"
            " WHERE c.oid = %s AND c.relispartition",
            (oid,),
        ).fetchone()
        if row is None:
            return None
        return TableInfo(int(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), bool(row[5]), True)

    def relation_message(self, table: TableInfo, generated: bool = False) -> RelationMessage:
        """The Relation message pgoutput would send for ``table``; with ``generated``, the
        stored generated columns too (as the capture logs them, see ``generated.py``)."""
        ident: set[str]
        if table.replident == "f":
            ident = set()
        elif table.replident == "i":
            rows = self.conn.execute(
                "SELECT a.attname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a"
                " ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1])"
                " WHERE i.indrelid = %s AND i.indisreplident",
                (table.oid,),
            ).fetchall()
            ident = {str(r[0]) for r in rows}
        else:
            ident = set(self.primary_key(table.oid))
        rows = self.conn.execute(
            "SELECT attname, atttypid, atttypmod FROM pg_catalog.pg_attribute"
            " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped AND (attgenerated = '' OR %s)"
            " ORDER BY attnum",
            (table.oid, generated),
        ).fetchall()
        cols = tuple(
            (1 if (table.replident == "f" or str(n) in ident) else 0, str(n), int(t), int(m))
            for n, t, m in rows
        )
        return RelationMessage(table.oid, table.schema, table.name, table.replident, cols)
