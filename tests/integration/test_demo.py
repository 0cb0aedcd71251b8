"""`syncline demo` (what `make demo` runs) ends with every view equal to the source."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path


def test_demo_runs_to_its_end_check(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "syncline", "demo", "--no-dashboard", "--duration", "3", "--dir", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "all views equal the source" in r.stdout
    assert re.search(r"console \(.*\): http://127\.0\.0\.1:\d+/", " ".join(r.stdout.split())), r.stdout
    flat = " ".join(r.stdout.split())  # rich wraps long lines
    # verify compares copies of tables; the search view holds products joined with their
    # category's name, checked against a SQL join by the demo's own end check above
    assert "replica equal, warehouse equal" in flat and "search equal" not in flat, out[-6000:]
    # the four views, each answered a question
    cfg = tomllib.loads((root / "syncline.toml").read_text())
    kinds = {v["kind"] for v in cfg["views"].values()}
    assert {"postgres", "ducklake", "tantivy"} <= kinds
    for title in ("search (tantivy)", "revenue per category", "rows per table"):
        assert title in r.stdout, out[-6000:]
    # the warehouse answered while syncline run wrote it: before run stopped
    assert flat.index("read while syncline run writes it") < flat.index("syncline run stopped"), out[-6000:]
    if "redis" in kinds:
        assert "HGETALL public.products:" in r.stdout
    # how to continue, and the script that brings the servers back
    assert (root / "services.sh").exists()
    assert "services.sh start" in r.stdout and "status -c" in r.stdout
    # nothing left running: the private servers stopped with the demo
    assert not (root / "pg" / "data" / "postmaster.pid").exists()
    assert not (root / "redis" / "redis.pid").exists() or "redis" not in kinds


def test_demo_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) in the middle of the workload stops syncline run and the servers."""
    import signal
    import time

    root = tmp_path / "demo"
    p = subprocess.Popen(
        [sys.executable, "-m", "syncline", "demo", "--no-dashboard", "--duration", "60", "--dir", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        assert p.stdout is not None
        for line in p.stdout:
            if "workload for" in line or time.monotonic() > deadline:
                break
        p.send_signal(signal.SIGINT)
        rest = p.communicate(timeout=90)[0]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, rest[-3000:]
    assert "interrupted" in rest
    assert not (root / "pg" / "data" / "postmaster.pid").exists()
    assert not (root / "redis" / "redis.pid").exists()
