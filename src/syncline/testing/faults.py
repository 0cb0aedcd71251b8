"""Figures of the fault suites: each fault test records the faults it injected and what it
then checked (rows compared, lost, duplicated, out of order); ``make test`` prints them as
one table at the end (``tests/conftest.py``). A test records its figures before it asserts
them, so a failing run shows the counts that failed it."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from syncline.testing.compare import TableDiff


@dataclass(frozen=True)
class Figures:
    test: str
    faults: dict[str, int]
    """Fault kind -> times injected."""
    rows_checked: int
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0


RECORDED: list[Figures] = []


def record(faults: dict[str, int] | Iterable[str], rows_checked: int, **bad: int) -> Figures:
    """Note the faults the running test injected (kind -> count, or one kind per injection)
    and what it checked after them."""
    counts = dict(faults) if isinstance(faults, dict) else dict(Counter(faults))
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    f = Figures(test, counts, rows_checked, **bad)
    RECORDED.append(f)
    return f


def from_diffs(diffs: Iterable[TableDiff]) -> dict[str, int]:
    """Rows checked, lost (in the source, not the view) and duplicated (in the view, not the
    source: a row applied twice, or a stale copy) from view-vs-source comparisons."""
    ds = list(diffs)
    return {
        "rows_checked": sum(d.source_rows for d in ds),
        "lost": sum(len(d.missing) for d in ds),
        "duplicated": sum(len(d.extra) for d in ds),
    }


def combine(*parts: dict[str, int]) -> dict[str, int]:
    """Figures of several checks of one test, added up."""
    out: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0) + v
    return out


def table(figures: Iterable[Figures]) -> str:
    """One line per fault kind (the tests that injected it, and what they checked after),
    then the totals (each test's checks counted once)."""
    figs = list(figures)
    head = ("fault", "injected", "tests", "rows checked", "lost", "duplicated", "out of order")
    rows = []
    for kind in sorted({k for f in figs for k in f.faults}):
        with_kind = [f for f in figs if kind in f.faults]
        rows.append(_row(kind, sum(f.faults[kind] for f in with_kind), with_kind))
    rows.append(_row("total", sum(sum(f.faults.values()) for f in figs), figs))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, lines[1])
    return "\n".join(lines)


def _row(name: str, injected: int, figs: list[Figures]) -> tuple[str, ...]:
    return (
        name,
        str(injected),
        str(len({f.test for f in figs})),
        str(sum(f.rows_checked for f in figs)),
        str(sum(f.lost for f in figs)),
        str(sum(f.duplicated for f in figs)),
        str(sum(f.out_of_order for f in figs)),
    )
