from __future__ import annotations

from syncline.verify.chunks import (
    ChunkSums,
    KeyDiff,
    bucket,
    chunk_count,
    diff_rows,
    differing_chunks,
    digest,
    key_text,
    row_text,
)


def test_row_text_distinguishes_null_empty_and_boundaries() -> None:
    assert row_text((None,)) != row_text(("",))
    assert row_text(("a", "bc")) != row_text(("ab", "c"))
    assert row_text(("1", None, "x")) == "T1:1NT1:x"


def test_digest_is_64_bit_and_stable() -> None:
    d = digest(("1", "hat"))
    assert 0 <= d < 1 << 64
    assert d == digest(("1", "hat"))
    assert d != digest(("1", "hats"))


def test_sums_ignore_row_order() -> None:
    rows = [(str(i), f"name {i}") for i in range(100)]
    a, b = ChunkSums(7), ChunkSums(7)
    for r in rows:
        a.add(r[0], r)
    for r in reversed(rows):
        b.add(r[0], r)
    assert a.sums == b.sums and a.rows == 100
    assert differing_chunks(a, b) == []


def test_a_changed_row_marks_only_its_chunk() -> None:
    rows = [(str(i), f"name {i}") for i in range(100)]
    a, b = ChunkSums(7), ChunkSums(7)
    for r in rows:
        a.add(r[0], r)
        b.add(r[0], r if r[0] != "42" else ("42", "changed"))
    assert differing_chunks(a, b) == [bucket("42", 7)]


def test_sql_sums_wrap_modulo_2_64() -> None:
    a = ChunkSums(1)
    a.put(0, 1, -1)
    assert a.sums[0] == (1, (1 << 64) - 1)


def test_chunk_count_and_key_text() -> None:
    assert chunk_count(0, 1000) == 1
    assert chunk_count(2500, 1000) == 3
    assert key_text(("7", "x", "b"), (0, 2)) == "7:b"


def test_diff_rows() -> None:
    src = {"1": ("1", "a"), "2": ("2", "b"), "3": ("3", "c")}
    view = {"1": ("1", "a"), "3": ("3", "C"), "4": ("4", "d")}
    d = diff_rows(src, view)
    assert d == KeyDiff(missing=["2"], extra=["4"], different=["3"])
    assert not d.equal and d.all_keys() == {"2", "3", "4"}
    assert d.only({"3"}) == KeyDiff(different=["3"])
    assert diff_rows(src, dict(src)).equal
