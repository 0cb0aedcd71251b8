"""The net effect of a batch equals applying its changes one by one (Hypothesis)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from syncline.core.events import (
    UNCHANGED,
    Column,
    Relation,
    Row,
    RowChange,
    SchemaChange,
    Transaction,
    Truncate,
)
from syncline.views.netting import DeltaStep, Key, TruncateStep, net_steps

REL = Relation(
    1,
    "public",
    "t",
    "d",
    (
        Column("id", 23, -1, "integer", "N", "", "integer", True),
        Column("a", 25, -1, "text", "S", "", "text"),
        Column("big", 25, -1, "text", "S", "", "text"),
    ),
    ("id",),
)

keys = st.sampled_from(["1", "2", "3"])
vals = st.sampled_from(["x", "y", None])


@st.composite
def ops(draw: st.DrawFn) -> tuple[str, str, str, object, object]:
    kind = draw(st.sampled_from(["insert", "update", "update", "delete", "truncate", "pkmove"]))
    big = draw(st.one_of(vals, st.just(UNCHANGED)))
    return kind, draw(keys), draw(keys), draw(vals), big


def sequential(state: dict[str, Row], changes: list[RowChange | Truncate]) -> dict[str, Row]:
    s = dict(state)
    for ch in changes:
        if isinstance(ch, Truncate):
            s.clear()
            continue
        if ch.op == "insert":
            assert ch.new is not None
            s[str(ch.new[0])] = ch.new
        elif ch.op == "delete":
            assert ch.old is not None
            s.pop(str(ch.old[0]), None)
        else:
            assert ch.new is not None
            old_k = str(ch.old[0]) if ch.old is not None else str(ch.new[0])
            prev = s.pop(old_k)
            s[str(ch.new[0])] = tuple(p if n is UNCHANGED else n for p, n in zip(prev, ch.new, strict=False))
    return s


def netted(
    state: dict[str, Row], txns: list[Transaction], owns: Callable[[Key], bool] | None = None
) -> dict[str, Row]:
    """The state after applying the batch's net effect to ``state``. ``owns``: the keys one
    partition holds (a truncate removes only those; any other key written fails)."""
    s = dict(state)
    for step in net_steps(txns, {1: REL}):
        if isinstance(step, TruncateStep):
            s = {k: v for k, v in s.items() if owns is not None and not owns((k,))}
        elif isinstance(step, DeltaStep):
            for d in step.tables:
                if owns is not None:
                    wrote = [*d.rows, *d.deleted]
                    assert all(owns(k) for k in wrote), "a key written by another partition"
                resolved = []
                for row, origin in d.partials():
                    stored = s[str(origin[0])]
                    resolved.append(
                        tuple(p if n is UNCHANGED else n for p, n in zip(stored, row, strict=False))
                    )
                for k in d.deleted:
                    s.pop(str(k[0]), None)
                for row in [*d.upserts(), *resolved]:
                    s[str(row[0])] = row
    return s


def script_changes(
    script: list[tuple[str, str, str, object, object]],
    state: dict[str, Row],
    moved: Callable[[str, str, object], object] = lambda k, k2, big: big,
) -> list[RowChange | Truncate]:
    """The changes a script of (kind, key, other key, value, big value) makes from ``state``,
    each valid where it happens (no insert of a present key ...). ``moved`` gives the big
    value of a key-only primary-key change (``pkmove``); ``pkmove_full`` sends the full old
    row (REPLICA IDENTITY FULL)."""
    model = dict(state)
    changes: list[RowChange | Truncate] = []
    for kind, k, k2, a, big in script:
        if big is UNCHANGED and k in model and model[k][2] is None:
            big = None  # PostgreSQL sends NULL as NULL: only a stored (TOASTed) value is unchanged
        if kind == "truncate":
            changes.append(Truncate((1,)))
            model.clear()
        elif kind == "insert" and k not in model:
            ch = RowChange("insert", 1, (k, a, big if big is not UNCHANGED else "B"))  # type: ignore[arg-type]
            changes.append(ch)
            model[k] = ch.new  # type: ignore[assignment]
        elif kind == "update" and k in model:
            changes.append(RowChange("update", 1, (k, a, big)))  # type: ignore[arg-type]
            model = sequential(model, changes[-1:])
        elif kind == "pkmove" and k in model and k2 not in model:
            changes.append(RowChange("update", 1, (k2, a, moved(k, k2, big)), old=(k, None, None)))  # type: ignore[arg-type]
            model = sequential(model, changes[-1:])
        elif kind == "pkmove_full" and k in model and k2 not in model:
            changes.append(RowChange("update", 1, (k2, a, big), old=model[k]))  # type: ignore[arg-type]
            model = sequential(model, changes[-1:])
        elif kind == "delete" and k in model:
            changes.append(RowChange("delete", 1, None, old=(k, None, None)))
            model.pop(k)
    return changes


@settings(max_examples=400, deadline=None)
@given(st.lists(ops(), max_size=25), st.integers(min_value=1, max_value=5))
def test_net_effect_equals_sequential(script: list, per_txn: int) -> None:
    state: dict[str, Row] = {"1": ("1", "init", "B1")}
    changes = script_changes(script, state)
    txns = []
    for i in range(0, len(changes), per_txn):
        txns.append(Transaction(i + 1, i + 1, i + 1, i, 0, list(changes[i : i + per_txn])))
    assert netted(state, txns) == sequential(state, changes)


def test_schema_change_is_a_barrier() -> None:
    rel2 = Relation(1, "public", "t", "d", (*REL.columns, Column("c", 23, -1, "integer")), ("id",))
    txn = Transaction(
        1,
        1,
        1,
        1,
        0,
        [
            RowChange("insert", 1, ("1", "a", "b")),
            SchemaChange(rel2),
            RowChange("insert", 1, ("2", "a", "b", "5")),
        ],
    )
    steps = list(net_steps([txn], {1: REL}))
    assert [type(s).__name__ for s in steps] == ["DeltaStep", "SchemaStep", "DeltaStep"]


def test_unchanged_schema_message_is_not_a_step() -> None:
    txn = Transaction(1, 1, 1, 1, 0, [SchemaChange(REL), RowChange("insert", 1, ("1", "a", "b"))])
    steps = list(net_steps([txn], {1: REL}))
    assert [type(s).__name__ for s in steps] == ["DeltaStep"]
