"""Redis keys and search ``_key``/``_table`` (interface.md, "Values in derived stores"): no two
rows ever share a key (Hypothesis), and the escaping is exactly the contract's."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from syncline.core.keytemplate import pk_text, table_text

names = st.text(alphabet="ab.:\\", min_size=1, max_size=5)
parts = st.text(alphabet="ab:\\", max_size=5)


def key(schema: str, name: str, pk: tuple[str, ...]) -> str:
    return table_text(schema, name) + ":" + pk_text(pk)


@given(
    names,
    names,
    st.lists(parts, min_size=1, max_size=3),
    names,
    names,
    st.lists(parts, min_size=1, max_size=3),
)
def test_different_rows_never_share_a_key(
    s1: str, n1: str, k1: list[str], s2: str, n2: str, k2: list[str]
) -> None:
    # a table's rows all have keys of one arity; tables of any arity must not collide
    a, b = (s1, n1, tuple(k1)), (s2, n2, tuple(k2))
    if a != b and ((s1, n1) != (s2, n2) or len(k1) == len(k2)):
        assert key(*a) != key(*b)


def test_the_contract_examples() -> None:
    assert key("public", "t", ("a:b", "c")) == "public.t:a\\:b:c"
    assert key("public", "t", ("a", "b:c")) == "public.t:a:b\\:c"
    assert key("public", "k:1", ("2",)) == "public.k\\:1:2"
    assert key("public", "k", ("1:2",)) == "public.k:1:2"  # a single column is unchanged
    assert table_text("s", "t.u") == "s.t\\.u"
    assert table_text("s.t", "u") == "s\\.t.u"
    assert pk_text(("a\\", "b")) == "a\\\\:b"
    assert key("public", "orders", ("42",)) == "public.orders:42"  # ordinary names: as before
