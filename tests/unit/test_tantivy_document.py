"""The generated document builder equals the plain loop, for many shapes and values."""

from __future__ import annotations

import json
import random

import pytest

from syncline.core.events import Column, Relation
from syncline.views.tantivy.document import compile_document, document_reference
from syncline.views.tantivy.view import _plan

TYPES = [
    ("integer", "N", ["0", "-7", "2147483647"]),
    ("bigint", "N", ["9223372036854775807", "1"]),
    ("numeric", "N", ["1.50", "NaN", "-0.001", "Infinity"]),
    ("double precision", "N", ["1e+300", "-Infinity", "0.5"]),
    ("text", "S", ["", "a b c", 'quote " and \\ back', "naïve ☃ 𝄞", "x:y", "\n\t"]),
    ("character(3)", "S", ["ab ", "   "]),
    ("boolean", "B", ["t", "f"]),
    ("timestamp with time zone", "D", ["2024-01-02 03:04:05.123+00", "infinity", "1500-01-01 00:00:00+00"]),
    ("timestamp without time zone", "D", ["2024-01-02 03:04:05", "2024-01-02 03:04:05.5"]),
    ("date", "D", ["2024-02-29", "-infinity"]),
    ("jsonb", "U", ['{"a": [1, 2]}', "null"]),
    ("inet", "I", ["10.0.0.1", "10.0.0.0/8"]),
    ("integer[]", "A", ["{1,2,NULL}", "{}"]),
]


def _relation(rng: random.Random, ncols: int, nkeys: int) -> Relation:
    cols = []
    for i in range(ncols):
        t, cat, _ = rng.choice(TYPES)
        base = t
        element = t[:-2] if t.endswith("[]") else ""
        name = rng.choice([f"c{i}", f'we"ird {i}', f"ünï{i}", f"a:b{i}"])
        cols.append(Column(name, 0, -1, t, cat, element=element, base=base, in_identity=i < nkeys))
    return Relation(
        16384, rng.choice(["public", "my schema"]), rng.choice(["t", 'q"t']), "d", tuple(cols), ()
    )


def _value(rng: random.Random, col: Column) -> str | None:
    if rng.random() < 0.15:
        return None
    for t, _, values in TYPES:
        if t == col.type_name:
            return rng.choice(values)
    raise AssertionError(col.type_name)


@pytest.mark.parametrize("seed", range(40))
def test_the_generated_builder_equals_the_loop(seed: int) -> None:
    rng = random.Random(seed)
    ncols = rng.randint(1, 7)
    nkeys = rng.randint(0 if seed % 10 == 0 else 1, min(3, ncols))
    rel = _relation(rng, ncols, nkeys)
    rel = Relation(rel.oid, rel.schema, rel.name, rel.replident, rel.columns, rel.column_names[:nkeys])
    text_fields = None if seed % 3 == 0 else tuple(rng.sample(rel.column_names, rng.randint(0, ncols)))
    plan = _plan(rel, text_fields)
    build = compile_document(plan.shape)
    for _ in range(50):
        vals = [_value(rng, c) for c in rel.columns]
        got = build(vals)
        assert got == document_reference(plan.shape, vals)
        doc = json.loads(got[1])  # valid JSON whatever the names and values
        assert doc["_id"] == got[0]
        assert json.loads(got[2]) == doc["doc"]


def test_a_row_of_the_wrong_length_is_an_error() -> None:
    rel = Relation(1, "public", "t", "d", (Column("id", 23, -1, "integer", "N", base="integer"),), ("id",))
    build = _plan(rel, None).document
    assert build(["1"])[0] == '["public.t","1"]'
    with pytest.raises(ValueError):
        build(["1", "2"])
