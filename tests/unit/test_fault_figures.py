"""The fault summary table: injections summed per kind, each test's checks counted once in
the totals, and any loss shown."""

from __future__ import annotations

from syncline.testing import faults


def test_the_table_sums_kinds_and_counts_each_tests_checks_once() -> None:
    figs = [
        faults.Figures("t1", {"SIGKILL: whole run": 2, "SIGKILL: view": 1}, 1000),
        faults.Figures("t2", {"PostgreSQL restart": 10}, 500, lost=1, out_of_order=2),
        faults.Figures("t3", {"SIGKILL: whole run": 5}, 300, duplicated=4),
    ]
    lines = faults.table(figs).splitlines()
    cells = {line.split("  ")[0].strip(): line.split() for line in lines if not line.startswith("-")}
    assert cells["SIGKILL: whole run"][-6:] == ["7", "2", "1300", "0", "4", "0"]
    assert cells["PostgreSQL restart"][-6:] == ["10", "1", "500", "1", "0", "2"]
    assert cells["total"][-6:] == ["18", "3", "1800", "1", "4", "2"]
