"""Command-line values that used to be taken silently (issue 13, item 9): one usage error,
exit 2, before anything connects."""

from __future__ import annotations

import pytest

from syncline.cli.main import main


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["wait", "--timeout", "nan"], "expected a finite number of seconds >= 0"),
        (["wait", "--timeout", "-5"], "expected a finite number of seconds >= 0"),
        (["wait", "--timeout", "inf"], "expected a finite number of seconds >= 0"),
        (["wait", "--timeout", "soon"], "expected a finite number of seconds"),
        (["verify", "--limit", "-1"], "expected a whole number >= 0"),
        (["search", "v", "q", "--limit", "-1"], "expected a whole number >= 0"),
        (["search", "v", "q", "--limit", "ten"], "expected a whole number"),
    ],
)
def test_bad_numbers_are_usage_errors(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, "-c", "/nonexistent/syncline.toml"])
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_good_numbers_still_parse(capsys: pytest.CaptureFixture[str]) -> None:
    from syncline.cli.main import build_parser

    args = build_parser().parse_args(["wait", "--timeout", "0.5"])
    assert args.timeout == 0.5
    args = build_parser().parse_args(["search", "v", "q", "--limit", "0"])
    assert args.limit == 0
