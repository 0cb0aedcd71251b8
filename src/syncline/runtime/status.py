"""What ``syncline status`` and ``syncline wait`` read: the log's control plane (capture
state, consumer positions, through :class:`syncline.log.base.LogObserver`) and the source
(slot, retained WAL). Works whether or not ``run`` runs."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable
from typing import Any

from syncline.core.config_models import Config
from syncline.core.errors import LogError, ViewFailed
from syncline.log import log_exists, log_ready, open_observer
from syncline.log.base import ConsumerRow, LogBusy, LogObserver, by_view
from syncline.sources.registry import format_position, open_admin


def _lsn(v: int) -> str | None:
    return format_position(v) if v else None


def error_counts(obs: LogObserver) -> dict[tuple[str, str], dict[str, int]]:
    """(component, name) -> {"retries": transient errors, "errors": terminal ones}."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for e in obs.errors():
        c = out.setdefault((e.component, e.name), {"retries": 0, "errors": 0})
        c["retries" if e.transient else "errors"] += e.n
    return out


def capture_state(obs: LogObserver) -> str:
    """The capture's recorded state: ``starting`` (connecting, checking), ``snapshotting``,
    ``streaming``, ``retrying``, ``failed`` or ``stopped``. (A log written by an earlier
    version may lack the record: past ``new``, it was started and not stopped since.)"""
    got = obs.meta("capture_state")
    if got:
        return got
    return "stopped" if (obs.meta("state") or "new") == "new" else "starting"


def log_where(cfg: Config) -> dict[str, Any]:
    """The log's kind and location (a NATS log: its stream and servers, credentials removed)."""
    out: dict[str, Any] = {"kind": cfg.log.kind, "path": str(cfg.log.path)}
    if cfg.log.kind == "nats":
        from syncline.log.nats import redact

        out.update(stream=cfg.log.stream, servers=[redact(s) for s in cfg.log.servers])
    return out


def log_status(obs: LogObserver, cfg: Config) -> dict[str, Any]:
    admin = open_admin(cfg)
    first, n = obs.held()
    errs = error_counts(obs).get(("capture", ""), {"retries": 0, "errors": 0})
    return {
        **log_where(cfg),
        "state": obs.meta("state") or "new",
        "capture_state": capture_state(obs),
        "capture_error": obs.meta("capture_error") or None,
        "first_seq": first,
        "last_seq": int(obs.meta("hw", "0")),
        "records": n,
        "last_commit_lsn": _lsn(int(obs.meta("last_commit_lsn", "0"))),
        "received_lsn": _lsn(int(obs.meta("received_lsn", "0"))),
        "size_bytes": obs.size_bytes(),
        "trimmed_seq": int(obs.meta("trimmed_seq", "0")),
        "repairs": int(obs.meta("repairs", "0")),
        "last_repair_seq": int(obs.meta("last_repair_seq", "0")) or None,
        "snapshot_rows": admin.snapshot_rows(obs) if admin.first_copy_running(obs) else None,
        "capture_retries": errs["retries"],
        "capture_errors": errs["errors"],
        "copying": admin.copying(obs),
        "source_to_log": _doc(obs.meta("capture_timing")) or None,
    }


def view_status(obs: LogObserver, cfg: Config) -> dict[str, Any]:
    hw = int(obs.meta("hw", "0"))
    raw = obs.consumers()  # one read: each partition's row, and the views' rows from them
    rows = by_view(raw)
    out: dict[str, Any] = {}
    now = time.time()
    errors = error_counts(obs)
    failures = obs.failures()
    captured = _doc(obs.meta("capture_timing"))
    stats = obs.docs("stats")
    for v in cfg.views:
        r = rows.get(v.name)
        parts = [a.consumer for a in v.appliers()]
        seq = r.seq if r else 0
        lag_events, oldest = obs.events_after(seq, hw)
        lag_s = max(0.0, now - oldest / 1e6) if lag_events and oldest else 0.0
        out[v.name] = {
            "kind": v.kind,
            "state": r.state if r else "new",
            "applied_lsn": _lsn(r.commit_lsn) if r else None,
            "applied_seq": seq,
            "lag_seconds": round(lag_s, 3),
            "lag_events": lag_events,
            "applied_events": r.applied_events if r else 0,
            "error": (r.error or None) if r else None,
            **_summed([errors.get(("view", p), {}) for p in parts]),
            "stages": stages(captured, [stats[p] for p in parts if p in stats]),
        }
        if v.partitions > 1:
            out[v.name]["partitions"] = {
                f"{i}/{v.partitions}": _partition_doc(raw.get(p)) for i, p in enumerate(parts)
            }
        f = next((failures[p] for p in parts if p in failures and _failing(raw.get(p))), None)
        if r and f is not None and _failing(r):
            out[v.name]["action"] = f.action or None
            out[v.name]["next_retry_seconds"] = (
                round(max(0.0, f.next_retry - now), 1) if f.fixable and f.next_retry else None
            )
    return out


def _doc(text: str) -> dict[str, Any]:
    try:
        got = json.loads(text) if text else {}
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


def stages(captured: dict[str, Any] | None, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a view's lag comes from, over the last minute (p50/p99 in seconds; None where
    nothing was measured): ``source_to_log`` (the capture), ``log_to_view`` (the view's end
    to end time less the capture's median: the time in the log and in the view),
    ``end_to_end`` (source commit -> view commit) and ``apply`` (per batch). Of a
    partitioned view, its slowest partition."""

    def worst(key: str) -> dict[str, Any] | None:
        got = [d[key] for d in parts if isinstance(d.get(key), dict)]
        return max(got, key=lambda x: float(x.get("p99", 0))) if got else None

    e2e, apply = worst("end_to_end_seconds"), worst("apply_seconds")
    cap = captured or None
    log_to_view = None
    if e2e is not None:
        base = float(cap.get("p50", 0.0)) if cap else 0.0
        log_to_view = {
            "p50": round(max(0.0, float(e2e["p50"]) - base), 4),
            "p99": round(max(0.0, float(e2e["p99"]) - base), 4),
        }
    return {"source_to_log": cap, "log_to_view": log_to_view, "end_to_end": e2e, "apply": apply}


def view_detail(cfg: Config, name: str) -> dict[str, Any]:
    """The console's page of one view: its status, row changes applied per table (since the
    view was created), and the last ``syncline verify`` (when, per table, repairs)."""
    vcfg = next(v for v in cfg.views if v.name == name)
    out: dict[str, Any] = {"name": name, "kind": vcfg.kind, "tables": {}, "verify": None}
    if not log_ready(cfg.log):
        return out
    with contextlib.suppress(LogBusy):
        obs = open_observer(cfg.log)
        try:
            out["status"] = view_status(obs, cfg).get(name)
            stats = obs.docs("stats")
            tables: dict[str, int] = {}
            for a in vcfg.appliers():
                for t, n in (stats.get(a.consumer, {}).get("tables") or {}).items():
                    tables[str(t)] = tables.get(str(t), 0) + int(n)
            out["tables"] = dict(sorted(tables.items()))
            out["verify"] = obs.docs("verify").get(name)
        finally:
            obs.close()
    return out


def _summed(counts: list[dict[str, int]]) -> dict[str, int]:
    return {k: sum(c.get(k, 0) for c in counts) for k in ("retries", "errors")}


def _failing(r: ConsumerRow | None) -> bool:
    """Failed, or being retried after a failure (``starting`` with the failure's error):
    either way the view does not apply, and ``status`` shows what fixes it."""
    return r is not None and (r.state == "failed" or (r.state == "starting" and bool(r.error)))


def _partition_doc(r: ConsumerRow | None) -> dict[str, Any]:
    """One partition of a partitioned view, in ``status``."""
    if r is None:
        return {"state": "new", "applied_seq": 0, "applied_events": 0, "error": None}
    return {
        "state": r.state,
        "applied_seq": r.seq,
        "applied_events": r.applied_events,
        "error": r.error or None,
    }


def status(cfg: Config, with_source: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {}
    result["source"] = open_admin(cfg).status() if with_source else {}
    try:
        exists = log_exists(cfg.log)
    except LogError as e:  # the log's servers do not answer: say so, never "new"
        result["log"] = {**log_where(cfg), "state": "unreachable", "error": str(e)}
        result["views"] = {
            v.name: {
                "kind": v.kind,
                "state": "unknown",
                "applied_lsn": None,
                "lag_seconds": None,
                "lag_events": None,
            }
            for v in cfg.views
        }
        return result
    if exists:
        with contextlib.suppress(LogBusy):  # `run` is creating the log right now
            obs = open_observer(cfg.log)
            try:
                result["log"] = log_status(obs, cfg)
                result["views"] = view_status(obs, cfg)
                return result
            finally:
                obs.close()
    result["log"] = {**log_where(cfg), "state": "new"}
    result["views"] = {
        v.name: {"kind": v.kind, "state": "new", "applied_lsn": None, "lag_seconds": 0.0, "lag_events": 0}
        for v in cfg.views
    }
    return result


def wait_caught_up(
    cfg: Config,
    lsn: int,
    views: Iterable[str],
    timeout: float,
    stop: threading.Event | None = None,
    interval: float = 0.02,
) -> bool:
    """Poll the log until :func:`views_caught_up` (True) or ``timeout`` seconds or ``stop``
    (False). One read-only look for the whole wait. Raises :class:`ViewFailed` at once when
    one of ``views`` has failed."""
    names = list(views)
    deadline = time.monotonic() + timeout
    obs: LogObserver | None = None
    try:
        while True:
            if obs is None and log_ready(cfg.log):
                with contextlib.suppress(LogError):
                    obs = open_observer(cfg.log)
            if obs is not None:
                with contextlib.suppress(LogBusy):  # the log is being created
                    if caught_up(obs, lsn, names):
                        return True
                    _raise_failed(obs, names)
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return False
            if stop is not None:
                stop.wait(min(interval, left))
            else:
                time.sleep(min(interval, left))
    finally:
        if obs is not None:
            obs.close()


def applied_positions(cfg: Config, views: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each named view's recorded state and applied position (for ``/wait``'s answer)."""
    names = list(views)
    out: dict[str, dict[str, Any]] = {n: {"state": "new", "applied_lsn": None} for n in names}
    if not log_ready(cfg.log):
        return out
    with contextlib.suppress(LogError):
        obs = open_observer(cfg.log)
        try:
            for name, r in by_view(obs.consumers()).items():
                if name in out:
                    out[name] = {"state": r.state, "applied_lsn": _lsn(r.commit_lsn)}
        finally:
            obs.close()
    return out


def views_caught_up(cfg: Config, lsn: int, views: list[str]) -> bool:
    """True once the log has seen everything up to ``lsn`` and each view has applied every
    transaction that committed at or before it."""
    if not log_ready(cfg.log):
        return False
    try:
        obs = open_observer(cfg.log)
    except LogBusy:
        return False
    try:
        return caught_up(obs, lsn, views)
    except LogBusy:  # the log is being created
        return False
    finally:
        obs.close()


def _raise_failed(obs: LogObserver, views: list[str]) -> None:
    """Raise :class:`ViewFailed` for the first of ``views`` recorded as failed."""
    rows = by_view(obs.consumers())
    for name in views:
        r = rows.get(name)
        if r is not None and r.state == "failed":
            raise ViewFailed(name, r.error)


def views_behind(cfg: Config, lsn: int, views: Iterable[str]) -> list[str]:
    """The views of ``views`` that have not applied everything committed up to ``lsn``
    (all of them when the log cannot be read)."""
    return [n for n in views if not views_caught_up(cfg, lsn, [n])]


def caught_up(obs: LogObserver, lsn: int, views: list[str]) -> bool:
    """Through an open look at the log: the log has seen everything up to ``lsn`` and each of
    ``views`` has applied every transaction that committed at or before it (no views: the
    log alone)."""
    if int(obs.meta("received_lsn", "0")) < lsn:
        return False  # the log itself has not reached it (with no view at all, too)
    rows = by_view(obs.consumers())
    for name in views:
        r = rows.get(name)
        if r is None or not caught_up_seq(obs, lsn, r.seq):
            return False
    return True


def caught_up_seq(obs: LogObserver, lsn: int, seq: int) -> bool:
    """A consumer that has applied the log up to record ``seq`` holds every transaction the
    source committed before ``lsn``."""
    if int(obs.meta("received_lsn", "0")) < lsn:
        return False
    if seq < int(obs.meta("trimmed_seq", "0")):
        return False
    return not obs.holds_unapplied(seq, lsn)
