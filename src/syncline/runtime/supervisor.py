"""``syncline run``: start the capture and one process per view, supervise, stop cleanly.
``syncline capture`` runs the capture (and the compactor) alone, ``syncline apply --view``
the named views alone: the two halves of ``run``, for separate processes or hosts over a
shared log.

Processes rather than threads: the capture and each view get a core of their own (the GIL
would otherwise serialise them), and a view that crashes cannot take the capture down."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import multiprocessing as mp
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import IO

from syncline.core.config_models import Config, ViewConfig
from syncline.core.errors import LogError
from syncline.log import log_ready, open_control, open_observer
from syncline.log.base import LogControl
from syncline.log.embedded.store import count_start
from syncline.runtime import workers
from syncline.runtime.backoff import Backoff
from syncline.runtime.http import ApiServer, Processes

RUN_LOCK = "run.lock"
"""Held by the process that runs the capture on this log (``run`` or ``capture``)."""

log = logging.getLogger("syncline.run")


COMPACTOR_BATCH_INTERVAL = 0.25
"""The compactor's batches: nothing waits on it, so it batches more than the views."""


class Supervisor:
    def __init__(
        self,
        cfg: Config,
        capture: bool = True,
        views: list[str] | None = None,
        partition: int | None = None,
    ) -> None:
        """``capture``: run the capture and the compactor; ``views``: the views to apply
        (None: every configured view); ``partition``: only that partition of partitioned
        views (None: all of them)."""
        self.cfg = cfg
        self.with_capture = capture
        self.ctx = mp.get_context("spawn")
        self.capture: BaseProcess | None = None
        self.views: dict[str, BaseProcess] = {}
        self.restart_backoff: dict[str, tuple[Backoff, float]] = {}
        self.healthy: dict[str, Event] = {}
        """Per process ("capture", "view NAME"): set once the process got through its start."""
        self.failed_views: set[str] = set()
        self.stopping = False
        self._seen_exits: set[int] = set()
        self.fixable_backoff: dict[str, Backoff] = {}
        self.fixable_due: dict[str, float] = {}
        self._consumers: LogControl | None = None
        self._last_control_check = 0.0
        self.processes = Processes()
        """Read by the HTTP thread (``/healthz``); replaced, never mutated."""
        compactor = ViewConfig(
            name="_compactor",
            kind="compacted",
            batch_events=20_000,
            batch_interval=COMPACTOR_BATCH_INTERVAL,
            options={
                "path": cfg.log.path,
                "retention": cfg.log.retention,
                "views": sorted(cfg.consumers()),
            },
        )
        wanted = [
            a
            for v in cfg.views
            if views is None or v.name in views
            for a in v.appliers()
            if partition is None or a.partition in (None, partition)
        ]
        self.all_views = [compactor, *wanted] if capture else wanted
        self.title = "supervisor" if capture and views is None else "capture" if capture else "apply"

    def _start_capture(self) -> None:
        healthy = self.healthy["capture"] = self.ctx.Event()
        p = self.ctx.Process(target=workers.capture_entry, args=(self.cfg, healthy), name="capture")
        p.start()
        self.capture = p

    def _start_view(self, v: ViewConfig) -> None:
        healthy = self.healthy[f"view {v.consumer}"] = self.ctx.Event()
        p = self.ctx.Process(
            target=workers.view_entry, args=(self.cfg, v, healthy), name=f"view-{v.consumer}"
        )
        p.start()
        self.views[v.consumer] = p

    def run(self) -> int:
        try:
            Path(self.cfg.log.path).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LogError(f"log.path: cannot use {self.cfg.log.path} as the log's directory: {e}") from None
        held = hold_log(Path(self.cfg.log.path), self.title) if self.with_capture else None
        try:
            return self._run()
        finally:
            if held is not None:
                held.close()

    def _run(self) -> int:
        def on_signal(_sig: int, _frm: object) -> None:
            self.stopping = True

        # bound first: a port in use is one clear error before anything starts; the API is
        # served where the capture runs (`apply` processes only apply)
        serve = self.cfg.http.enabled and self.with_capture
        api = ApiServer(self.cfg, lambda: self.processes) if serve else None
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        workers.set_title(self.title)
        if self.with_capture:
            count_start(Path(self.cfg.log.path))
            with contextlib.suppress(OSError):
                (Path(self.cfg.log.path) / workers.OPEN_ERROR).unlink(missing_ok=True)
            self._forget_removed_views()
            self._start_capture()
        for v in self.all_views:
            self._start_view(v)
        if api is not None:
            api.start()
        code = 0
        try:
            while not self.stopping:
                time.sleep(0.2)
                if self._children_exited_cleanly():
                    # SIGTERM/SIGINT sent to the whole process group (Ctrl-C, systemd, kill
                    # -- -PGID) reaches the children first: give our own signal a moment
                    # rather than "restart" children that were asked to stop
                    deadline = time.monotonic() + 2.0
                    while not self.stopping and time.monotonic() < deadline:
                        time.sleep(0.05)
                    if self.stopping:
                        break
                alive = self.capture is not None and self.capture.is_alive()
                self.processes = Processes(alive, frozenset(self.failed_views))
                if self.capture is not None and not alive:
                    rc = self.capture.exitcode
                    if rc == workers.EXIT_TERMINAL:
                        code = 1
                        break
                    # killed or crashed (not a configuration or source error): restart it,
                    # the log and the slot carry on from the last durable position
                    self._restart_when_due("capture", rc, self._start_capture)
                self._retry_failed_views()
                for v in self.all_views:
                    p = self.views.get(v.consumer)
                    if p is None or p.is_alive() or v.consumer in self.failed_views:
                        continue
                    if p.exitcode == workers.EXIT_TERMINAL:
                        self._view_failed(v)
                        continue
                    restart = functools.partial(self._start_view, v)
                    self._restart_when_due(f"view {v.consumer}", p.exitcode, restart)
        finally:
            if api is not None:
                api.stop()
            self._stop_all()
            if self._consumers is not None:
                self._consumers.close()
        if code == 0:
            log.info("stopped")
        if code != 0:
            import sys

            from syncline.core.errors import redact

            reason = self._capture_error() or "the capture stopped unexpectedly (see the log above)"
            print(f"syncline: error: {redact(reason, self.cfg.secrets())}", file=sys.stderr)
        return code

    def _restart_when_due(self, what: str, exitcode: int | None, start: Callable[[], None]) -> None:
        """A process that exited without a terminal error: restart it after a back-off
        (1 s doubling to 60 s; back to 1 s when it had got through its start), logging once
        per exit."""
        b, due = self.restart_backoff.get(what, (Backoff(1.0, 60.0), 0.0))
        now = time.monotonic()
        if due == 0.0:
            started = self.healthy.get(what)
            if started is not None and started.is_set():
                b.reset()  # killed while working (OOM, an operator): not a crash loop
            due = now + b.next_delay()
            self.restart_backoff[what] = (b, due)
            log.warning("%s exited (%s); restarting", what, exitcode)
        if now >= due:
            self.restart_backoff[what] = (b, 0.0)
            start()

    def _control(self) -> LogControl:
        if self._consumers is None:
            self._consumers = open_control(self.cfg.log)
        return self._consumers

    def _view_failed(self, v: ViewConfig) -> None:
        """A view exited with a terminal error: keep it stopped, unless the cause is one a
        change in the target can fix: then retry it with back-off (1 s doubling to 5 min)."""
        self.failed_views.add(v.consumer)
        try:
            fixable, action, _ = self._control().failure(v.consumer)
        except (sqlite3.Error, LogError):
            fixable, action = False, ""
        if not fixable:
            log.error(
                "view %s failed; the others go on (see syncline status). To fix: %s", v.consumer, action
            )
            return
        b = self.fixable_backoff.setdefault(v.consumer, Backoff(1.0, 300.0))
        delay = b.next_delay()
        self.fixable_due[v.consumer] = time.monotonic() + delay
        with contextlib.suppress(sqlite3.Error, LogError):
            self._control().set_next_retry(v.consumer, time.time() + delay)
        log.error("view %s failed; retrying in %.0fs. To fix: %s", v.consumer, delay, action)

    def _retry_failed_views(self) -> None:
        """Restart failed views whose retry is due or was asked for (``syncline retry``)."""
        if not self.failed_views:
            return
        now = time.monotonic()
        if now - self._last_control_check < 0.5:
            return
        self._last_control_check = now
        for v in self.all_views:
            if v.consumer not in self.failed_views:
                continue
            try:
                _, _, asked = self._control().failure(v.consumer)
            except (sqlite3.Error, LogError):
                continue
            due = self.fixable_due.get(v.consumer)
            if not asked and (due is None or now < due):
                continue
            if asked:
                self.fixable_backoff.pop(v.consumer, None)
                log.info("view %s: retry requested; restarting it", v.consumer)
            else:
                log.info("view %s: retrying", v.consumer)
            self.failed_views.discard(v.consumer)
            self.fixable_due.pop(v.consumer, None)
            with contextlib.suppress(sqlite3.Error, LogError):
                self._control().clear_retry_request(v.consumer)
            self._start_view(v)

    def _children_exited_cleanly(self) -> bool:
        """Some child exited as one asked to stop does (0, or killed by SIGTERM/SIGINT before
        it had set its handlers: a child still starting) and we were not asked (yet)."""
        procs = [self.capture, *self.views.values()]
        asked = (0, -signal.SIGTERM, -signal.SIGINT)
        fresh = [
            p
            for p in procs
            if p is not None and not p.is_alive() and p.exitcode in asked and p.pid not in self._seen_exits
        ]
        self._seen_exits.update(p.pid for p in fresh if p.pid is not None)
        return bool(fresh)

    def _capture_error(self) -> str:
        opening = Path(self.cfg.log.path) / workers.OPEN_ERROR
        if opening.exists():  # the capture could not open the log at all
            with contextlib.suppress(OSError):
                return opening.read_text().strip()
        try:
            obs = open_observer(self.cfg.log)
            try:
                return obs.meta("capture_error")
            finally:
                obs.close()
        except Exception:
            return ""

    def _forget_removed_views(self) -> None:
        if not log_ready(self.cfg.log):
            return
        t = open_control(self.cfg.log)
        try:
            gone = t.remove_others(self.cfg.consumers())
            for g in gone:
                log.info("view %s is no longer configured; forgotten", g)
        finally:
            t.close()

    def _stop_all(self) -> None:
        procs = [p for p in [*self.views.values(), self.capture] if p is not None]
        for p in procs:
            if p.is_alive() and p.pid is not None:
                try:
                    import os

                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 30
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()


def hold_log(path: Path, title: str) -> IO[str]:
    """Hold the log directory for this ``run`` (or ``capture``) until the returned file is
    closed; a second one on the same log is refused at once, naming the holder (before it
    touches the log's state, the views' rows or their locks)."""
    f = open(path / RUN_LOCK, "a+")  # noqa: SIM115 - held by the caller
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another syncline process"
        f.close()
        raise LogError(
            f"the log at {path} is in use by {holder}: stop it first, or give this one another [log] path"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"syncline {title} (pid {os.getpid()})")
    f.flush()
    return f


def run(cfg: Config) -> int:
    return Supervisor(cfg).run()


def run_capture(cfg: Config) -> int:
    """``syncline capture``: source → log (and the compactor, which keeps the log's
    compacted state and trims it)."""
    return Supervisor(cfg, capture=True, views=[]).run()


def run_apply(cfg: Config, views: list[str], partition: int | None = None) -> int:
    """``syncline apply --view NAME [--partition I/N]``: log → the named views (one partition
    of them, or all)."""
    return Supervisor(cfg, capture=False, views=views, partition=partition).run()
