from syncline.cli.progress import bar, copy_line


def test_bar() -> None:
    assert bar(0, 100, width=10) == "[..........]   0%"
    assert bar(41, 100, width=10) == "[####......]  41%"
    assert bar(150, 100, width=10) == "[##########] 100%"  # estimates undershoot
    assert bar(5, None) == "" and bar(5, 0) == ""


def test_copy_line() -> None:
    st = {"rows": 40000, "estimate": 300000, "rows_per_second": 120000, "eta_seconds": 2.2}
    assert copy_line("public.big", st) == (
        "public.big  [###.....................]  13%  40,000 of ~300,000 rows  120,000 rows/s  2s left"
    )
    assert copy_line("public.t", {"rows": 7, "estimate": None}) == "public.t  7 rows"
    assert "1m05s left" in copy_line("t", {"rows": 1, "estimate": 10, "eta_seconds": 65})
