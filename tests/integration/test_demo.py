"""`syncline demo` (what `make demo` runs) ends with every view equal to the source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_to_its_end_check(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "syncline", "demo", "--duration", "4", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "all views equal the source" in r.stdout
    assert (tmp_path / "demo" / "run" / "syncline.toml").exists()
