"""Every DuckDB connection syncline opens keeps stdout clean (no progress bar).

Checked in a child process as a user runs syncline: under pytest DuckDB leaves the bar off
by itself, so an in-process check could not fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from syncline.views.duckdb.session import open_duckdb

CHILD = """
import sys
from syncline.views.duckdb.session import open_duckdb
setting = "SELECT current_setting('enable_progress_bar'), current_setting('autoinstall_known_extensions')"
for con, offline in ((open_duckdb(), False), (open_duckdb(offline=True), True), (open_duckdb(sys.argv[1]), False)):
    bar, install = con.execute(setting).fetchone()
    assert bar is False, "progress bar on"
    assert install is not offline, "extensions install from the network"
    con.close()
con = open_duckdb()
con.execute("SELECT count(*) FROM range(3000000000) a, range(4) b").fetchall()  # past the bar's 2 s
"""


def test_connections_never_draw_a_progress_bar(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "f.duckdb")], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "", r.stdout[:200]


def test_a_read_only_open_of_a_missing_file_is_the_duckdb_error() -> None:
    """The callers turn DuckDB's own error into theirs: it must come through unchanged."""
    with pytest.raises(duckdb.Error):
        open_duckdb("/nonexistent/dir/x.duckdb", read_only=True)
