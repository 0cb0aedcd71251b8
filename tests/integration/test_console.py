"""The console at ``/`` in a real browser (Debian's headless Chromium driven by Playwright)
against a real pipeline with a writer running: the token rule, no console errors, charts
that move, and a failed view that shows its error and the fix. Screenshots go to
``test-artifacts/console/``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

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


def test_console_shows_every_view_live_and_a_failed_one_with_its_fix(
    pg: PgCluster, tmp_path: Path, browser: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    port = free_port()
    p = Pipeline(pg, tmp_path, views=("postgres", "tantivy"), http_listen=f"127.0.0.1:{port}")
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
        page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
        assert errors == [], errors

        # another browser without the cookie gets nothing
        other = browser.new_context().new_page()
        r = other.goto(base + "/status")
        assert r is not None and r.status == 401
        stop.set()
        writer.join()
        assert p.stop() == 0
        assert TOKEN not in p.output()
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        p.close()
