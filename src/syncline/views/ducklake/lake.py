"""Opening a DuckLake: its extensions loaded offline from their PyPI packages, the catalog
attached (for writing, for reading, or at one snapshot), and the snapshots syncline wrote.

DuckDB loads an extension only when it was built for exactly its own version, and these
machines have no internet: the extensions come from the ``duckdb-extension-*`` packages
(one per extension, each built for one DuckDB version) and are loaded by path, with
automatic downloads switched off.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncline.core.errors import ConfigError
from syncline.core.events import Checkpoint
from syncline.views.duckdb.session import open_duckdb

LAKE = "lake"
"""The name the lake is attached under in syncline's connections."""

AUTHOR = "syncline"
"""The author of every snapshot a view writes (its position is in the snapshot's extra info)."""


def is_postgres_catalog(catalog: str) -> bool:
    """A PostgreSQL DSN (URI or key=value string) rather than a SQLite file."""
    c = catalog.strip()
    return c.startswith(("postgresql://", "postgres://")) or ("=" in c and "dbname" in c)


def describe(catalog: str) -> str:
    """The catalog in words for messages (a DSN may hold a password: never shown)."""
    return "a PostgreSQL catalog" if is_postgres_catalog(catalog) else f"catalog {catalog}"


def extension_path(name: str, package: str) -> str:
    """The extension file ``name`` shipped by ``package`` for the installed DuckDB, or one
    ConfigError that says which versions differ and what to install."""
    import duckdb

    spec = importlib.util.find_spec(package)
    dist = package.replace("_", "-")
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"the DuckDB extension {name!r} is not installed: pip install 'syncline[ducklake]' "
            f"(it brings {dist} built for the DuckDB version syncline pins)"
        )
    root = Path(spec.origin).parent / "extensions"
    want = f"v{duckdb.__version__}"
    path = root / want / f"{name}.duckdb_extension"
    if path.is_file():
        return str(path)
    built = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    raise ConfigError(
        f"DuckDB {duckdb.__version__} is installed, but {dist} holds the {name!r} extension "
        f"built for DuckDB {', '.join(b.lstrip('v') for b in built) or 'no version'}: DuckDB "
        f"loads only an extension built for its own version. Install matching versions "
        f"(pip install 'syncline[ducklake]' pins them)"
    )


def connect(catalog: str, data_path: str, *, read_only: bool, snapshot: int | None = None) -> Any:
    """An in-memory DuckDB connection with the lake attached as ``lake`` and in use.

    ``snapshot``: attach the lake as it was at that snapshot (read-only)."""
    import duckdb

    con = open_duckdb(offline=True)
    try:
        pg = is_postgres_catalog(catalog)
        scanner = "postgres_scanner" if pg else "sqlite_scanner"
        con.execute(f"LOAD '{_sql_text(extension_path(scanner, 'duckdb_extension_' + scanner))}'")
        con.execute(f"LOAD '{_sql_text(extension_path('ducklake', 'duckdb_extension_ducklake'))}'")
        con.execute("SET TimeZone = 'UTC'")
        source = f"ducklake:postgres:{catalog}" if pg else f"ducklake:sqlite:{os.path.abspath(catalog)}"
        opts = [f"DATA_PATH '{_sql_text(os.path.abspath(data_path))}'"]
        if read_only or snapshot is not None:
            opts.append("READ_ONLY")
        if snapshot is not None:
            opts.append(f"SNAPSHOT_VERSION {int(snapshot)}")
        if not pg and not read_only:
            create_sqlite_catalog(catalog)
        con.execute(f"ATTACH '{_sql_text(source)}' AS {LAKE} ({', '.join(opts)})")
        con.execute(f"USE {LAKE}")
    except duckdb.Error as e:
        con.close()
        raise type(e)(scrub(str(e), catalog)) from None
    except BaseException:
        con.close()
        raise
    return con


def create_sqlite_catalog(catalog: str) -> None:
    """A new SQLite catalog file in write-ahead-log mode, before DuckLake first opens it.

    In SQLite's default rollback-journal mode a commit locks readers out of the file, and the
    SQLite inside DuckDB waits for a lock in steps of whole seconds: readers in other
    processes stalled 1-2 s whenever they met one of the view's commits. In WAL mode readers
    never wait for the writer. The mode is kept in the file; an existing catalog is left as
    it is (switching it would need this process to open the file twice, through two SQLite
    libraries whose locks do not know of each other)."""
    import sqlite3

    path = os.path.abspath(catalog)
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode = WAL")
    finally:
        con.close()


def scrub(text: str, catalog: str) -> str:
    """``text`` without the catalog's DSN or its password (DuckDB's errors quote the DSN)."""
    if not is_postgres_catalog(catalog):
        return text
    from syncline.core.config_models import dsn_passwords

    for secret in sorted({catalog, *dsn_passwords(catalog)}, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def exists(catalog: str) -> bool:
    """Whether the lake's catalog exists (a PostgreSQL catalog: assumed)."""
    return is_postgres_catalog(catalog) or os.path.exists(catalog)


@dataclass(frozen=True)
class Snapshot:
    """A lake snapshot a view committed: its id, time and the view's checkpoint in it."""

    id: int
    time: str
    checkpoint: Checkpoint


def position_info(view: str, cp: Checkpoint) -> str:
    """What a batch's snapshot records (its extra info): the view and its checkpoint."""
    return json.dumps({"view": view, "seq": cp.seq, "commit_lsn": cp.commit_lsn, "log_id": cp.log})


def snapshots(con: Any, view: str) -> list[Snapshot]:
    """The retained snapshots ``view`` committed, oldest first."""
    rows = con.execute(
        f"SELECT snapshot_id, CAST(snapshot_time AS VARCHAR), commit_extra_info "  # noqa: S608
        f"FROM {LAKE}.snapshots() WHERE author = ? ORDER BY snapshot_id",
        [AUTHOR],
    ).fetchall()
    out = []
    for sid, at, info in rows:
        try:
            doc = json.loads(info or "{}")
        except ValueError:
            continue
        if doc.get("view") != view:
            continue
        cp = Checkpoint.stored(int(doc["seq"]), int(doc["commit_lsn"]), str(doc.get("log_id") or ""))
        out.append(Snapshot(int(sid), str(at), cp))
    return out
