from syncline.core.patterns import selection_warnings, table_selected, unmatched_patterns
from syncline.verify.chunks import TextRow, bucket, display_key, put_row


def test_exclusion_patterns() -> None:
    assert table_selected((), "public.t")
    assert table_selected(("!public.audit",), "public.t")
    assert not table_selected(("!public.audit",), "public.audit")
    assert not table_selected(("public.*", "!public.audit*"), "public.audit_log")
    assert table_selected(("public.*", "!public.audit*"), "public.orders")
    assert not table_selected(("public.*",), "other.orders")


def test_unmatched_and_warnings() -> None:
    assert unmatched_patterns(["public.*", "!x.y", "nope.*"], ["public.a"]) == ["!x.y", "nope.*"]
    w = selection_warnings(
        ["public.*"],
        [("search", ("public.a", "public.zz"), ("name", "nmae"))],
        ["public.a", "public.b"],
        {"public.a": ["id", "name"], "public.b": ["id"]},
    )
    assert w == [
        "view 'search': tables pattern 'public.zz' matches no captured table (yet)",
        "view 'search': text_fields names 'nmae', a column of none of its tables",
    ]


def test_duplicate_rows_are_counted() -> None:
    out: dict[str, TextRow] = {}
    for _ in range(3):
        put_row(out, "1:x", ("1", "x"))
    assert len(out) == 3
    keys = sorted(out)
    assert [display_key(k) for k in keys] == ["1:x", "1:x (copy 2)", "1:x (copy 3)"]
    assert {bucket(k, 7) for k in keys} == {bucket("1:x", 7)}
