from hypothesis import given
from hypothesis import strategies as st

from syncline.core.lsn import format_lsn, parse_lsn


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_lsn_round_trip(n: int) -> None:
    assert parse_lsn(format_lsn(n)) == n


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=0, max_value=2**64 - 1))
def test_lsn_text_order_is_numeric_order(a: int, b: int) -> None:
    assert (parse_lsn(format_lsn(a)) < parse_lsn(format_lsn(b))) == (a < b)


def test_known_values() -> None:
    assert parse_lsn("0/16B3748") == 0x16B3748
    assert format_lsn(0x1_0000_0000) == "1/0"
    for bad in ("", "16B3748", "x/1", "1/2/3"):
        try:
            parse_lsn(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
