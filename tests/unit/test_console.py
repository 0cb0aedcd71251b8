"""The console's series (kept across restarts in a file), its pages, and the stage times
behind its lag figures (pure)."""

from __future__ import annotations

import time
from pathlib import Path

from syncline.core.timing import Window, percentile
from syncline.runtime.console import History, page, token_page, view_page
from syncline.runtime.status import stages


def test_history_rates_lags_and_the_window() -> None:
    h = History(keep=10.0)
    h.add(100.0, {"a": {"applied_events": 0, "lag_seconds": 0.0, "lag_events": 0}})
    h.add(102.0, {"a": {"applied_events": 500, "lag_seconds": 1.5, "lag_events": 40}})
    h.add(104.0, {"a": {"applied_events": 700, "lag_seconds": 0.2, "lag_events": 3}, "b": {}})
    got = h.series()
    assert got["t"] == [100.0, 102.0, 104.0]
    assert got["views"]["a"] == {
        "rate": [0.0, 250.0, 100.0],
        "lag_seconds": [0.0, 1.5, 0.2],
        "lag_events": [0, 40, 3],
    }
    assert got["views"]["b"]["rate"] == [0.0, 0.0, 0.0]  # a view that appeared later
    h.add(111.0, {"a": {"applied_events": 800}})  # samples older than 10 s are dropped
    assert h.series()["t"] == [102.0, 104.0, 111.0]
    # a counter that went back (the view rebuilt): no negative rate
    h.add(113.0, {"a": {"applied_events": 10}})
    assert h.series()["views"]["a"]["rate"][-1] == 0.0


def test_the_page_loads_nothing_from_elsewhere() -> None:
    body = page("syncline <console>").decode()
    assert "<title>syncline &lt;console&gt;</title>" in body
    assert "http://" not in body and "https://" not in body  # no CDN: works offline
    assert "/status" in body and "/console/series" in body
    assert "?token=" in token_page().decode()


def test_history_is_read_back_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "console-series.json"
    now = time.time()
    h = History(path=path)
    h.add(now - 2000, {"a": {"applied_events": 1}})  # older than the window: not kept
    h.add(now - 10, {"a": {"applied_events": 100, "lag_seconds": 0.5, "lag_events": 7}})
    h.add(now - 5, {"a": {"applied_events": 300, "lag_seconds": 0.1, "lag_events": 1}})
    h.save()
    again = History(path=path)
    assert again.series() == h.series() and len(again.series()["t"]) == 2
    assert again.series()["views"]["a"]["rate"][-1] == 40.0
    path.write_text("{not json")
    assert History(path=path).series()["t"] == []  # unreadable: starts afresh, no error
    assert History(path=tmp_path / "none.json").series()["t"] == []


def test_percentiles_and_the_window() -> None:
    assert percentile([5.0], 0.99) == 5.0
    assert percentile([float(i) for i in range(1, 101)], 0.5) == 50.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    w = Window(span=60.0)
    assert w.summary(1000.0) is None
    for i in range(100):
        w.add(1000.0 + i * 0.1, i / 1000)
    got = w.summary(1010.0)
    assert got == {"p50": 0.049, "p99": 0.098, "n": 100}
    w.add(1011.0, -1.0)  # a clock behind the source's: never a negative delay
    assert w.summary(1011.0)["p50"] >= 0  # type: ignore[index]
    assert w.summary(1200.0) is None  # all older than the span


def test_stages_split_the_lag() -> None:
    cap = {"p50": 0.1, "p99": 0.3, "n": 10}
    parts = [
        {
            "end_to_end_seconds": {"p50": 0.25, "p99": 0.9, "n": 5},
            "apply_seconds": {"p50": 0.01, "p99": 0.05},
        },
        {"end_to_end_seconds": {"p50": 0.2, "p99": 1.5, "n": 5}, "apply_seconds": {"p50": 0.02, "p99": 0.04}},
    ]
    got = stages(cap, parts)
    assert got["source_to_log"] == cap
    assert got["end_to_end"] == parts[1]["end_to_end_seconds"]  # the slowest partition (p99)
    assert got["log_to_view"] == {"p50": 0.1, "p99": 1.4}
    assert got["apply"] == parts[0]["apply_seconds"]
    none = stages(None, [])
    assert none == {"source_to_log": None, "log_to_view": None, "end_to_end": None, "apply": None}
    assert stages(None, parts[:1])["log_to_view"] == {"p50": 0.25, "p99": 0.9}


def test_view_page_escapes_the_name() -> None:
    body = view_page("a</script><b>").decode()
    assert "</script><b>" not in body
    assert "/console/view/" in body and "http://" not in body
