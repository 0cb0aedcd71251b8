"""The console of ``syncline run``: one page at ``/`` on the HTTP listener that shows the
source, the log and one card per view (state, applied position, lag, events/s, a chart of
the last 15 minutes, the error and the action for a failed view).

No build step and nothing fetched from elsewhere: the page is rendered here with its CSS
and a small script inline; the script polls ``/status`` and ``/console/series`` (same
origin, same token rule) and draws the charts as SVG. The series are kept in memory by
:class:`History`, sampled by a thread of the API server (:class:`Sampler`), so a restart of
``run`` starts them again.
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("syncline.console")

KEEP = 900.0
"""Seconds of samples kept (the charts' width)."""
EVERY = 5.0
"""Seconds between samples."""


class History:
    """Per view, the last :data:`KEEP` seconds of (time, applied events, lag in seconds,
    lag in events), one sample per :data:`EVERY` seconds."""

    def __init__(self, keep: float = KEEP) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, dict[str, tuple[int, float, int]]]] = deque()

    def add(self, at: float, views: dict[str, Any]) -> None:
        sample = {
            name: (
                int(v.get("applied_events") or 0),
                float(v.get("lag_seconds") or 0.0),
                int(v.get("lag_events") or 0),
            )
            for name, v in views.items()
        }
        with self._lock:
            self._samples.append((at, sample))
            while self._samples and at - self._samples[0][0] > self.keep:
                self._samples.popleft()

    def series(self) -> dict[str, Any]:
        """``{"t": [...], "views": {name: {"rate": [...], "lag_seconds": [...],
        "lag_events": [...]}}}``; ``rate`` is events/s since the sample before (0 first)."""
        with self._lock:
            samples = list(self._samples)
        names = sorted({n for _, s in samples for n in s})
        out: dict[str, Any] = {"t": [round(t, 3) for t, _ in samples], "views": {}}
        for name in names:
            rate, lag_s, lag_e = [], [], []
            prev: tuple[float, int] | None = None
            for t, s in samples:
                applied, ls, le = s.get(name, (0, 0.0, 0))
                if prev is None or t <= prev[0]:
                    rate.append(0.0)
                else:
                    rate.append(round(max(0, applied - prev[1]) / (t - prev[0]), 1))
                prev = (t, applied)
                lag_s.append(ls)
                lag_e.append(le)
            out["views"][name] = {"rate": rate, "lag_seconds": lag_s, "lag_events": lag_e}
        return out


class Sampler:
    """A daemon thread that adds a sample of ``read()`` (the views of ``status``) to a
    :class:`History` every :data:`EVERY` seconds until stopped."""

    def __init__(self, history: History, read: Callable[[], dict[str, Any]], every: float = EVERY) -> None:
        self.history = history
        self.read = read
        self.every = every
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="console-sampler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.history.add(time.time(), self.read())
            except Exception as e:  # the log starting or busy: the next sample
                log.debug("console sample failed: %s", e)
            self.stopping.wait(self.every)


def page(title: str) -> bytes:
    """The console page (its data arrives from ``/status`` and ``/console/series``)."""
    return _PAGE.replace("__TITLE__", html.escape(title)).encode()


def token_page() -> bytes:
    """What a browser without the token gets (with 401)."""
    return _TOKEN_PAGE.encode()


def series_json(history: History) -> bytes:
    return json.dumps(history.series()).encode()


_TOKEN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>syncline: token required</title></head>
<body style="font-family: sans-serif; margin: 3em">
<h1>syncline console</h1>
<p>This console needs the API token (<code>[http] token</code>). Open
<code>/?token=TOKEN</code> once: the browser keeps it in a cookie for this address.</p>
</body></html>
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>__TITLE__</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 0.8em 1.2em; display: flex; gap: 2em;
           align-items: baseline; flex-wrap: wrap; }
  header h1 { font-size: 1.2em; margin: 0; }
  main { padding: 1em 1.2em; display: grid; gap: 1em;
         grid-template-columns: repeat(auto-fill, minmax(22em, 1fr)); }
  .card { background: #fff; border-radius: 6px; padding: 0.8em 1em; box-shadow: 0 1px 2px #0002; }
  .card h2 { font-size: 1em; margin: 0 0 0.4em 0; display: flex; justify-content: space-between; }
  .state { font-size: 0.8em; padding: 0.1em 0.6em; border-radius: 1em; background: #dfe3ea; }
  .state.running { background: #cdeccf; } .state.failed { background: #f6c9c9; }
  .state.retrying, .state.starting, .state.snapshot { background: #f8e3b5; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: 0.1em 0.8em; margin: 0; font-size: 0.9em; }
  dt { color: #5b6475; } dd { margin: 0; font-variant-numeric: tabular-nums; }
  svg { width: 100%; height: 60px; background: #fafbfc; border: 1px solid #e3e6eb; margin-top: 0.5em; }
  .legend { font-size: 0.75em; color: #5b6475; }
  .error { color: #a11; font-size: 0.85em; white-space: pre-wrap; margin-top: 0.4em; }
  .action { font-size: 0.85em; margin-top: 0.3em; }
  #updated { font-size: 0.8em; color: #c9cfda; }
</style>
</head>
<body>
<header><h1>syncline</h1><span id="source">source: …</span><span id="log">log: …</span>
<span id="updated"></span></header>
<main id="views"></main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
function text(v) { return v === null || v === undefined ? "-" : String(v); }
function fmt(n) { return typeof n === "number" ? n.toLocaleString("en") : text(n); }
function card(name) {
  let c = document.getElementById("view-" + name);
  if (c) return c;
  c = document.createElement("section");
  c.className = "card"; c.id = "view-" + name; c.dataset.view = name;
  c.innerHTML = '<h2><span class="name"></span><span class="state"></span></h2>' +
    '<dl><dt>kind</dt><dd class="kind"></dd><dt>applied</dt><dd class="applied"></dd>' +
    '<dt>lag</dt><dd class="lag"></dd><dt>events/s</dt><dd class="rate"></dd>' +
    '<dt>errors</dt><dd class="errors"></dd></dl>' +
    '<svg class="chart" viewBox="0 0 300 60" preserveAspectRatio="none">' +
    '<polyline class="rate-line" fill="none" stroke="#2f6fde" stroke-width="1.5" points=""/>' +
    '<polyline class="lag-line" fill="none" stroke="#d9822b" stroke-width="1.5" points=""/></svg>' +
    '<div class="legend"><span style="color:#2f6fde">events/s</span> · ' +
    '<span style="color:#d9822b">lag (s)</span> · last 15 minutes</div>' +
    '<div class="error"></div><div class="action"></div>';
  c.querySelector(".name").textContent = name;
  $("views").appendChild(c);
  return c;
}
function points(values, width, height) {
  if (!values.length) return "";
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  const y = (v) => (height - (v / max) * (height - 2) - 1).toFixed(1);
  return values.map((v, i) => (i * step).toFixed(1) + "," + y(v)).join(" ");
}
async function get(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
async function refresh() {
  try {
    const [st, series] = await Promise.all([get("/status"), get("/console/series")]);
    const src = st.source || {};
    $("source").textContent = "source: slot " + text(src.slot) + ", confirmed " + text(src.confirmed_lsn) +
      ", retained WAL " + fmt(src.retained_wal_bytes) + " bytes";
    const lg = st.log || {};
    $("log").textContent = "log: " + text(lg.state);
    for (const [name, v] of Object.entries(st.views || {})) {
      const c = card(name);
      const s = c.querySelector(".state");
      s.textContent = text(v.state); s.className = "state " + text(v.state);
      c.querySelector(".kind").textContent = text(v.kind);
      c.querySelector(".applied").textContent =
        text(v.applied_lsn) + " (" + fmt(v.applied_events) + " events)";
      c.querySelector(".lag").textContent = text(v.lag_seconds) + " s, " + fmt(v.lag_events) + " events";
      c.querySelector(".errors").textContent = fmt(v.errors) + " (" + fmt(v.retries) + " retries)";
      c.querySelector(".error").textContent = v.error ? v.error : "";
      c.querySelector(".action").textContent = v.action ? "to fix: " + v.action : "";
      const sv = (series.views || {})[name];
      if (sv) {
        c.querySelector(".rate-line").setAttribute("points", points(sv.rate, 300, 60));
        c.querySelector(".lag-line").setAttribute("points", points(sv.lag_seconds, 300, 60));
        const last = sv.rate.length ? sv.rate[sv.rate.length - 1] : 0;
        c.querySelector(".rate").textContent = fmt(last);
      }
    }
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("updated").textContent = "cannot reach syncline run (" + e.message + ")";
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""
