"""A screenshot of syncline's browser console while ``syncline demo`` runs its shop workload (for the README).

It runs the demo in a subprocess (``syncline demo --no-dashboard --duration 90`` in a temporary directory),
reads the console URL the demo prints, opens it in headless Chromium (/usr/bin/chromium, viewport 1280x900),
waits until every view's card says ``running`` and its chart has at least 3 samples, lets the workload draw
for another 30 s, and saves a full-page PNG (docs/images/console.png). It fails when the page logged a
console error (the PNG is still written), and when the cards never get ready (then what the page showed is
saved as ``console-failed.png``). The demo is then left to finish (it must end with exit 0; on an error or
Ctrl-C it is stopped with SIGINT, which stops its PostgreSQL, Redis and ``syncline run``), so nothing is left
running. The temporary directory is removed at the end, but kept (and named) after a failure.

Run it from the repository root, in the dev virtualenv (it needs Playwright and the PostgreSQL server
binaries; without redis-server the demo leaves its cache view out):

    make console-screenshot
    .venv/bin/python scripts/console_screenshot.py [--out PATH] [--dir DIR] [--duration S] [--settle S]
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 900}
URL_RE = re.compile(r"console \(.*\): (http://\S+)")
PHASE_RE = re.compile(r"^\s*\[([^\]]+)\] ")  # the demo's --no-dashboard progress lines: "[phase] ..."
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MIN_POINTS = 3

# true once every named view has a card that says running and a chart with MIN_POINTS samples
READY_JS = """([names, minPoints]) => names.every((n) => {
  const c = document.querySelector('section.card.view[data-view="' + CSS.escape(n) + '"]');
  if (!c) return false;
  const count = (sel) => (c.querySelector(sel).getAttribute("points") || "").trim().split(/\\s+/)
    .filter(Boolean).length;
  return c.querySelector(".state").textContent.trim() === "running" &&
    count(".rate-line") >= minPoints && count(".lag-line") >= minPoints;
})"""

# what the page shows: source and log states, per view its state, numbers, chart and error
SUMMARY_JS = """() => {
  const txt = (root, sel) => { const e = root.querySelector(sel); return e ? e.textContent.trim() : ""; };
  const views = {};
  for (const c of document.querySelectorAll("section.card.view")) {
    const pts = (c.querySelector(".rate-line").getAttribute("points") || "").trim().split(/\\s+/)
      .filter(Boolean);
    views[c.dataset.view] = {
      state: txt(c, ".state"), rate: txt(c, ".rate"), lag: txt(c, ".lag"), applied: txt(c, ".applied"),
      errors: txt(c, ".errors"), error: txt(c, ".error"), action: txt(c, ".action"),
      points: pts.length, moving: pts.some((p) => parseFloat(p.split(",")[1]) < 59.0),
    };
  }
  const src = document.getElementById("source-card");
  const log = document.getElementById("log-card");
  return {
    source: src ? {state: txt(src, ".state"), warning: txt(src, ".warning"), error: txt(src, ".error")}
      : null,
    log: log ? {state: txt(log, ".state"), error: txt(log, ".error")} : null,
    updated: txt(document, "#updated"),
    views: views,
  };
}"""


class ScreenshotFailed(Exception):
    pass


class Demo:
    """``syncline demo`` in its own session; its output echoed, scanned for the URL and the phase."""

    def __init__(self, root: Path, duration: float) -> None:
        self.root = root
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its lines as they are printed, not in blocks
        cmd = [sys.executable, "-m", "syncline", "demo", "--no-dashboard", "--duration", f"{duration:g}"]
        self.proc = subprocess.Popen(
            [*cmd, "--dir", str(root)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,  # Ctrl-C reaches this script only, which then stops the demo once
        )
        self.lines: list[str] = []
        self.phase = ""
        self.killed = False  # stopped by SIGKILL: what it started may still run
        self._urls: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = ANSI_RE.sub("", raw.rstrip("\n"))
            self.lines.append(line)
            print(f"demo | {line}", flush=True)
            if m := PHASE_RE.match(line):
                self.phase = m.group(1)
            if m := URL_RE.search(line):
                self._urls.put(m.group(1))
        self._urls.put(None)  # end of output: the demo exited

    def wait_for_url(self, timeout: float) -> str:
        try:
            url = self._urls.get(timeout=timeout)
        except queue.Empty:
            raise ScreenshotFailed(
                f"the demo printed no console URL in {timeout:.0f}s (a line 'console (...): http://...')"
            ) from None
        if url is None:
            raise ScreenshotFailed(
                f"the demo exited (code {self.proc.wait()}) before printing its console URL"
            )
        return url

    def running(self) -> bool:
        return self.proc.poll() is None

    def finish(self, timeout: float) -> int:
        """Let the demo end by itself (its end check and verify); SIGINT after ``timeout``."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"the demo is still running after {timeout:.0f}s: stopping it", flush=True)
            rc = self.stop()
        self._reader.join(10)
        return rc

    def stop(self) -> int:
        """SIGINT (the demo's Ctrl-C: it stops syncline run, PostgreSQL and Redis), then wait for it."""
        for sig, wait in ((signal.SIGINT, 180.0), (signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            if sig != signal.SIGINT:
                print(f"the demo did not stop: sending {sig.name}", flush=True)
            self.killed = sig == signal.SIGKILL
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self._reader.join(10)
        return self.proc.wait()


def view_names(config: Path, timeout: float = 30) -> list[str]:
    """The views in the demo's syncline.toml (written before it prints the URL)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cfg = tomllib.loads(config.read_text())
            return list(cfg.get("views", {}))
        except (OSError, tomllib.TOMLDecodeError):
            if time.monotonic() > deadline:
                raise ScreenshotFailed(f"cannot read the views from {config}") from None
            time.sleep(0.5)


def failed_name(out: Path) -> Path:
    return out.with_name(f"{out.stem}-failed{out.suffix}")


def shoot(
    demo: Demo, url: str, views: list[str], out: Path, ready_timeout: float, settle: float
) -> dict[str, Any]:
    """Open the console, wait for the cards, screenshot; returns what the page showed."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        # root in a container: Chromium's sandbox needs user namespaces it may not have
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": VIEWPORT["width"], "height": VIEWPORT["height"]})
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            deadline = time.monotonic() + 60
            while True:  # the listener comes up with syncline run, just after the URL is printed
                try:
                    resp = page.goto(url)
                    break
                except PlaywrightError:
                    if time.monotonic() > deadline or not demo.running():
                        raise
                    time.sleep(0.5)
            if resp is None or resp.status != 200:
                raise ScreenshotFailed(f"{url} answered {resp.status if resp else 'nothing'}, not 200")

            try:
                start = time.monotonic()
                try:
                    page.wait_for_function(READY_JS, arg=[views, MIN_POINTS], timeout=ready_timeout * 1000)
                except PlaywrightError:
                    raise ScreenshotFailed(
                        f"after {ready_timeout:.0f}s not every view ({', '.join(views)}) is running with "
                        f"{MIN_POINTS} chart points: {_states(page.evaluate(SUMMARY_JS))}"
                    ) from None
                print(f"every view running, charts drawing ({time.monotonic() - start:.0f}s)", flush=True)
                # the charts should show the shop workload, not the initial snapshot only
                while not demo.phase.startswith("workload"):
                    if not demo.running() or time.monotonic() > start + ready_timeout:
                        raise ScreenshotFailed(f"the demo's workload did not start (phase {demo.phase!r})")
                    page.wait_for_timeout(1000)
                print(f"workload running: {settle:.0f}s more for the charts", flush=True)
                until = time.monotonic() + settle
                while time.monotonic() < until:  # the page's events are handled while Playwright waits
                    if not demo.running():
                        raise ScreenshotFailed("the demo exited before the screenshot")
                    page.wait_for_timeout(1000)
                if not demo.phase.startswith("workload"):
                    raise ScreenshotFailed(
                        f"the workload was over before the screenshot (phase {demo.phase!r}): "
                        "give a longer --duration"
                    )
                if not page.evaluate(READY_JS, [views, MIN_POINTS]):
                    raise ScreenshotFailed(f"a view stopped running: {_states(page.evaluate(SUMMARY_JS))}")
            except ScreenshotFailed:
                failed = failed_name(out)
                failed.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(failed), full_page=True)
                print(f"what the page showed: {_rel(failed)}", flush=True)
                raise
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            summary: dict[str, Any] = page.evaluate(SUMMARY_JS)
        finally:
            browser.close()
    summary["console_errors"] = errors
    return summary


def _states(summary: dict[str, Any]) -> str:
    """The page in one line: each view's state and chart points, its error if any."""
    parts = [
        f"{n} {v['state'] or '(no state)'}, {v['points']} points" + (f" ({v['error']})" if v["error"] else "")
        for n, v in summary.get("views", {}).items()
    ]
    return "; ".join(parts) or f"no view cards ({summary.get('updated')})"


def report(summary: dict[str, Any]) -> list[str]:
    """Print what the page showed; returns what looks wrong on it."""
    odd: list[str] = []
    src, log = summary.get("source") or {}, summary.get("log") or {}
    print(f"source: {src.get('state')}; log: {log.get('state')}; {summary.get('updated')}")
    if src.get("state") != "active":
        odd.append(f"source card: {src.get('state')!r}, not 'active'")
    for what, card in (("source", src), ("log", log)):
        for key in ("warning", "error"):
            if card.get(key):
                odd.append(f"{what} card {key}: {card[key]}")
    if not str(summary.get("updated", "")).startswith("updated"):
        odd.append(f"header: {summary.get('updated')!r}")
    for name, v in summary.get("views", {}).items():
        print(
            f"  {name}: {v['state']}, {v['rate']} events/s, lag {v['lag']}, applied {v['applied']}, "
            f"errors {v['errors']}, {v['points']} chart points"
        )
        if v["error"] or v["action"]:
            odd.append(f"view {name} shows an error: {v['error']} {v['action']}".strip())
        if not v["moving"]:
            odd.append(f"view {name}: its events/s chart is flat (no events in the samples shown)")
    return odd


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _remove_demo_dir(tmp: Path, root: Path) -> None:
    pg = root / "pg"
    if pg.is_symlink():  # the demo's PostgreSQL may keep its files in /tmp behind a symlink
        shutil.rmtree(pg.resolve(), ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # stop the demo like on Ctrl-C


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "console.png", help="the PNG")
    ap.add_argument(
        "--dir", type=Path, help="the demo's directory (the demo empties it first; default: a temporary one)"
    )
    ap.add_argument("--duration", type=float, default=90.0, help="seconds of demo workload (default 90)")
    ap.add_argument("--settle", type=float, default=30.0, help="seconds of charts after ready (default 30)")
    ap.add_argument("--url-timeout", type=float, default=180.0, help="seconds to wait for the console URL")
    ap.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for the cards")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM}", file=sys.stderr)
        return 2
    out: Path = args.out.resolve()
    signal.signal(signal.SIGTERM, _sigterm)

    tmp: Path | None = None
    if args.dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="syncline-console-"))
        tmp.chmod(0o755)  # so the demo's PostgreSQL (user postgres when run as root) keeps its files here
        root = tmp / "demo"
    else:
        root = args.dir.resolve()
    t0 = time.monotonic()
    ok = False
    keep = True  # the demo's files, to look into after a failure (not after a success or Ctrl-C)
    demo = Demo(root, args.duration)
    try:
        url = demo.wait_for_url(args.url_timeout)
        views = view_names(root / "syncline.toml")
        print(f"console at {url}, views {', '.join(views)}", flush=True)
        summary = shoot(demo, url, views, out, args.ready_timeout, args.settle)
        print(f"screenshot taken {time.monotonic() - t0:.0f}s after the demo began: {_rel(out)}", flush=True)
        odd = report(summary)
        errors: list[str] = summary["console_errors"]
        print("the demo goes on to its end check", flush=True)
        rc = demo.finish(timeout=args.duration + 300)
        for line in odd:
            print(f"note: {line}")
        if errors:
            raise ScreenshotFailed("the page logged errors:\n  " + "\n  ".join(errors))
        if rc != 0:
            raise ScreenshotFailed(f"the demo exited {rc}")
        ok, keep = True, False
    except ScreenshotFailed as e:
        print(f"console screenshot failed: {e}", file=sys.stderr)
        log = root / "run.log"
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            print(f"--- last lines of {log}:\n{tail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        keep = False
        return 130
    finally:
        if demo.running():
            print("stopping the demo (SIGINT)", flush=True)
        demo.stop()
        if demo.killed:
            print(f"the demo was killed: look for its processes under {root}", file=sys.stderr)
        if tmp is not None:
            if keep or demo.killed:
                print(f"the demo's files are kept in {root}", file=sys.stderr)
            else:
                _remove_demo_dir(tmp, root)
        if ok:
            failed_name(out).unlink(missing_ok=True)  # a failed attempt's picture is stale now
            print(f"console screenshot: {_rel(out)} ({time.monotonic() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
