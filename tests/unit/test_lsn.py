from hypothesis import given
from hypothesis import strategies as st

from syncline.sources.postgres.lsn import format_lsn, parse_lsn


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


def test_the_source_registry_reads_and_prints_postgres_positions() -> None:
    from syncline.core.errors import ConfigError
    from syncline.sources.registry import position_format

    f = position_format("postgres")
    assert f.name == "LSN"
    assert f.parse("1/0") == 1 << 32
    assert f.format(f.parse("0/16B3748")) == "0/16B3748"
    try:
        position_format("mysql")
    except ConfigError as e:
        assert "mysql" in str(e)
    else:
        raise AssertionError("an unknown source kind was accepted")
