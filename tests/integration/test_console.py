"""The console at ``/`` in a real browser (Debian's headless Chromium driven by Playwright)
against a real pipeline with a writer running: the token rule, no console errors, charts
that move, and a failed view that shows its error and the fix. Screenshots go to
``test-artifacts/console/``."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster, free_port

TOKEN = "console-t0ken-3f9a"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path("test-artifacts") / "console"


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # root in a container: Chromium's sandbox needs user namespaces it may not have
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _writer(dsn: str, stop: threading.Event) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        i = 0
        while not stop.is_set():
            conn.execute("INSERT INTO items (v) SELECT 'x' FROM generate_series(1, 50)")
            i += 1
            time.sleep(0.05)


def other_series(base: str) -> dict[str, Any]:
    """``/console/series`` with the token, outside the browser."""
    req = urllib.request.Request(base + "/console/series", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 (a local test server)
        got: dict[str, Any] = json.loads(r.read())
    return got


def test_console_shows_every_view_live_and_a_failed_one_with_its_fix(
    pg: PgCluster, tmp_path: Path, browser: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    port = free_port()
    p = Pipeline(pg, tmp_path, views=("postgres", "redis", "tantivy"), http_listen=f"127.0.0.1:{port}")
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(p.source_dsn, stop))
    try:
        p.sql("CREATE TABLE items (id bigserial PRIMARY KEY, v text)")
        monkeypatch.setenv("SYNCLINE_CONSOLE_TOKEN", TOKEN)
        text = p.config_path.read_text()
        text = text.replace(
            f'listen = "127.0.0.1:{port}"',
            f'listen = "127.0.0.1:{port}"\ntoken = "${{SYNCLINE_CONSOLE_TOKEN}}"',
        )
        # any WAL held back is over this threshold: the source card must warn
        text = text.replace("[source]\n", "[source]\nretained_wal_warning = 1\n", 1)
        # a terminal error of the search view: the console must show it and the fix
        p.config_path.write_text(text.replace('kind = "tantivy"', 'kind = "tantivy"\ntokenizer = "nope"'))
        p.start()
        writer.start()
        base = f"http://127.0.0.1:{port}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

        ctx = browser.new_context()
        page = ctx.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        deadline = time.monotonic() + 60
        while True:  # the listener comes up with run
            try:
                first = page.goto(base + "/")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        # without the token: 401 and the page that says how to give it, no data
        assert first is not None and first.status == 401
        assert "?token=" in page.content() and "view-replica" not in page.content()
        wrong = page.goto(base + "/?token=wrong")
        assert wrong is not None and wrong.status == 401
        assert ctx.cookies() == []
        errors.clear()

        ok = page.goto(base + f"/?token={TOKEN}")
        assert ok is not None and ok.status == 200 and page.url == base + "/"  # token not left in the URL
        assert [c["name"] for c in ctx.cookies()] == ["syncline_token"] and ctx.cookies()[0]["httpOnly"]
        page.wait_for_selector("#view-replica .state:text('running')", timeout=90_000)
        page.wait_for_selector("#view-search .state:text('failed')", timeout=90_000)
        assert "tokenizer" in page.inner_text("#view-search .error")
        assert page.inner_text("#view-search .action").startswith("to fix: ")

        # the replica's chart moves while the writer writes
        line = "#view-replica .rate-line"
        page.wait_for_function(
            f"document.querySelector('{line}').getAttribute('points').split(' ').length >= 3",
            timeout=60_000,
        )
        before = page.get_attribute(line, "points")
        page.wait_for_function(
            f"document.querySelector('{line}').getAttribute('points') !== {before!r}", timeout=30_000
        )
        rates = [float(pt.split(",")[1]) for pt in (page.get_attribute(line, "points") or "").split()]
        assert min(rates) < 59.0, rates  # some sample above the floor: events/s > 0
        # the card's events/s is the chart's last sample, a number (not "-")
        float(page.inner_text("#view-replica .rate").replace(",", ""))
        # lag explained per stage (p50 / p99 of the last minute), measured, not "-"
        page.wait_for_function(
            "['s-log', 's-view', 's-apply'].every(c => /ms|s$/.test("
            "document.querySelector('#view-replica .' + c).textContent))",
            timeout=30_000,
        )
        assert "ms" in page.inner_text("#log-card .stage") or " s" in page.inner_text("#log-card .stage")
        # the source card: retained WAL over the (tiny) threshold warns; the log card: its size
        assert "warn" in (page.get_attribute("#source-card", "class") or "")
        assert "retained_wal_warning" in page.inner_text("#source-card .warning")
        assert page.inner_text("#log-card .size").endswith("B")
        page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)

        # the cache's Redis stops: its lag rises in the card and in the chart; back, it falls
        assert p.redis is not None
        p.redis.stop()
        lag = "parseFloat(document.querySelector('#view-cache .lag').textContent)"
        page.wait_for_function(f"{lag} >= 3", timeout=60_000)
        page.wait_for_function(
            "(() => { const pts = document.querySelector('#view-cache .lag-line').getAttribute('points')"
            ".split(' '); const y = parseFloat(pts[pts.length - 1].split(',')[1]); return y < 50; })()",
            timeout=30_000,
        )
        page.screenshot(path=str(ARTIFACTS / "console-store-stopped.png"), full_page=True)
        p.redis.start()
        page.wait_for_function(f"{lag} < 2", timeout=120_000)
        page.wait_for_selector("#view-cache .state:text('running')", timeout=60_000)

        # a view's page: row changes per table, and the last verify once it ran
        stop.set()
        writer.join()
        w = p.cli("wait", "--view", "replica", "--timeout", "120", timeout=180)
        assert w.returncode == 0, w.stdout + w.stderr
        v = p.cli("verify", "--view", "replica", "-q")
        assert v.returncode == 0, v.stdout + v.stderr
        page.click("#view-replica a.detail")
        page.wait_for_url(base + "/console/view/replica")
        page.wait_for_selector("#verify .state:text('equal')", timeout=30_000)
        # every row's insert was applied (a row copied and streamed both counts twice), published
        # every 5 s
        n = p.sql("SELECT count(*) FROM items")[0][0]
        cell = "#tables tr[data-table='public.items'] td.rows"
        page.wait_for_function(
            f"parseInt(document.querySelector(\"{cell}\").textContent.replace(/,/g, '')) >= {n}",
            timeout=30_000,
        )
        assert page.inner_text("#tables tr[data-table='public.items'] td.status") == "equal"
        page.screenshot(path=str(ARTIFACTS / "console-view.png"), full_page=True)
        assert errors == [], errors
        assert page.goto(base + "/console/view/nosuch").status == 404  # type: ignore[union-attr]

        # another browser without the cookie gets nothing
        other = browser.new_context().new_page()
        r = other.goto(base + "/status")
        assert r is not None and r.status == 401
        # the charts' series outlive a restart of run
        before = other_series(base)
        assert p.stop() == 0
        p.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                after = other_series(base)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.3)
        assert before["t"] and after["t"][: len(before["t"])] == before["t"], (before["t"], after["t"])
        assert p.stop() == 0
        assert TOKEN not in p.output()
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        p.close()
