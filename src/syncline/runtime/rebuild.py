"""``syncline rebuild VIEW``: a fresh copy of a view, built from the log while the old one
keeps serving, verified against the source, then swapped in atomically.

The copy is filled from the compacted log (or from the log's first record when nothing was
trimmed yet) and follows the log like any view. Where it is built depends on the store:

- **DuckDB, tantivy**: a shadow file or directory beside the view's own (``PATH.rebuild``),
  exchanged with it by one ``renameat2(RENAME_EXCHANGE)``: a reader opens either the old copy
  or the new one, never a missing or half-built one.
- **Redis**: a shadow database (``rebuild_db``, default the view's database + 1), exchanged
  with the view's by ``SWAPDB``: every client sees the new keys at once.
- **PostgreSQL**: in place, inside ONE replica transaction (every row of the view's tables
  deleted, then refilled): readers keep seeing the old rows (MVCC, no lock beyond a row
  writer's) until the commit shows them the new ones.

Each copy is verified before the swap with ``syncline verify``'s engine: the shadow is moved
along the log until it holds every transaction committed before the verifier's source
snapshot, exactly as ``wait`` counts. A copy that differs is dropped (or rolled back) and the
view keeps its old copy.

While ``syncline run`` runs, its worker for the view goes on applying to the old copy; for
the swap it is paused (a request in the log's control plane, ``LogControl.start_rebuild``;
it lets go of the view's lock at its next batch boundary), and resumes on the new copy from
the copy's own position. During a rebuild nothing is trimmed from the log (the request
holds retention).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from syncline.core.config_models import Config, LogConfig, ViewConfig
from syncline.core.errors import LogError, SynclineError
from syncline.core.events import Checkpoint, Relation, Transaction
from syncline.log import log_exists, open_control, open_cursor, open_observer
from syncline.log.base import LOG_ID
from syncline.runtime.prefetch import Prefetcher
from syncline.verify.source import SourceSnapshot
from syncline.views.base import Batch, InPlaceRebuild, View, advance_relations
from syncline.views.registry import create_view

log = logging.getLogger("syncline.rebuild")

Say = Callable[[str], None]

LOCK_TIMEOUT = 120.0
"""Seconds ``rebuild`` waits for the running worker to let go of the view."""


class RebuildError(SynclineError):
    """A rebuild that cannot start or whose copy did not verify; the view is unchanged."""


# -- the request (shared with the worker and retention through the log's control plane) -----


@contextlib.contextmanager
def _request(cfg: Config, view: str) -> Iterator[Callable[[], None]]:
    """Register the rebuild (holds retention); the yielded function asks the worker to pause."""
    control = open_control(cfg.log)
    try:
        try:
            control.start_rebuild(view)
        except LogError as e:
            raise RebuildError(str(e)) from None
        yield lambda: control.pause_for_rebuild(view)
    finally:
        control.end_rebuild(view)
        control.close()


def _take_view_lock(path: Path, view: str, timeout: float) -> Any:
    """The view's lock (held by its worker while ``run`` runs; let go once paused)."""
    from syncline.runtime.workers import wait_flock

    f = open(path / f"view-{view}.lock", "a+")  # noqa: SIM115 - returned to the caller
    if not wait_flock(f, threading.Event(), timeout=timeout):
        f.close()
        raise RebuildError(
            f"view {view}: its worker did not let go of it within {timeout:g}s "
            "(see `syncline status`); nothing was swapped"
        )
    return f


# -- where a copy is built, and how it is swapped in ---------------------------------------


class Target(Protocol):
    shadow: ViewConfig
    in_place: bool

    def prepare(self) -> None:
        """Remove what a rebuild that died left behind; check the shadow's place is free."""
        ...

    def swap(self) -> None:
        """Exchange the shadow and the view's copy, atomically."""
        ...

    def discard(self) -> None:
        """Remove the shadow (after a swap: the old copy)."""
        ...


def _exchange(a: str, b: str) -> None:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); ``b`` may not exist
    yet, then it is a plain rename."""
    if not os.path.exists(a):
        os.rename(b, a)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, a.encode(), at_fdcwd, b.encode(), rename_exchange) != 0:
        err = ctypes.get_errno()
        raise RebuildError(f"cannot exchange {a} and {b}: {os.strerror(err)}")


@dataclass
class PathTarget:
    """A store that is a file or a directory (DuckDB, tantivy): a shadow beside the view's
    own (``PATH.rebuild``), exchanged with it. ``before_swap`` gets both paths first."""

    shadow: ViewConfig
    live_path: str
    before_swap: Callable[[tuple[str, str]], None] | None = None
    in_place: bool = False

    @classmethod
    def beside(
        cls, vcfg: ViewConfig, before_swap: Callable[[tuple[str, str]], None] | None = None, **options: object
    ) -> PathTarget:
        """The shadow of ``vcfg`` at ``PATH.rebuild``, with ``options`` changed."""
        live = str(vcfg.options["path"]).rstrip("/")
        opts = {**vcfg.options, **options, "path": live + ".rebuild"}
        return cls(replace(vcfg, options=opts), live, before_swap)

    @property
    def shadow_path(self) -> str:
        return str(self.shadow.options["path"])

    def _remove(self) -> None:
        p = self.shadow_path
        if os.path.isdir(p):
            shutil.rmtree(p)
        for f in (p, p + ".wal"):
            if os.path.isfile(f):
                os.unlink(f)

    def prepare(self) -> None:
        self._remove()

    def swap(self) -> None:
        if self.before_swap is not None:
            self.before_swap((self.live_path, self.shadow_path))
        _exchange(self.live_path, self.shadow_path)

    def discard(self) -> None:
        self._remove()


@dataclass
class InPlaceTarget:
    """A store rebuilt inside one of its own transactions (the PostgreSQL replica,
    :class:`~syncline.views.base.InPlaceRebuild`): nothing to swap."""

    shadow: ViewConfig
    in_place: bool = True

    def prepare(self) -> None:
        pass

    def swap(self) -> None:
        pass

    def discard(self) -> None:
        pass


def target_for(cfg: Config, vcfg: ViewConfig) -> Target:
    """Where the kind builds a copy (its package's ``rebuild_target``)."""
    from syncline.views.registry import KINDS, kind_module

    make: Callable[[Config, ViewConfig], Target] | None = (
        getattr(kind_module(vcfg.kind), "rebuild_target", None) if vcfg.kind in KINDS else None
    )
    if make is None:
        raise RebuildError(f"view {vcfg.name}: kind {vcfg.kind!r} cannot be rebuilt")
    return make(cfg, vcfg)


# -- the copy -----------------------------------------------------------------------------


class Builder:
    """Applies the log (after a fill from the compacted log) to a view it owns."""

    def __init__(self, view: View, vcfg: ViewConfig, log: LogConfig, commit: bool, say: Say) -> None:
        self.view = view
        self.vcfg = vcfg
        self.log = log
        self.commit = commit
        """False: every batch stays in the view's open transaction (:meth:`finish` commits)."""
        self.say = say
        self.cp = Checkpoint()
        self.relations: dict[int, Relation] = {}
        self.rows = 0
        self._prefetch: Prefetcher | None = None
        self._open = False
        self._reader = open_cursor(log)
        self.log_id = self._reader.meta(LOG_ID)
        self._obs = open_observer(log)
        self._held: list[Transaction] = []
        """Transactions read but not applied yet (beyond a position :meth:`advance_to` stops at)."""

    def _apply(self, batch: Batch) -> None:
        if not self.commit:
            batch.commit = False
        self.view.apply(batch)
        advance_relations(batch)
        self.cp = batch.checkpoint

    @staticmethod
    def compacted_state(log: LogConfig) -> Iterator[Transaction] | None:
        """The compacted log's state when the log was trimmed (None: the log is whole), its
        read already begun: the state is the compactor's position as of this call."""
        from syncline.log.embedded.compact import iter_compacted

        reader = open_cursor(log)
        try:
            if reader.trimmed_seq() == 0:
                return None
        finally:
            reader.close()
        gen = iter_compacted(Path(log.path))
        first = next(gen, None)
        return itertools.chain([first] if first is not None else [], gen)

    def fill(self, state: Iterator[Transaction] | None) -> None:
        """Apply :meth:`compacted`'s state (nothing when None)."""
        if state is None:
            return
        self.say("filling from the compacted log")
        for txn in state:
            self.rows += len(txn.items)
            cp = Checkpoint(txn.seq, txn.commit_lsn, self.log_id)
            self._apply(Batch([txn], self.relations, cp, len(txn.items), txn.last))
        self.say(f"filled {self.rows} rows up to log record {self.cp.seq}")

    def _next(self, timeout: float) -> list[Transaction]:
        if self._held:
            txns, self._held = self._held, []
            return txns
        if self._prefetch is None:
            if self._reader.trimmed_seq() > self.cp.seq:  # trimmed just before the hold
                raise RebuildError("the log was trimmed while the rebuild began: run it again")
            self.relations = self._reader.relations_at(self.cp.seq)
            self._prefetch = Prefetcher(self.log, self.cp, self.vcfg.batch_events, log_id=self.log_id)
        return self._prefetch.get(timeout) or []

    def step(self, timeout: float = 0.05, upto: int | None = None) -> bool:
        """Apply the next batch of the log (only transactions committed at or before
        ``upto``, the rest held); False when nothing was applied."""
        txns = self._next(timeout)
        if upto is not None:
            n = next((i for i, t in enumerate(txns) if t.commit_lsn > upto), len(txns))
            txns, self._held = txns[:n], txns[n:] + self._held
        if not txns:
            return False
        last = txns[-1]
        n = sum(len(t.items) for t in txns)
        self.rows += n
        cp = Checkpoint(last.seq, last.commit_lsn, self.log_id)
        batch = Batch(txns, self.relations, cp, n, commit=last.last)
        self._apply(batch)
        self._open = not last.last
        return True

    def catch_up(self) -> None:
        """Up to the log's end as it is now (and never inside a source transaction)."""
        hw = self._reader.hw()  # held transactions are below it: step() applies them first
        last_say = time.monotonic()
        while self.cp.seq < hw or self._open:
            self.step(0.2)
            if time.monotonic() - last_say >= 2:
                last_say = time.monotonic()
                self.say(f"applied log record {self.cp.seq} of {hw}")

    def advance_to(self, lsn: int, timeout: float) -> bool:
        """Until the copy holds exactly the transactions committed at or before ``lsn`` (a
        source snapshot's position): those after it are held back, so the copy compares
        equal to that snapshot with no second round. False after ``timeout`` seconds."""
        from syncline.runtime.status import caught_up_seq

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._held and self._held[0].commit_lsn > lsn and not self._open:
                break
            if not self._open and caught_up_seq(self._obs, lsn, self.cp.seq):
                break
            self.step(0.05, upto=lsn)
        else:
            return False
        if hasattr(self.view, "flush"):
            self.view.flush()
        return True

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.close()
        self._reader.close()
        self._obs.close()


def rebuild(cfg: Config, name: str, say: Say, verify: bool = True) -> str:
    """Rebuild view ``name``; return a one-line summary (raise :class:`RebuildError`)."""
    from syncline.sources.registry import open_admin

    known = {v.name: v for v in cfg.views if v.kind != "compacted"}
    vcfg = known.get(name)
    if vcfg is None:
        raise RebuildError(f"no view named {name} in {cfg.path}")
    if vcfg.partitions > 1:
        raise RebuildError(
            f"view {name} is applied in {vcfg.partitions} partitions: `syncline rebuild` cannot swap "
            "a partitioned view yet; stop its appliers, empty its store and start them again to refill it"
        )
    path = Path(cfg.log.path)
    if not log_exists(cfg.log):
        raise RebuildError(f"no log at {path}: `syncline run` has never run with this config")
    obs = open_observer(cfg.log)
    try:
        if obs.meta("state") != "streaming":
            raise RebuildError("the first copy of the source is not done yet: rebuild once it is")
        copying = open_admin(cfg).copying(obs)
    finally:
        obs.close()
    if copying:
        busy = ", ".join(sorted(copying))
        raise RebuildError(f"tables are being copied ({busy}): rebuild once that is done")
    from syncline.log import capture_running

    if verify and not capture_running(cfg.log):
        raise RebuildError(
            "verifying the new copy needs `syncline run` running (the copy must reach the source's "
            "current position through the log): start it, or swap unverified with --no-verify"
        )
    target = target_for(cfg, vcfg)
    started = time.monotonic()
    with _request(cfg, name) as pause:
        target.prepare()
        lock = None
        view = create_view(target.shadow)
        builder: Builder | None = None
        swapped = False
        snap: SourceSnapshot | None = None
        try:
            if target.in_place:
                say("pausing the view's worker (the replica keeps its rows until the commit)")
                pause()
                lock = _take_view_lock(path, name, LOCK_TIMEOUT)
                # the compacted state (read begun: its position is older than what
                # follows), then the source snapshot, then the replica's transaction:
                # creating the snapshot's slot waits for every transaction of the cluster,
                # the replica's open one too when both share a server
                state = Builder.compacted_state(cfg.log)
                snap = SourceSnapshot(cfg.source.dsn.value) if verify else None
                view.open()
                assert isinstance(view, InPlaceRebuild)
                view.begin_rebuild()
            elif view.open().seq != 0:
                raise RebuildError(f"the shadow copy of {name} is not empty")
            else:
                state = Builder.compacted_state(cfg.log)
            builder = Builder(view, target.shadow, cfg.log, commit=not target.in_place, say=say)
            builder.fill(state)
            if target.in_place and snap is not None:
                _verify(cfg, vcfg, target, builder, snap, say)
            builder.catch_up()
            if lock is None:
                say("pausing the view's worker for the swap")
                pause()
                lock = _take_view_lock(path, name, LOCK_TIMEOUT)
                if verify:
                    snap = SourceSnapshot(cfg.source.dsn.value)
                    _verify(cfg, vcfg, target, builder, snap, say)
            builder.catch_up()
            if isinstance(view, InPlaceRebuild) and target.in_place:
                view.finish_rebuild(builder.cp)
            view.close()
            target.swap()
            swapped = True
            control = open_control(cfg.log)
            try:
                control.update(name, vcfg.kind, seq=builder.cp.seq, commit_lsn=builder.cp.commit_lsn)
            finally:
                control.close()
        finally:
            if snap is not None:
                snap.close()
            if builder is not None:
                builder.close()
            with contextlib.suppress(Exception):
                view.close()
            with contextlib.suppress(Exception):
                target.discard()  # the failed shadow, or the old copy
            if lock is not None:
                lock.close()
    assert swapped and builder is not None
    took = time.monotonic() - started
    how = "verified and swapped in" if verify else "swapped in (not verified)"
    return (
        f"view {name} rebuilt: {builder.rows} changes applied up to log record {builder.cp.seq}, "
        f"{how} in {took:.1f}s"
    )


def _verify(
    cfg: Config, vcfg: ViewConfig, target: Target, builder: Builder, snap: SourceSnapshot, say: Say
) -> None:
    """Compare the copy, brought to exactly the snapshot's position, with the snapshot."""
    from syncline.verify.engine import Options, Verifier, exit_code
    from syncline.verify.readers import open_reader, reader_on_view

    say("verifying the new copy against the source")
    own = reader_on_view(target.shadow, builder.view)

    def reader(_v: ViewConfig) -> Any:
        return own if own is not None else open_reader(target.shadow)

    opts = Options(
        views=[vcfg.name],
        rounds=1,
        wait_timeout=LOCK_TIMEOUT,
        progress=lambda m: say(f"verify: {m}"),
        catch_up=builder.advance_to,
        reader=reader,
    )
    results = Verifier(cfg, opts).run(snap)
    res = results[vcfg.name]
    if exit_code(results) != 0:
        bad = [f"{t}: {r.to_json(5)}" for t, r in res.tables.items() if not r.equal]
        raise RebuildError(
            f"the new copy of {vcfg.name} differs from the source; the view keeps its old copy. "
            + (res.error or "; ".join(bad))[:2000]
        )
    say(f"verified: {sum(t.view_rows for t in res.tables.values())} rows in {len(res.tables)} tables equal")
