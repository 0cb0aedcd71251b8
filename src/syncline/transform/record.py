"""``syncline record`` and ``syncline replay``: a slice of the log in a file, and a
transform run over it offline, so a transform is unit-tested against real changes.

The file is JSON lines: a first line ``{"syncline_record": 1, "relations": {...}}`` (the
tables' shapes before the first transaction), then one transaction per line with its row
changes, schema changes and truncates (values as PostgreSQL's text; an unchanged TOASTed
value as ``{"unchanged": true}``). :func:`changes` reads it back as the :class:`Change`
objects a transform receives, for a user's own tests::

    from syncline.transform.record import changes
    for change in changes("tests/data/orders.jsonl"):
        assert shape_order(change) is not None
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncline.core.codec import relation_from_json, relation_to_json
from syncline.core.config_models import Config
from syncline.core.events import (
    UNCHANGED,
    Checkpoint,
    Relation,
    RowChange,
    SchemaChange,
    Transaction,
    Truncate,
)
from syncline.core.patterns import table_selected
from syncline.transform import Change
from syncline.views.base import Batch

if TYPE_CHECKING:
    from syncline.transform.stage import Stage

FORMAT = 1


def _value(v: Any) -> Any:
    return {"unchanged": True} if v is UNCHANGED else v


def _back(v: Any) -> Any:
    return UNCHANGED if isinstance(v, dict) else v


def _row(row: Any) -> list[Any] | None:
    return None if row is None else [_value(v) for v in row]


@dataclass(frozen=True)
class Recorded:
    """What :func:`record` wrote."""

    transactions: int
    rows: int
    trimmed: int
    """Records up to this seq were gone from the log (retention), so not recorded."""
    short: bool
    """Fewer than the records asked for were left in the log: retention had trimmed the rest."""


def record(cfg: Config, path: Path, last: int, tables: tuple[str, ...] = ()) -> Recorded:
    """The log's last ``last`` records (whole transactions) into ``path``; only the row
    changes of ``tables`` (patterns; all when empty). With ``[log] retention = "applied"``
    the log keeps only what some view has not applied yet: :attr:`Recorded.short` says
    that records asked for were trimmed already."""
    from syncline.log import open_cursor

    cursor = open_cursor(cfg.log)
    try:
        hw = cursor.hw()
        trimmed = cursor.trimmed_seq()
        start = max(trimmed, hw - last)
        rels = cursor.relations_at(start)
        txns = 0
        rows = 0
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as f:
            head = {o: json.loads(relation_to_json(r)) for o, r in rels.items()}
            f.write(json.dumps({"syncline_record": FORMAT, "relations": head}) + "\n")
            pos = Checkpoint(start)
            while pos.seq < hw:
                got = cursor.read(pos, 10_000)
                if not got:
                    break
                for t in got:
                    items: list[dict[str, Any]] = []
                    for it in t.items:
                        if isinstance(it, SchemaChange):
                            rels[it.relation.oid] = it.relation
                            items.append({"relation": json.loads(relation_to_json(it.relation))})
                        elif isinstance(it, Truncate):
                            items.append({"truncate": list(it.relids), "dropped": it.dropped})
                        elif isinstance(it, RowChange):
                            rel = rels.get(it.relid)
                            if rel is None or (tables and not table_selected(tables, rel.qualified)):
                                continue
                            items.append(
                                {"op": it.op, "relid": it.relid, "new": _row(it.new), "old": _row(it.old)}
                            )
                            rows += 1
                    doc = {
                        "seq": t.seq,
                        "commit_lsn": int(t.commit_lsn),
                        "xid": t.xid,
                        "commit_time": t.commit_time,
                        "last": t.last,
                        "items": items,
                    }
                    f.write(json.dumps(doc) + "\n")
                    txns += 1
                pos = Checkpoint(got[-1].seq, got[-1].commit_lsn)
        tmp.replace(path)
        return Recorded(txns, rows, trimmed, short=trimmed > max(hw - last, 0))
    finally:
        cursor.close()


def read(path: Path | str) -> Iterator[tuple[dict[int, Relation], Transaction]]:
    """Each recorded transaction with the tables' shapes before it (a ValueError names a
    file that is not a recording)."""
    with Path(path).open() as f:
        try:
            head = json.loads(f.readline())
            rels = {int(o): relation_from_json(json.dumps(r)) for o, r in head["relations"].items()}
            if head.get("syncline_record") != FORMAT:
                raise KeyError("syncline_record")
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a recording of syncline record ({e})") from None
        for line in f:
            d = json.loads(line)
            items: list[Any] = []
            for it in d["items"]:
                if "relation" in it:
                    items.append(SchemaChange(relation_from_json(json.dumps(it["relation"]))))
                elif "truncate" in it:
                    items.append(Truncate(tuple(it["truncate"]), dropped=bool(it.get("dropped"))))
                else:
                    new = None if it["new"] is None else tuple(_back(v) for v in it["new"])
                    old = None if it["old"] is None else tuple(_back(v) for v in it["old"])
                    items.append(RowChange(it["op"], int(it["relid"]), new, old))
            t = Transaction(
                int(d["seq"]),
                d["commit_lsn"],
                d["commit_lsn"],
                int(d["xid"]),
                int(d["commit_time"]),
                items,
                d["last"],
            )
            yield dict(rels), t
            for it in items:
                if isinstance(it, SchemaChange):
                    rels[it.relation.oid] = it.relation


def changes(path: Path | str) -> Iterator[Change]:
    """The recorded row changes as a transform receives them."""
    from syncline.transform.stage import to_change

    for rels, t in read(path):
        for it in t.items:
            if isinstance(it, SchemaChange):
                rels[it.relation.oid] = it.relation
            elif isinstance(it, RowChange) and it.relid in rels:
                yield to_change(it, rels[it.relid], t)


def replay(path: Path | str, stage: Stage) -> Iterator[dict[str, Any]]:
    """What ``stage`` (a transform) makes of each recorded transaction, as ``syncline
    replay`` prints it: ``{seq, op, table, row}`` per row (a delete: its key columns), and
    ``{seq, op: "truncate", tables}``."""
    for rels, t in read(path):
        out = stage.batch(Batch([t], rels, Checkpoint(t.seq, t.commit_lsn)))
        names = dict(out.relations)
        for txn in out.transactions:
            for it in txn.items:
                if isinstance(it, SchemaChange):
                    names[it.relation.oid] = it.relation
                elif isinstance(it, RowChange):
                    rel = names[it.relid]
                    row = it.new if it.new is not None else it.old
                    yield {
                        "seq": t.seq,
                        "op": it.op,
                        "table": rel.qualified,
                        "row": {
                            c.name: (None if v is UNCHANGED else v)
                            for c, v in zip(rel.columns, row or (), strict=False)
                            if not (it.op == "delete" and c.name not in rel.key)
                        },
                    }
                elif isinstance(it, Truncate):
                    yield {"seq": t.seq, "op": "truncate", "tables": [names[o].qualified for o in it.relids]}
