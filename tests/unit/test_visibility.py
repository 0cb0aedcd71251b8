"""Which transactions a snapshot sees: 64-bit ids from snapshots, 32-bit ids from the stream."""

from __future__ import annotations

from syncline.sources.postgres.visibility import Snapshot


def test_running_and_not_yet_finished_transactions_are_invisible() -> None:
    s = Snapshot.parse("100:105:100,103")
    assert [x for x in range(98, 110) if s.invisible(x)] == [100, 103, 105, 106, 107, 108, 109]
    # a commit already recorded but not yet finished, with an id above every finished one,
    # is not in xip: it is invisible through xmax
    assert s.invisible32(105) and s.invisible32(104 + 2**20)
    assert not s.invisible32(104) and not s.invisible32(99)


def test_32_bit_ids_compare_across_the_epoch() -> None:
    epoch = 7 << 32
    s = Snapshot.parse(f"{epoch + 2**32 - 10}:{epoch + 2**32 + 5}:{epoch + 2**32 - 10}")
    assert s.invisible32(2**32 - 10)  # listed, before the wrap
    assert s.invisible32(5) and s.invisible32(6)  # at or after xmax, after the wrap
    assert not s.invisible32(4) and not s.invisible32(2**32 - 9)
    assert not s.invisible32(2**32 - 2**30)  # long finished
