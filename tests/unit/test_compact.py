"""The compacted log (log/embedded/compact.py) on a real SQLite file: the latest row per key
after inserts, updates (unchanged TOAST values resolved from the stored row), key moves,
deletes and keyless rows, read back by ``iter_compacted``; a compact.db written before the
packed row form keeps its form and stays readable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from syncline.core.events import (
    UNCHANGED,
    Checkpoint,
    Column,
    Position,
    Relation,
    RowChange,
    SchemaChange,
    Transaction,
)
from syncline.log.embedded.compact import PACKED_ROWS, SCHEMA, CompactedView, iter_compacted
from syncline.views.base import Batch, advance_relations

KEYED = Relation(
    1,
    "public",
    "t",
    "d",
    (Column("id", 23, -1, "integer", "N", "", "integer", True), Column("v", 25, -1, "text", "S", "", "text")),
    ("id",),
)
KEYLESS = Relation(2, "public", "log", "f", (Column("v", 25, -1, "text", "S", "", "text"),), ())


def apply(view: CompactedView, rels: dict[int, Relation], seq: int, items: list[object]) -> None:
    txn = Transaction(seq, Position(seq * 10), Position(seq * 10 + 1), seq, 0, items)  # type: ignore[arg-type]
    batch = Batch([txn], rels, Checkpoint(seq, Position(seq * 10)), len(items))
    view.apply(batch)
    advance_relations(batch)


def state(path: Path) -> dict[int, list[tuple[object, ...]]]:
    out: dict[int, list[tuple[object, ...]]] = {}
    for txn in iter_compacted(path):
        for it in txn.items:
            if isinstance(it, RowChange) and it.new is not None:
                out.setdefault(it.relid, []).append(tuple(it.new))
    return {k: sorted(v, key=repr) for k, v in out.items()}


def version(path: Path) -> int:
    conn = sqlite3.connect(path / "compact.db")
    try:
        return int(conn.execute("SELECT version FROM format").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("legacy", [False, True])
def test_latest_row_per_key_in_either_row_form(tmp_path: Path, legacy: bool) -> None:
    if legacy:  # a compact.db from before the packed form: tables and a position, no format
        conn = sqlite3.connect(tmp_path / "compact.db")
        conn.executescript(
            SCHEMA.replace("CREATE TABLE IF NOT EXISTS format", "CREATE TABLE IF NOT EXISTS _x")
            .replace(", log_id TEXT NOT NULL DEFAULT ''", "")
            .replace(" WITHOUT ROWID", "")
        )
        conn.execute("INSERT INTO position VALUES (1, 0, 0)")
        conn.commit()
        conn.close()
    view = CompactedView(tmp_path)
    view.open()
    rels: dict[int, Relation] = {}
    apply(
        view,
        rels,
        1,
        [
            SchemaChange(KEYED, 0),
            SchemaChange(KEYLESS, 1),
            RowChange("insert", 1, ("1", "a")),
            RowChange("insert", 1, ("2", "big")),
            RowChange("insert", 1, ("3", None)),
            RowChange("insert", 2, ("x",)),
            RowChange("insert", 2, ("x",)),
            RowChange("insert", 2, (None,)),
        ],
    )
    apply(
        view,
        rels,
        2,
        [
            RowChange("update", 1, ("1", "b")),
            RowChange("update", 1, ("20", UNCHANGED), ("2", None)),  # key moved, value kept
            RowChange("delete", 1, None, ("3", None)),
            RowChange("delete", 2, None, ("x",)),  # one of the two equal keyless rows
        ],
    )
    view.close()
    assert version(tmp_path) == (1 if legacy else PACKED_ROWS)
    assert state(tmp_path) == {1: [("1", "b"), ("20", "big")], 2: sorted([("x",), (None,)], key=repr)}
    view = CompactedView(tmp_path)  # reopened: the same form
    view.open()
    apply(view, rels, 3, [RowChange("update", 1, ("1", UNCHANGED), None)])
    view.close()
    assert state(tmp_path)[1] == [("1", "b"), ("20", "big")]
    assert version(tmp_path) == (1 if legacy else PACKED_ROWS)


def _has_rowid(path: Path) -> bool:
    conn = sqlite3.connect(path / "compact.db")
    try:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'rows'").fetchone()
        return "WITHOUT ROWID" not in sql
    finally:
        conn.close()


def test_a_rows_table_with_rowids_is_rewritten_without_them_and_keeps_every_row(tmp_path: Path) -> None:
    view = CompactedView(tmp_path)
    view.open()
    rels: dict[int, Relation] = {}
    items: list[object] = [SchemaChange(KEYED, 0), SchemaChange(KEYLESS, 1)]
    items += [RowChange("insert", 1, (str(i), f"v{i}")) for i in range(500)]
    items += [RowChange("insert", 2, ("x",)), RowChange("insert", 2, ("x",)), RowChange("insert", 2, ("y",))]
    apply(view, rels, 1, items)
    apply(view, rels, 2, [RowChange("delete", 1, None, ("7", None))])  # a tombstone
    view.close()
    assert not _has_rowid(tmp_path)
    before = state(tmp_path)
    conn = sqlite3.connect(tmp_path / "compact.db")  # as an earlier version created it
    conn.executescript(
        "CREATE TABLE old_rows (relid INTEGER NOT NULL, key BLOB NOT NULL, relseq INTEGER NOT NULL,"
        " row BLOB, seq INTEGER NOT NULL, PRIMARY KEY (relid, key));"
        "INSERT INTO old_rows SELECT * FROM rows; DROP TABLE rows; ALTER TABLE old_rows RENAME TO rows;"
        "CREATE INDEX rows_tombstones ON rows (seq) WHERE row IS NULL;"
    )
    tombstones = conn.execute("SELECT relid, key, seq FROM rows WHERE row IS NULL").fetchall()
    conn.close()
    assert _has_rowid(tmp_path)
    view = CompactedView(tmp_path)
    assert view.open() == Checkpoint(2, Position(20))
    assert not _has_rowid(tmp_path)
    assert state(tmp_path) == before
    conn = sqlite3.connect(tmp_path / "compact.db")
    assert conn.execute("SELECT relid, key, seq FROM rows WHERE row IS NULL").fetchall() == tombstones
    conn.close()
    # keyless rows are still removed one at a time, and keyed rows replaced
    apply(view, rels, 3, [RowChange("delete", 2, None, ("x",)), RowChange("update", 1, ("3", "new"))])
    view.close()
    after = state(tmp_path)
    assert after[2] == sorted([("x",), ("y",)], key=repr)
    assert ("3", "new") in after[1] and ("3", "v3") not in after[1]
