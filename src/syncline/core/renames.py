"""Which columns were renamed between two shapes of one table.

pgoutput describes a table by its columns in attribute-number order, without the numbers,
so a rename and a drop followed by an add look alike. Two facts of PostgreSQL decide most
cases: ``ADD COLUMN`` numbers the new column after every existing one, and a rename keeps
the column's number. Columns both shapes name (*anchors*) split each shape into gaps:

- a new name in a gap *before* an anchor cannot be an added column (it would come after
  that anchor): it is an existing column renamed, paired in order with the names that
  disappeared from the same gap (preferring one of the same type);
- after the last anchor, a new name is taken as renamed only from the name that
  disappeared at its place in that gap with the same type; otherwise it is added.

Several DDL statements between two changes of the table (a column dropped and another
renamed, say) are common in migrations: taking the renamed column for a new one empties it.
"""

from __future__ import annotations

from collections.abc import Sequence

from syncline.core.events import Column


def _gaps(cols: Sequence[Column], anchors: set[str]) -> list[list[Column]]:
    out: list[list[Column]] = [[]]
    for c in cols:
        if c.name in anchors:
            out.append([])
        else:
            out[-1].append(c)
    return out


def column_renames(old: Sequence[Column], new: Sequence[Column]) -> dict[str, str]:
    """Old name -> new name of the columns renamed from ``old`` to ``new``."""
    old_names = [c.name for c in old]
    new_names = [c.name for c in new]
    both = set(old_names) & set(new_names)
    anchors = both
    if [n for n in old_names if n in both] != [n for n in new_names if n in both]:
        anchors = set()  # out of order: not one table's history; only the last gap's rule
    og = _gaps([c for c in old if c.name not in both or c.name in anchors], anchors)
    ng = _gaps([c for c in new if c.name not in both or c.name in anchors], anchors)
    out: dict[str, str] = {}
    for k, (gone, came) in enumerate(zip(og, ng, strict=True)):
        if k < len(og) - 1:  # before an anchor: every new name is a renamed column
            left = list(gone)
            for c in came:
                if not left:
                    break
                pick = next((o for o in left if o.type_name == c.type_name), left[0])
                left = left[left.index(pick) + 1 :]  # pairs keep their order
                out[pick.name] = c.name
        else:
            for o, c in zip(gone, came, strict=False):
                if o.type_name == c.type_name:
                    out[o.name] = c.name
    return out
