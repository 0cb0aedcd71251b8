"""Prometheus metrics of ``syncline run`` (``GET /metrics``), read at scrape time.

Nothing is counted in memory: every value comes from the log's control plane (capture state and
positions, each view's recorded progress, error counts kept by the workers) and from the
source (slot, retained WAL), so a scrape shows what ``syncline status`` shows, and counters
survive restarts. Every name starts with ``syncline_``; LSNs are exported as numbers (bytes
of WAL), seqs as log record numbers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from syncline.core.config_models import Config
from syncline.core.errors import LogError
from syncline.log import log_ready, open_observer
from syncline.log.base import ErrorRow, LogBusy, LogObserver
from syncline.runtime.status import (
    capture_state,
    view_status,
)
from syncline.sources.registry import open_admin, parse_position

CONTENT_TYPE = CONTENT_TYPE_LATEST
CAPTURE_STATES = ("starting", "snapshotting", "streaming", "retrying", "failed", "stopped")
LOG_STATES = ("new", "snapshotting", "streaming")
VIEW_STATES = ("new", "starting", "filling", "running", "retrying", "failed", "stopped")


def _lsn(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return float(parse_position(text))
    except ValueError:
        return None


class SynclineCollector(Collector):
    """A custom collector: one read of the log (in one SQLite read transaction) and one
    query of the source per scrape."""

    def __init__(
        self,
        cfg: Config,
        source: Callable[[Config], dict[str, Any]] | None = None,
        capture_alive: Callable[[], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.capture_alive = capture_alive
        """The supervisor's view of its capture process (``syncline_capture_up``)."""
        self._captured: tuple[int, int] | None = None
        """(log seq, events captured up to it): later scrapes only sum the new records."""
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return []  # no scrape at registration

    def collect(self) -> Iterable[Metric]:
        with self._lock:  # scrapes may overlap (one thread per request)
            return self._collect()

    def _collect(self) -> list[Metric]:
        out: list[Metric] = []
        if self.capture_alive is not None:
            up = GaugeMetricFamily("syncline_capture_up", "1 while the capture process runs")
            up.add_metric([], 1.0 if self.capture_alive() else 0.0)
            out.append(up)
        self._source_metrics(out)
        obs: LogObserver | None = None
        if log_ready(self.cfg.log):
            with contextlib.suppress(LogError):
                obs = open_observer(self.cfg.log)
        if obs is None:
            self._views(out, {v.name: {"kind": v.kind, "state": "new"} for v in self.cfg.views}, [])
            return out
        try:
            with obs.consistent():
                self._log_metrics(out, obs)
                self._views(out, view_status(obs, self.cfg), obs.errors())
        except LogBusy:  # the log is being created
            pass
        finally:
            obs.close()
        return out

    # ------------------------------------------------------------------ parts

    def _source_metrics(self, out: list[Metric]) -> None:
        src = self.source(self.cfg) if self.source is not None else open_admin(self.cfg).status()
        up = GaugeMetricFamily("syncline_source_up", "1 when the source answered this scrape")
        up.add_metric([], 1.0 if src.get("reachable") else 0.0)
        out.append(up)
        retained = src.get("retained_wal_bytes")
        if retained is not None:
            g = GaugeMetricFamily(
                "syncline_source_retained_wal_bytes", "WAL the replication slot keeps on the source"
            )
            g.add_metric([], float(retained))
            out.append(g)
        for key, name, doc in (
            ("confirmed_lsn", "syncline_source_confirmed_lsn", "the slot's confirmed flush LSN"),
            ("current_lsn", "syncline_source_current_lsn", "the source's current WAL LSN"),
        ):
            v = _lsn(src.get(key))
            if v is not None:
                g = GaugeMetricFamily(name, doc + " (bytes)")
                g.add_metric([], v)
                out.append(g)

    def _captured_events(self, obs: LogObserver, hw: int) -> int:
        trimmed = int(obs.meta("trimmed_seq", "0"))
        cached = self._captured
        if cached is None or cached[0] < trimmed or cached[0] > hw:
            start, total = trimmed, int(obs.meta("trimmed_events", "0"))
        else:
            start, total = cached
        total += obs.events_after(start, hw)[0]
        self._captured = (hw, total)
        return total

    def _log_metrics(self, out: list[Metric], obs: LogObserver) -> None:
        hw = int(obs.meta("hw", "0"))
        captured = CounterMetricFamily(
            "syncline_events_captured", "change events (rows of the snapshot included) appended to the log"
        )
        captured.add_metric([], float(self._captured_events(obs, hw)))
        out.append(captured)
        for name, doc, states, cur in (
            (
                "syncline_capture_state",
                "1 for the capture process's state (starting: connecting and checking the source)",
                CAPTURE_STATES,
                capture_state(obs),
            ),
            (
                "syncline_log_state",
                "1 for the log's state (new, snapshotting: the initial snapshot, streaming)",
                LOG_STATES,
                obs.meta("state") or "new",
            ),
        ):
            g = GaugeMetricFamily(name, doc, labels=["state"])
            for s in sorted({*states, cur}):
                g.add_metric([s], 1.0 if s == cur else 0.0)
            out.append(g)
        first, n = obs.held()
        size = obs.size_bytes()
        for name, doc, value in (
            ("syncline_log_size_bytes", "bytes of the log database files", size),
            ("syncline_log_records", "records (transaction parts) the log holds", n or 0),
            ("syncline_log_first_seq", "the oldest record the log holds (0: none)", first or 0),
            ("syncline_log_last_seq", "the newest complete transaction's last record", hw),
            (
                "syncline_log_trimmed_seq",
                "records up to this one were trimmed",
                obs.meta("trimmed_seq", "0"),
            ),
            (
                "syncline_log_last_commit_lsn",
                "commit LSN of the newest transaction in the log (bytes)",
                obs.meta("last_commit_lsn", "0"),
            ),
            (
                "syncline_log_repairs",
                "repair transactions `syncline verify --repair` appended to the log",
                obs.meta("repairs", "0"),
            ),
            (
                "syncline_log_received_lsn",
                "the log has every transaction that committed before this LSN (bytes)",
                obs.meta("received_lsn", "0"),
            ),
        ):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            out.append(g)
        admin = open_admin(self.cfg)
        snapshotting = admin.first_copy_running(obs)
        g = GaugeMetricFamily("syncline_snapshot_in_progress", "1 while the initial snapshot runs")
        g.add_metric([], 1.0 if snapshotting else 0.0)
        out.append(g)
        g = GaugeMetricFamily(
            "syncline_snapshot_rows",
            "rows the initial snapshot (the first start's copy) logged, so far while it runs",
        )
        g.add_metric([], float(admin.snapshot_rows(obs)))
        out.append(g)
        g = GaugeMetricFamily(
            "syncline_table_copy_rows",
            "rows copied so far of each table being copied online (new, changed by DDL, or asked for)",
            labels=["table"],
        )
        for table, st in sorted(admin.copying(obs).items()):
            g.add_metric([table], float(st["rows"]))
        out.append(g)

    def _views(self, out: list[Metric], views: dict[str, Any], errors: list[ErrorRow]) -> None:
        labels = ["view", "kind"]
        applied = CounterMetricFamily(
            "syncline_view_applied_events", "change events the view has applied", labels=labels
        )
        seq = GaugeMetricFamily(
            "syncline_view_applied_seq", "the last log record the view applied", labels=labels
        )
        lsn = GaugeMetricFamily(
            "syncline_view_applied_lsn",
            "commit LSN of the last transaction the view applied (bytes)",
            labels=labels,
        )
        lag_s = GaugeMetricFamily(
            "syncline_view_lag_seconds",
            "age of the oldest transaction the view has not applied",
            labels=labels,
        )
        lag_e = GaugeMetricFamily(
            "syncline_view_lag_events", "change events in the log the view has not applied", labels=labels
        )
        state = GaugeMetricFamily(
            "syncline_view_state", "1 for the view's current state", labels=[*labels, "state"]
        )
        for name, v in views.items():
            lv = [name, str(v.get("kind", ""))]
            applied.add_metric(lv, float(v.get("applied_events", 0)))
            seq.add_metric(lv, float(v.get("applied_seq", 0)))
            lsn.add_metric(lv, _lsn(v.get("applied_lsn")) or 0.0)
            lag_s.add_metric(lv, float(v.get("lag_seconds", 0.0)))
            lag_e.add_metric(lv, float(v.get("lag_events", 0)))
            cur = str(v.get("state", "new"))
            for s in sorted({*VIEW_STATES, cur}):
                state.add_metric([*lv, s], 1.0 if s == cur else 0.0)
        out += [applied, seq, lsn, lag_s, lag_e, state]
        errs = CounterMetricFamily(
            "syncline_errors",
            "errors by component (capture, view), view, error class and kind (transient: retried)",
            labels=["component", "view", "error", "kind"],
        )
        retries = CounterMetricFamily(
            "syncline_retries", "restarts after a transient error", labels=["component", "view"]
        )
        per: dict[tuple[str, str], float] = {("capture", ""): 0.0}
        per.update({("view", n): 0.0 for n in views})
        for e in errors:
            key = (e.component, e.name)
            errs.add_metric([*key, e.error, "transient" if e.transient else "terminal"], float(e.n))
            if e.transient:
                per[key] = per.get(key, 0.0) + float(e.n)
        for key, n in sorted(per.items()):
            retries.add_metric(list(key), n)
        out += [errs, retries]


class Metrics:
    """The registry ``GET /metrics`` renders (only syncline's own collector: every name
    starts with ``syncline_``)."""

    def __init__(self, cfg: Config, capture_alive: Callable[[], bool] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SynclineCollector(cfg, capture_alive=capture_alive)
        self.registry.register(self.collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)
