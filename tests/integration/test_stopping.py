"""Stopping ``syncline run`` (issue 9, item 10): SIGTERM or SIGINT, to the supervisor or to
the whole process group, during the snapshot or streaming, right after a child was killed:
one line, exit 0, no "restarting". And a killed capture is restarted, not fatal."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from syncline.testing.harness import Pipeline

VIEW_NAMES = {"replica": "postgres", "warehouse": "duckdb", "cache": "redis", "search": "tantivy"}
"""The harness's view names and kinds."""


@pytest.mark.parametrize(
    ("sig", "group", "when"),
    [
        (signal.SIGTERM, False, "streaming"),
        (signal.SIGINT, True, "streaming"),
        (signal.SIGTERM, True, "snapshot"),
        (signal.SIGINT, False, "after-kill"),
    ],
)
def test_clean_stop(pipeline: Pipeline, sig: int, group: bool, when: str) -> None:
    p = pipeline
    rows = 300_000 if when == "snapshot" else 1000
    p.sql(
        f"CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {rows}) g"
    )
    p.start()
    assert p.proc is not None
    if when == "snapshot":
        time.sleep(2.0)
    else:
        p.wait_caught_up()
        p.sql("UPDATE t SET v = 'x' WHERE id < 100")
    if when == "after-kill":
        victim = next(c for c, t in p.workers().items() if t == "syncline: view replica")
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.3)
    before = len(p.output())
    if group:
        os.killpg(p.proc.pid, sig)
    else:
        p.proc.send_signal(sig)
    code = p.proc.wait(timeout=60)
    out = p.output()[before:]
    assert code == 0, out
    assert "restarting" not in out, out
    assert out.count("stopped\n") >= 1 and "syncline: error" not in out, out
    p.proc = None


def test_killed_capture_is_restarted(pipeline: Pipeline) -> None:
    p = pipeline
    p.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')")
    p.start()
    p.wait_caught_up()
    assert p.proc is not None
    titles = p.workers()
    assert sorted(titles.values()) == sorted(
        ["syncline: capture", "syncline: view _compactor"]
        + [f"syncline: view {n}" for n in VIEW_NAMES if VIEW_NAMES[n] in p.views]
    ), titles
    assert "syncline: supervisor" in Path(f"/proc/{p.proc.pid}/cmdline").read_bytes().decode()
    capture = next(c for c, t in titles.items() if t == "syncline: capture")
    os.kill(capture, signal.SIGKILL)
    p.sql("INSERT INTO t VALUES (2, 'b')")
    time.sleep(1)
    assert p.proc.poll() is None, p.output()
    p.wait_caught_up(timeout=120)
    assert p.stop() == 0
    p.assert_equal()
