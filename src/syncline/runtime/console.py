"""The console of ``syncline run``: one page at ``/`` on the HTTP listener that shows the
source (slot, confirmed position, retained WAL against ``source.retained_wal_warning``), the
log (size, retained range, trimming, copies with their ETA) and one card per view (state,
applied position, lag, events/s, lag per stage, a chart of the last 15 minutes, the error
and the action for a failed view), and a page per view (``/console/view/NAME``: row
changes applied per table, the last ``syncline verify`` and its repairs).

No build step and nothing fetched from elsewhere: the pages are rendered here with their CSS
and a small script inline; the script polls ``/status``, ``/console/series`` and
``/console/view/NAME.json`` (same origin, same token rule) and draws the charts as SVG.
The series are sampled by a thread of the API server (:class:`Sampler`) into
:class:`History`, which keeps them in a file beside the log, so a restarted ``run`` shows
the minutes before it.
"""

from __future__ import annotations

import html
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("syncline.console")

KEEP = 900.0
"""Seconds of samples kept (the charts' width)."""
EVERY = 5.0
"""Seconds between samples."""


class History:
    """Per view, the last :data:`KEEP` seconds of (time, applied events, lag in seconds,
    lag in events), one sample per :data:`EVERY` seconds."""

    def __init__(self, keep: float = KEEP, path: Path | None = None) -> None:
        self.keep = keep
        self.path = path
        """Where the samples are kept between runs (None: in memory only)."""
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, dict[str, tuple[int, float, int]]]] = deque()
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        """The samples a previous run saved, those of the last :attr:`keep` seconds."""
        try:
            doc = json.loads(path.read_text())
            now = time.time()
            for at, views in doc["samples"]:
                if now - float(at) <= self.keep:
                    self._samples.append(
                        (
                            float(at),
                            {str(n): (int(a), float(ls), int(le)) for n, (a, ls, le) in views.items()},
                        )
                    )
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("console: the saved series in %s are unreadable (%s): starting afresh", path, e)
            self._samples.clear()

    def save(self) -> None:
        """Into :attr:`path` (written aside, then renamed: never half a file)."""
        if self.path is None:
            return
        with self._lock:
            doc = {"samples": [[t, {n: list(v) for n, v in s.items()}] for t, s in self._samples]}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError as e:
            log.debug("console: cannot save the series: %s", e)

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
                self.history.save()
            except Exception as e:  # the log starting or busy: the next sample
                log.debug("console sample failed: %s", e)
            self.stopping.wait(self.every)


def page(title: str) -> bytes:
    """The console page (its data arrives from ``/status`` and ``/console/series``)."""
    return _PAGE.replace("__TITLE__", html.escape(title)).encode()


def view_page(name: str) -> bytes:
    """The page of view ``name`` (its data arrives from ``/console/view/NAME.json``)."""
    literal = json.dumps(name).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _VIEW_PAGE.replace("__NAME_JSON__", literal).replace("__NAME__", html.escape(name)).encode()


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

_STYLE = """<style>
  body { font-family: system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 0.8em 1.2em; display: flex; gap: 2em;
           align-items: baseline; flex-wrap: wrap; }
  header h1 { font-size: 1.2em; margin: 0; } header a { color: #9cc0ff; }
  main { padding: 1em 1.2em; display: grid; gap: 1em;
         grid-template-columns: repeat(auto-fill, minmax(24em, 1fr)); }
  .card { background: #fff; border-radius: 6px; padding: 0.8em 1em; box-shadow: 0 1px 2px #0002; }
  .card.warn { box-shadow: 0 0 0 2px #e0a020; }
  .card h2 { font-size: 1em; margin: 0 0 0.4em 0; display: flex; justify-content: space-between; }
  .state { font-size: 0.8em; padding: 0.1em 0.6em; border-radius: 1em; background: #dfe3ea; }
  .state.running, .state.streaming, .state.equal { background: #cdeccf; }
  .state.failed, .state.different, .state.error { background: #f6c9c9; }
  .state.retrying, .state.starting, .state.snapshotting, .state.filling { background: #f8e3b5; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: 0.1em 0.8em; margin: 0; font-size: 0.9em; }
  dt { color: #5b6475; } dd { margin: 0; font-variant-numeric: tabular-nums; }
  svg { width: 100%; height: 60px; background: #fafbfc; border: 1px solid #e3e6eb; margin-top: 0.5em; }
  .legend, .note { font-size: 0.75em; color: #5b6475; }
  .warning { color: #8a5a00; font-size: 0.85em; margin-top: 0.3em; }
  .error { color: #a11; font-size: 0.85em; white-space: pre-wrap; margin-top: 0.4em; }
  .action { font-size: 0.85em; margin-top: 0.3em; }
  .bar { height: 6px; background: #e3e6eb; border-radius: 3px; overflow: hidden; }
  .bar > div { height: 100%; background: #2f6fde; }
  table { border-collapse: collapse; font-size: 0.9em; width: 100%; }
  th, td { text-align: left; padding: 0.2em 0.6em 0.2em 0; border-bottom: 1px solid #eceef2; }
  td.n { text-align: right; font-variant-numeric: tabular-nums; }
  #updated { font-size: 0.8em; color: #c9cfda; }
</style>"""

_SCRIPT_COMMON = """
"use strict";
const $ = (id) => document.getElementById(id);
function text(v) { return v === null || v === undefined ? "-" : String(v); }
function fmt(n) { return typeof n === "number" ? n.toLocaleString("en") : text(n); }
function bytes(n) {
  if (typeof n !== "number") return "-";
  const u = ["B", "kB", "MB", "GB", "TB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + u[i];
}
function secs(v) {
  if (typeof v !== "number") return "-";
  return v < 1 ? Math.round(v * 1000) + " ms" : v < 120 ? v.toFixed(1) + " s" : Math.round(v / 60) + " min";
}
function pair(s) { return s ? secs(s.p50) + " / " + secs(s.p99) : "-"; }
function ago(t) { return typeof t === "number" ? secs(Math.max(0, Date.now() / 1000 - t)) + " ago" : "-"; }
function setState(el, state) { el.textContent = text(state); el.className = "state " + text(state); }
async function get(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
"""

_PAGE = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>__TITLE__</title>
"""
    + _STYLE
    + """
</head>
<body>
<header><h1>syncline</h1><span id="updated"></span></header>
<main id="views">
<section class="card" id="source-card"><h2><span>source</span><span class="state"></span></h2>
<dl><dt>slot</dt><dd class="slot"></dd><dt>confirmed</dt><dd class="confirmed"></dd>
<dt>current</dt><dd class="current"></dd><dt>retained WAL</dt><dd class="retained"></dd></dl>
<div class="warning"></div><div class="error"></div></section>
<section class="card" id="log-card"><h2><span>log</span><span class="state"></span></h2>
<dl><dt>kind</dt><dd class="kind"></dd><dt>size</dt><dd class="size"></dd>
<dt>records held</dt><dd class="range"></dd><dt>trimmed up to</dt><dd class="trimmed"></dd>
<dt>source → log</dt><dd class="stage"></dd><dt>repairs</dt><dd class="repairs"></dd></dl>
<div class="copies"></div><div class="error"></div></section>
</main>
<script>
"""
    + _SCRIPT_COMMON
    + """
function card(name) {
  let c = document.getElementById("view-" + name);
  if (c) return c;
  c = document.createElement("section");
  c.className = "card view"; c.id = "view-" + name; c.dataset.view = name;
  c.innerHTML = '<h2><a class="name detail"></a><span class="state"></span></h2>' +
    '<dl><dt>kind</dt><dd class="kind"></dd><dt>applied</dt><dd class="applied"></dd>' +
    '<dt>lag</dt><dd class="lag"></dd><dt>events/s</dt><dd class="rate"></dd>' +
    '<dt>source → log</dt><dd class="s-log"></dd><dt>log → view</dt><dd class="s-view"></dd>' +
    '<dt>apply per batch</dt><dd class="s-apply"></dd>' +
    '<dt>errors</dt><dd class="errors"></dd></dl>' +
    '<svg class="chart" viewBox="0 0 300 60" preserveAspectRatio="none">' +
    '<polyline class="rate-line" fill="none" stroke="#2f6fde" stroke-width="1.5" points=""/>' +
    '<polyline class="lag-line" fill="none" stroke="#d9822b" stroke-width="1.5" points=""/></svg>' +
    '<div class="legend"><span style="color:#2f6fde">events/s</span> · ' +
    '<span style="color:#d9822b">lag (s)</span> · last 15 minutes · stages p50 / p99, last minute</div>' +
    '<div class="error"></div><div class="action"></div>';
  const a = c.querySelector(".name");
  a.textContent = name; a.href = "/console/view/" + encodeURIComponent(name);
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
function showSource(src) {
  const c = $("source-card");
  const st = src.reachable === false ? "unreachable" : src.active ? "active" : "inactive";
  setState(c.querySelector(".state"), st);
  c.querySelector(".slot").textContent = text(src.slot);
  c.querySelector(".confirmed").textContent = text(src.confirmed_lsn);
  c.querySelector(".current").textContent = text(src.current_lsn);
  c.querySelector(".retained").textContent = bytes(src.retained_wal_bytes) +
    " (warning above " + bytes(src.retained_wal_warning_bytes) + ")";
  c.classList.toggle("warn", !!src.retained_wal_over);
  c.querySelector(".warning").textContent = src.retained_wal_over ?
    "The slot holds back more WAL than source.retained_wal_warning: the capture or a view is far " +
    "behind. PostgreSQL keeps this WAL until syncline confirms it; a full disk stops the source." : "";
  c.querySelector(".error").textContent = src.error ? src.error : "";
}
function showLog(lg) {
  const c = $("log-card");
  setState(c.querySelector(".state"), lg.capture_state || lg.state);
  c.querySelector(".kind").textContent = text(lg.kind) + (lg.stream ? " (stream " + lg.stream + ")" : "");
  c.querySelector(".size").textContent = bytes(lg.size_bytes);
  c.querySelector(".range").textContent = fmt(lg.records) + " (records " + fmt(lg.first_seq) + " to " +
    fmt(lg.last_seq) + ")";
  c.querySelector(".trimmed").textContent = lg.trimmed_seq ?
    "record " + fmt(lg.trimmed_seq) + " (older ones live on compacted)" : "nothing trimmed yet";
  c.querySelector(".stage").textContent = lg.source_to_log ? pair(lg.source_to_log) + " (p50 / p99)" : "-";
  c.querySelector(".repairs").textContent = fmt(lg.repairs);
  const box = c.querySelector(".copies");
  box.textContent = "";
  for (const [table, cp] of Object.entries(lg.copying || {})) {
    const row = document.createElement("div");
    row.className = "copy"; row.dataset.table = table;
    const pct = cp.estimate ? Math.min(100, (100 * cp.rows) / cp.estimate) : 0;
    row.innerHTML = '<div class="note"></div><div class="bar"><div></div></div>';
    row.querySelector(".note").textContent = "copying " + table + ": " + fmt(cp.rows) + " of ~" +
      fmt(cp.estimate) + " rows, " + fmt(cp.rows_per_second) + " rows/s, ETA " + secs(cp.eta_seconds);
    row.querySelector(".bar > div").style.width = pct.toFixed(1) + "%";
    box.appendChild(row);
  }
  c.querySelector(".error").textContent = lg.capture_error ? lg.capture_error : (lg.error || "");
}
async function refresh() {
  try {
    const [st, series] = await Promise.all([get("/status"), get("/console/series")]);
    showSource(st.source || {});
    showLog(st.log || {});
    for (const [name, v] of Object.entries(st.views || {})) {
      const c = card(name);
      setState(c.querySelector(".state"), v.state);
      c.querySelector(".kind").textContent = text(v.kind);
      c.querySelector(".applied").textContent =
        text(v.applied_lsn) + " (" + fmt(v.applied_events) + " events)";
      c.querySelector(".lag").textContent = text(v.lag_seconds) + " s, " + fmt(v.lag_events) + " events";
      const sg = v.stages || {};
      c.querySelector(".s-log").textContent = pair(sg.source_to_log);
      c.querySelector(".s-view").textContent = pair(sg.log_to_view);
      c.querySelector(".s-apply").textContent = pair(sg.apply);
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
)

_VIEW_PAGE = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>syncline: view __NAME__</title>
"""
    + _STYLE
    + """
</head>
<body>
<header><h1><a href="/">syncline</a> / __NAME__</h1><span id="updated"></span></header>
<main>
<section class="card" id="summary"><h2><span>view __NAME__</span><span class="state"></span></h2>
<dl><dt>kind</dt><dd class="kind"></dd><dt>applied</dt><dd class="applied"></dd>
<dt>lag</dt><dd class="lag"></dd><dt>end to end</dt><dd class="e2e"></dd>
<dt>apply per batch</dt><dd class="apply"></dd></dl>
<div class="error"></div><div class="action"></div></section>
<section class="card" id="verify"><h2><span>last verify</span><span class="state"></span></h2>
<dl><dt>ran</dt><dd class="when"></dd><dt>at source position</dt><dd class="lsn"></dd>
<dt>repairs</dt><dd class="repairs"></dd><dt>last repair</dt><dd class="last-repair"></dd></dl>
<div class="note">Run <code>syncline verify --view __NAME__</code> (and <code>--repair</code>) to check
this view against the source.</div></section>
<section class="card" style="grid-column: 1 / -1"><h2>tables</h2>
<table id="tables"><thead><tr><th>table</th><th>row changes applied</th><th>verify</th>
<th>source rows</th><th>view rows</th><th>missing / extra / different</th></tr></thead>
<tbody></tbody></table></section>
</main>
<script>
"""
    + _SCRIPT_COMMON
    + """
const NAME = __NAME_JSON__;
async function refresh() {
  try {
    const d = await get("/console/view/" + encodeURIComponent(NAME) + ".json");
    const v = d.status || {};
    const s = $("summary");
    setState(s.querySelector(".state"), v.state);
    s.querySelector(".kind").textContent = text(d.kind);
    s.querySelector(".applied").textContent = text(v.applied_lsn) + " (" + fmt(v.applied_events) + " events)";
    s.querySelector(".lag").textContent = text(v.lag_seconds) + " s, " + fmt(v.lag_events) + " events";
    const sg = v.stages || {};
    s.querySelector(".e2e").textContent = pair(sg.end_to_end) + " (p50 / p99)";
    s.querySelector(".apply").textContent = pair(sg.apply);
    s.querySelector(".error").textContent = v.error ? v.error : "";
    s.querySelector(".action").textContent = v.action ? "to fix: " + v.action : "";
    const vf = d.verify;
    const vc = $("verify");
    setState(vc.querySelector(".state"), vf ? vf.status : "never");
    vc.querySelector(".when").textContent = vf ? ago(vf.at) : "never";
    vc.querySelector(".lsn").textContent = vf ? text(vf.lsn) : "-";
    vc.querySelector(".repairs").textContent =
      vf ? fmt(vf.repairs) + " (" + fmt(vf.repaired_rows) + " rows)" : "0";
    vc.querySelector(".last-repair").textContent = vf && vf.last_repair_at ? ago(vf.last_repair_at) : "never";
    const checked = (vf && vf.tables) || {};
    const names = Array.from(new Set([...Object.keys(d.tables || {}), ...Object.keys(checked)])).sort();
    const body = document.querySelector("#tables tbody");
    body.textContent = "";
    for (const t of names) {
      const tr = document.createElement("tr");
      tr.dataset.table = t;
      const c = checked[t];
      const cells = [t, fmt((d.tables || {})[t] || 0), c ? c.status : "-", c ? fmt(c.source_rows) : "-",
        c ? fmt(c.view_rows) : "-", c ? c.missing + " / " + c.extra + " / " + c.different : "-"];
      cells.forEach((x, i) => {
        const td = document.createElement("td");
        td.textContent = x;
        td.className = ["table", "n rows", "status", "n", "n", "n"][i];
        tr.appendChild(td);
      });
      body.appendChild(tr);
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
)
