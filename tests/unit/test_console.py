"""The console's in-memory series (pure)."""

from __future__ import annotations

from syncline.runtime.console import History, page, token_page


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
