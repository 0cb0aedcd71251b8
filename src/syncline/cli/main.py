"""The ``syncline`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syncline import __version__
from syncline.core.errors import SynclineError, redact


def _load(args: argparse.Namespace) -> Any:
    from syncline.config import load_config

    return load_config(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from syncline.runtime.logsetup import setup_logging
    from syncline.runtime.supervisor import run

    cfg = _load(args)
    setup_logging(cfg.secrets())
    return run(cfg)


def cmd_capture(args: argparse.Namespace) -> int:
    from syncline.runtime.logsetup import setup_logging
    from syncline.runtime.supervisor import run_capture

    cfg = _load(args)
    setup_logging(cfg.secrets())
    return run_capture(cfg)


def cmd_apply(args: argparse.Namespace) -> int:
    from syncline.runtime.logsetup import setup_logging
    from syncline.runtime.supervisor import run_apply

    cfg = _load(args)
    unknown = [n for n in args.view if n not in {v.name for v in cfg.views}]
    if unknown:
        names = ", ".join(v.name for v in cfg.views) or "none"
        print(f"syncline: error: no view {unknown[0]!r} in {cfg.path} (views: {names})", file=sys.stderr)
        return 2
    partition = None
    if args.partition is not None:
        chosen = [v for v in cfg.views if v.name in args.view]
        index, count = _partition_arg(args.partition)
        for v in chosen:
            if v.partitions != count:
                print(
                    f"syncline: error: --partition {args.partition}: view {v.name} is applied in "
                    f"{v.partitions} partition{'s' if v.partitions != 1 else ''} ({cfg.path}: "
                    f"views.{v.name}.partitions = {v.partitions})",
                    file=sys.stderr,
                )
                return 2
        if index is None or not 0 <= index < count:
            print(
                f"syncline: error: --partition {args.partition}: expected I/N with 0 <= I < N",
                file=sys.stderr,
            )
            return 2
        partition = index
    setup_logging(cfg.secrets())
    return run_apply(cfg, list(args.view), partition)


def _partition_arg(text: str) -> tuple[int | None, int]:
    """``I/N`` -> (I, N); (None, 0) when it is not that."""
    i, slash, n = text.partition("/")
    if not slash or not i.strip().isdigit() or not n.strip().isdigit():
        return None, 0
    return int(i), int(n)


def log_where_text(cfg: Any) -> str:
    """Where the log is, for messages (a NATS log: its stream and servers, no credentials)."""
    if cfg.log.kind == "nats":
        from syncline.log.nats import redact

        return f"NATS stream {cfg.log.stream!r} at {', '.join(redact(u) for u in cfg.log.servers)}"
    return str(cfg.log.path)


def status_problems(st: dict[str, Any]) -> list[str]:
    """What makes ``syncline status`` exit 1: an unreachable source, a failed capture or view."""
    out = []
    src = st.get("source", {})
    if src.get("reachable") is False:
        out.append(f"source unreachable: {src.get('error') or 'no connection'}")
    lg = st.get("log", {})
    if lg.get("state") == "unreachable":
        out.append(f"log unreachable: {lg.get('error') or ''}".rstrip(": "))
    if lg.get("capture_state") == "failed":
        out.append(f"capture failed: {lg.get('capture_error') or ''}".rstrip(": "))
    for name, v in st.get("views", {}).items():
        if v.get("state") == "failed" or v.get("action"):  # failed, or retried after a failure
            out.append(f"view {name} failed: {v.get('error') or ''}".rstrip(": "))
    return out


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when the source is reachable and nothing has failed, 1 otherwise."""
    from syncline.runtime.status import status
    from syncline.views.registry import KINDS, kind_module

    cfg = _load(args)
    st = status(cfg)
    code = 1 if status_problems(st) else 0
    for v in cfg.views:  # kinds that keep history (ducklake, iceberg): what is retained
        history = getattr(kind_module(v.kind), "history", None) if v.kind in KINDS else None
        if history is not None and v.name in st["views"]:
            st["views"][v.name]["snapshots"] = history(v)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return code
    src = st["source"]
    lg = st["log"]
    source_line = (
        f"source slot={src.get('slot')} reachable={src.get('reachable')} "
        f"active={src.get('active')} confirmed={src.get('confirmed_lsn')} "
        f"current={src.get('current_lsn')} retained_wal_bytes={src.get('retained_wal_bytes')}"
        + (f" wal_status={src['wal_status']}" if src.get("wal_status") else "")
        + (f" error={src['error']}" if src.get("error") else "")
        + (
            f" WARNING: the slot holds back more WAL than source.retained_wal_warning "
            f"({src['retained_wal_warning_bytes']} bytes): a view or the capture is far behind"
            if src.get("retained_wal_over")
            else ""
        )
    )
    log_line = (
        f"log {'stream ' + lg['stream'] if lg.get('stream') else lg.get('path')} state={lg.get('state')} "
        f"capture={lg.get('capture_state')} records={lg.get('records')} "
        f"seq={lg.get('first_seq')}..{lg.get('last_seq')} last_commit={lg.get('last_commit_lsn')} "
        f"received={lg.get('received_lsn')} size={lg.get('size_bytes')}"
        + (f" snapshot_rows={lg['snapshot_rows']}" if lg.get("snapshot_rows") is not None else "")
        + (f" retries={lg['capture_retries']}" if lg.get("capture_retries") else "")
        + (f" errors={lg['capture_errors']}" if lg.get("capture_errors") else "")
        + (f" error={lg['capture_error']}" if lg.get("capture_error") else "")
        + (f" error={lg['error']}" if lg.get("error") else "")
        + (
            " copying="
            + ",".join(
                f"{q}({c['rows']}/{c['estimate'] or '?'} rows"
                + (f", {c['eta_seconds']:.0f}s left" if c.get("eta_seconds") is not None else "")
                + ")"
                for q, c in sorted(lg["copying"].items())
            )
            if lg.get("copying")
            else ""
        )
    )
    cols = ("view", "kind", "state", "applied_lsn", "applied_seq", "applied_events", "lag_s", "lag_events")
    header = (*cols, "retries", "error")
    rows = [
        (
            name,
            v["kind"],
            v["state"],
            str(v.get("applied_lsn")),
            str(v.get("applied_seq", 0)),
            str(v.get("applied_events", 0)),
            "-" if v.get("lag_seconds") is None else f"{v['lag_seconds']:.3f}",
            str(v.get("lag_events")),
            str(v.get("retries", 0)),
            " ".join((v.get("error") or "").split()),
        )
        for name, v in st["views"].items()
    ]
    for name, v in st["views"].items():  # each partition of a partitioned view, after it
        at = next(i for i, r in enumerate(rows) if r[0] == name) + 1
        for part, d in sorted((v.get("partitions") or {}).items(), reverse=True):
            rows.insert(
                at,
                (
                    f"  {name}[{part}]",
                    v["kind"],
                    d["state"],
                    "",
                    str(d["applied_seq"]),
                    str(d["applied_events"]),
                    "",
                    "",
                    "",
                    " ".join((d.get("error") or "").split()),
                ),
            )
    fixes = [
        f"view {name}: to fix: {v['action']}"
        + (
            f" (next automatic retry in {v['next_retry_seconds']:.0f}s)"
            if v.get("next_retry_seconds")
            else ""
        )
        for name, v in st["views"].items()
        if v.get("action")  # failed, or being retried after a failure
    ] + [
        f"view {name}: {v['snapshots']['retained']} snapshots retained"
        + (
            f", source positions {v['snapshots']['oldest_lsn']} ({v['snapshots']['oldest_time']} UTC) "
            f"to {v['snapshots']['newest_lsn']} ({v['snapshots']['newest_time']} UTC): "
            f"syncline sql {name} --at LSN"
            if v["snapshots"]["retained"]
            else ""
        )
        + (f" ({v['snapshots']['error']})" if v["snapshots"].get("error") else "")
        for name, v in st["views"].items()
        if v.get("snapshots")
    ]
    if not sys.stdout.isatty():
        # piped or redirected: plain text, every column in full (no terminal width to fit)
        print(source_line)
        print(log_line)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip())
        for f in fixes:
            print(f)
        return code
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    c = Console()
    c.print("[bold]source[/bold]" + escape(source_line.removeprefix("source")))
    c.print("[bold]log[/bold]" + escape(log_line.removeprefix("log")))
    t = Table(*header)
    for r in rows:
        t.add_row(*r)
    c.print(t)
    for f in fixes:
        c.print(escape(f))
    return code


def cmd_retry(args: argparse.Namespace) -> int:
    """Ask the running ``syncline run`` to restart a failed view (its next start does anyway)."""

    from syncline.log import log_exists, open_control
    from syncline.runtime.status import status

    cfg = _load(args)
    if args.view not in {v.name for v in cfg.views}:
        print(f"syncline: error: no view named {args.view} in {cfg.path}", file=sys.stderr)
        return 2
    if not log_exists(cfg.log):
        print(f"view {args.view} has not started yet: nothing to retry")
        return 0
    doc = status(cfg, with_source=False)["views"][args.view]
    state = doc["state"]
    if state != "failed":
        print(f"view {args.view} is {state}, not failed: nothing to retry")
        return 0
    t = open_control(cfg.log)
    try:
        view = next(v for v in cfg.views if v.name == args.view)
        parts = doc.get("partitions") or {}
        for a in view.appliers():
            if a.partition is None or parts.get(f"{a.partition}/{a.partitions}", {}).get("state") == "failed":
                t.request_retry(a.consumer)
    finally:
        t.close()
    print(
        f"retry of view {args.view} requested: a running `syncline run` restarts it within a second "
        "(otherwise its next start does); `syncline status` shows how it goes"
    )
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    from syncline.core.errors import CatalogueNotSeen, TablesNotFollowed, ViewFailed
    from syncline.runtime.status import views_behind, wait_caught_up
    from syncline.sources.registry import format_position, open_admin, parse_position

    cfg = _load(args)
    names = args.view or [v.name for v in cfg.views]
    unknown = [n for n in names if n not in {v.name for v in cfg.views}]
    if unknown:
        print(f"syncline: error: no view named {', '.join(unknown)} in {cfg.path}", file=sys.stderr)
        return 2
    try:
        given = parse_position(args.lsn) if args.lsn else None
    except ValueError as e:
        print(f"syncline: error: --lsn: {e}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    try:
        lsn = open_admin(cfg).followed_position(deadline, at=given)
        if wait_caught_up(cfg, lsn, names, max(0.0, deadline - time.monotonic())):
            return 0
    except (TablesNotFollowed, CatalogueNotSeen) as e:
        print(f"syncline: timeout: {redact(str(e), cfg.secrets())}", file=sys.stderr)
        return 1
    except ViewFailed as e:
        print(f"syncline: error: {redact(str(e), cfg.secrets())} (see syncline status)", file=sys.stderr)
        return 2
    behind = views_behind(cfg, lsn, names) or names
    print(
        f"syncline: timeout: {'view' if len(behind) == 1 else 'views'} {', '.join(behind)} "
        f"{'has' if len(behind) == 1 else 'have'} not applied {format_position(lsn)} "
        f"within {args.timeout:g}s",
        file=sys.stderr,
    )
    return 1


def cmd_verify(args: argparse.Namespace) -> int:
    from syncline.verify.chunks import display_key
    from syncline.verify.engine import (
        Options,
        exit_code,
        record_results,
        report_json,
        stderr_progress,
        verify,
        verify_keys,
    )
    from syncline.verify.readers import VerifyError

    cfg = _load(args)
    opts = Options(
        views=args.view or [],
        tables=args.table or [],
        chunk_rows=args.chunk_rows,
        limit=args.limit,
        progress=None if args.quiet else stderr_progress(),
    )
    try:
        results = verify(cfg, opts)
        if args.repair and exit_code(results) == 1:
            from syncline.log import capture_running
            from syncline.verify.repair import (
                RepairStale,
                append_repair,
                await_repair,
                catch_up,
                submit_repair,
            )

            keys = {
                name: {q: t.diff.all_keys() for q, t in r.tables.items() if not t.diff.equal}
                for name, r in results.items()
                if r.status == "different"
            }
            if capture_running(cfg.log):  # `run` runs: through the capture
                for attempt in range(1, 4):
                    request, info = submit_repair(cfg, results)
                    if not request:
                        break
                    try:
                        info = await_repair(cfg, request, info, args.repair_timeout)
                        break
                    except RepairStale:
                        if attempt == 3:
                            raise
            else:  # `run` is stopped: append, then apply to the verified views here
                info = append_repair(cfg, results)
                for name in keys:
                    catch_up(cfg, next(v for v in cfg.views if v.name == name))
            again = verify_keys(cfg, opts, keys)
            for name, r in again.items():
                r.repair = {**info, "before": results[name].to_json(opts.limit)}
            results.update(again)
    except VerifyError as e:
        print(f"syncline: error: {e}", file=sys.stderr)
        return 2
    record_results(cfg, results)
    code = exit_code(results)
    if args.json:
        print(json.dumps(report_json(results, opts.limit), indent=2))
        return code
    for name, r in results.items():
        print(f"{name} ({r.kind}): {r.status}" + (f" — {r.error}" if r.error else ""))
        if r.note:
            print(f"  note: {r.note}")
        if r.repair:
            print(
                f"  repaired: log record {r.repair['seq']}, {r.repair['upserts']} rows written, "
                f"{r.repair['deletes']} deleted"
            )
        for q, t in r.tables.items():
            if t.error:
                print(f"  {q}: error: {t.error}")
                continue
            d = t.diff
            if d.equal:
                print(f"  {q}: equal ({t.source_rows} rows)")
                continue
            print(
                f"  {q}: different: {len(d.missing)} missing, {len(d.extra)} extra, "
                f"{len(d.different)} different (source {t.source_rows} rows, view {t.view_rows})"
            )
            for label, ks in (("missing", d.missing), ("extra", d.extra), ("different", d.different)):
                if ks:
                    more = f" … (+{len(ks) - opts.limit})" if len(ks) > opts.limit else ""
                    print(f"    {label}: {', '.join(display_key(k) for k in ks[: opts.limit])}{more}")
    return code


def cmd_search(args: argparse.Namespace) -> int:
    cfg = _load(args)
    vcfg = next((v for v in cfg.views if v.name == args.view), None)
    if vcfg is None or vcfg.kind != "tantivy":
        print(f"syncline: error: no search (tantivy) view named {args.view!r} in {cfg.path}", file=sys.stderr)
        return 2
    from syncline.views.tantivy.view import search

    hits = search(str(vcfg.options["path"]), args.query, args.limit, order_by=args.sort)
    if args.json:
        print(json.dumps(hits, indent=2, default=str))
        return 0
    for h in hits:
        fields = " ".join(f"{k}={v}" for k, v in h["fields"].items() if v is not None)
        print(f"{h['score']:.3f}  {h['table']}  {h['key']}  {fields}")
    if not hits:
        print("no hits", file=sys.stderr)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    """``syncline record FILE``: the log's last records into a file (for ``replay``)."""
    from syncline.log import log_ready
    from syncline.transform.record import record

    cfg = _load(args)
    if not log_ready(cfg.log):
        print(f"syncline: error: no log at {cfg.log.path} yet: run `syncline run` first", file=sys.stderr)
        return 2
    got = record(cfg, Path(args.file), args.last, tuple(args.table or ()))
    print(f"recorded {got.transactions} transactions ({got.rows} row changes) into {args.file}")
    if got.short:
        print(
            f"syncline: the log holds only the records after {got.trimmed}: retention trimmed the "
            'ones every view had applied ([log] retention = "applied"). To record those too, set '
            '[log] retention = "keep" and restart `run`.',
            file=sys.stderr,
        )
        if not got.transactions:
            return 1
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """``syncline replay FILE``: a transform over recorded changes, offline; what it makes,
    as JSON lines on stdout (exit 1 when it failed on a row)."""
    from syncline.core.errors import ConfigError
    from syncline.transform import load_transform
    from syncline.transform.record import replay
    from syncline.transform.stage import TransformError, TransformStage

    ref, patterns, skip = args.transform, (), False
    if args.view:
        cfg = _load(args)
        vcfg = next((v for v in cfg.views if v.name == args.view), None)
        if vcfg is None:
            print(f"syncline: error: no view named {args.view!r} in {cfg.path}", file=sys.stderr)
            return 2
        ref = ref or vcfg.transform
        patterns, skip = vcfg.tables, vcfg.transform_errors == "skip"
    if not ref:
        print(
            "syncline: error: name a transform (--transform module:function) or a --view with one",
            file=sys.stderr,
        )
        return 2
    try:
        fn = load_transform(ref, Path.cwd())
    except ConfigError as e:
        print(f"syncline: error: --transform: {e}", file=sys.stderr)
        return 2
    stage = TransformStage(fn, ref, args.view or "replay", patterns, skip)
    made = 0
    try:
        for doc in replay(args.file, stage):
            print(json.dumps(doc, ensure_ascii=False))
            made += doc["op"] != "truncate"
    except ValueError as e:
        print(f"syncline: error: {e}", file=sys.stderr)
        return 2
    except TransformError as e:
        print(f"syncline: error: {e}", file=sys.stderr)
        return 1
    print(f"replayed: {made} rows made, {stage.skipped} skipped", file=sys.stderr)
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """One read-only query on a warehouse view (ducklake, iceberg, duckdb), now or ``--at`` a position."""
    from syncline.client import sql
    from syncline.sources.postgres.lsn import parse_lsn

    cfg = _load(args)
    at = None
    if args.at is not None:
        try:
            at = parse_lsn(args.at)
        except ValueError:
            print(f"syncline: error: --at: expected an LSN like 0/16B3748, got {args.at!r}", file=sys.stderr)
            return 2
    answer = sql(cfg, args.view, args.query, at=at)
    if answer.note and not args.quiet:
        print(f"sql: {answer.note}", file=sys.stderr)
    if args.json:
        for row in answer.rows:
            print(json.dumps(dict(zip(answer.columns, row, strict=True)), default=str))
        return 0
    print("\t".join(answer.columns))
    for row in answer.rows:
        print("\t".join("" if v is None else str(v) for v in row))
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Copy tables again into every view, online (watermark chunks taken by `run`)."""

    from syncline.cli.progress import copy_line
    from syncline.core.patterns import table_selected
    from syncline.log import capture_running, log_exists, open_control, open_observer
    from syncline.sources.postgres import catalog as cat
    from syncline.sources.registry import open_admin

    cfg = _load(args)
    if not log_exists(cfg.log):
        print(
            f"syncline: error: no log at {log_where_text(cfg)}: start `syncline run` first", file=sys.stderr
        )
        return 2
    unknown = [v for v in args.view or [] if v not in {x.name for x in cfg.views}]
    if unknown:
        print(f"syncline: error: no view named {', '.join(unknown)} in {cfg.path}", file=sys.stderr)
        return 2
    conn = cat.connect(cfg.source.dsn.value)
    try:
        published = cat.publication_tables(conn, cfg.source.publication) or set()
    finally:
        conn.close()
    wanted = sorted(q for q in published if any(table_selected((t,), q) for t in args.table))
    if not wanted:
        print(
            f"syncline: error: --table {', '.join(args.table)}: no followed table matches "
            f"(followed: {', '.join(sorted(published)) or 'none'})",
            file=sys.stderr,
        )
        return 2
    control = open_control(cfg.log)
    try:
        control.request_copy(wanted)
    finally:
        control.close()
    note = " (every view receives the rows: a copy is idempotent)" if args.view else ""
    if not capture_running(cfg.log):
        print(f"requested a copy of {', '.join(wanted)}; `syncline run` takes it when it starts{note}")
        return 0
    print(f"copying {', '.join(wanted)} into the views while `syncline run` streams{note}")
    if args.no_wait:
        return 0
    deadline = time.monotonic() + args.timeout
    started = False
    tty = sys.stdout.isatty()
    shown = 0  # lines of the last progress block (a TTY redraws it in place)
    last_print = 0.0
    while time.monotonic() < deadline:
        time.sleep(0.5)
        obs = open_observer(cfg.log)
        try:
            pending_req = obs.copy_requests_pending()
            busy = {q: st for q, st in open_admin(cfg).copying(obs).items() if q in wanted}
        finally:
            obs.close()
        if busy:
            started = True
            if tty or time.monotonic() - last_print >= 5:
                last_print = time.monotonic()
                if tty and shown:
                    print(f"\x1b[{shown}A", end="")
                for q, st in sorted(busy.items()):
                    print(("\x1b[2K" if tty else "") + "  " + copy_line(q, st), flush=True)
                shown = len(busy)
        elif started or not pending_req:
            print("done: the rows are logged; `syncline wait` returns once the views applied them")
            return 0
    print(f"syncline: timeout: the copy is still under way after {args.timeout:g}s", file=sys.stderr)
    return 1


def cmd_resync(args: argparse.Namespace) -> int:
    from syncline.sources.postgres.resync import resync

    print(resync(_load(args), force=args.force))
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    """A fresh copy of a view from the log, verified, swapped in atomically."""
    from syncline.runtime.rebuild import rebuild

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"rebuild: {msg}", file=sys.stderr, flush=True)

    print(rebuild(_load(args), args.view, say, verify=not args.no_verify))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from syncline.demo import main as demo_main

    return demo_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncline",
        description="Change data capture from PostgreSQL into derived views, exactly once.",
    )
    p.add_argument("--version", action="version", version=f"syncline {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("-c", "--config", default="syncline.toml", help="config file")
        return sp

    r = add("run", "snapshot on first start, then stream changes into every view")
    r.set_defaults(func=cmd_run)
    cp = add("capture", "the capture half of `run`: source → log (and the log's compactor)")
    cp.set_defaults(func=cmd_capture)
    ap = add("apply", "the apply half of `run`: log → the named views")
    ap.add_argument("--view", action="append", required=True, help="view name (repeatable)")
    ap.add_argument(
        "--partition",
        metavar="I/N",
        help="apply only partition I (0 <= I < N) of views with partitions = N (default: all)",
    )
    ap.set_defaults(func=cmd_apply)
    s = add("status", "positions, lag and state of the source, the log and every view")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    w = add("wait", "wait until views have applied every transaction up to an LSN")
    w.add_argument("--lsn", help="X/Y (default: the source's current WAL position)")
    w.add_argument("--view", action="append", help="view name (repeatable; default all)")
    w.add_argument("--timeout", type=_seconds, default=60.0)
    w.set_defaults(func=cmd_wait)
    rt = add("retry", "restart a failed view (after fixing its cause; see `syncline status`)")
    rt.add_argument("view")
    rt.set_defaults(func=cmd_retry)
    v = add("verify", "compare views with the source; list (and --repair) the differing keys")
    v.add_argument("--view", action="append", help="view name (repeatable; default all)")
    v.add_argument("--table", action="append", help="schema.table or glob (repeatable; default all)")
    v.add_argument("--json", action="store_true")
    v.add_argument("--repair", action="store_true", help="rewrite the differing keys from the source")
    v.add_argument(
        "--repair-timeout", type=float, default=60.0, help="seconds to wait for `run` to take a repair"
    )
    v.add_argument("--limit", type=_count, default=20, help="keys listed per kind of difference")
    v.add_argument("--chunk-rows", type=int, default=1000, help="rows per checksum chunk")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    v.set_defaults(func=cmd_verify)
    sn = add("snapshot", "copy tables again into the views, online (no lock, no pause)")
    sn.add_argument("--table", action="append", required=True, help="schema.table or glob (repeatable)")
    sn.add_argument("--view", action="append", help="view name (repeatable; every view gets the rows)")
    sn.add_argument("--timeout", type=_seconds, default=3600.0, help="seconds to wait for the copy")
    sn.add_argument("--no-wait", action="store_true", help="return once requested")
    sn.set_defaults(func=cmd_snapshot)
    rs = add("resync", "after a lost or invalidated slot: a new slot, then every table copied online")
    rs.add_argument("--force", action="store_true", help="resync even though the slot is healthy")
    rs.set_defaults(func=cmd_resync)
    rb = add("rebuild", "build a fresh copy of a view from the log, verify it, swap it in atomically")
    rb.add_argument("view")
    rb.add_argument("--no-verify", action="store_true", help="swap without comparing with the source")
    rb.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    rb.set_defaults(func=cmd_rebuild)
    q = add("search", "query a search (tantivy) view")
    q.add_argument("view")
    q.add_argument("query")
    q.add_argument("--limit", type=_count, default=10)
    q.add_argument(
        "--sort",
        metavar="COLUMN",
        help="sort by a number or date column instead of relevance (--sort=-COLUMN: descending)",
    )
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_search)
    rc = add("record", "save the log's last records into a file, for `replay` and tests of transforms")
    rc.add_argument("file")
    rc.add_argument("--last", type=int, default=1000, help="how many log records (default 1000)")
    rc.add_argument("--table", action="append", help="only these tables' row changes (glob, repeatable)")
    rc.set_defaults(func=cmd_record)
    rp = add("replay", "run a transform over a recording offline; what it makes as JSON lines")
    rp.add_argument("file")
    rp.add_argument("--transform", metavar="MODULE:FUNCTION", help="the function (default: the view's)")
    rp.add_argument("--view", help="take the transform, tables and transform_errors of this view")
    rp.set_defaults(func=cmd_replay)
    sq = add("sql", "a read-only SQL query on a warehouse view (ducklake, iceberg, duckdb), --at a position")
    sq.add_argument("view")
    sq.add_argument("query")
    sq.add_argument(
        "--at", metavar="LSN", help="answer as of this source position (ducklake and iceberg views)"
    )
    sq.add_argument("--json", action="store_true", help="one JSON object per row")
    sq.add_argument("-q", "--quiet", action="store_true", help="do not say which snapshot answered")
    sq.set_defaults(func=cmd_sql)
    d = sub.add_parser("demo", help="run the main job on embedded defaults (see README)")
    d.add_argument(
        "scenario",
        nargs="?",
        default="shop",
        choices=["shop", "dual-writes"],
        help="shop (default): the main demo; dual-writes: dual writes vs syncline, side by side",
    )
    d.add_argument("--duration", type=float, default=20.0, help="seconds of workload (shop)")
    d.add_argument("--no-dashboard", action="store_true", help="plain progress lines, no live view")
    d.add_argument("--clients", type=int, default=4, help="concurrent clients (dual-writes)")
    d.add_argument("--seed", type=int, default=11, help="seed of the interleavings (dual-writes)")
    d.add_argument("--dir", default=".syncline-demo", help="where the demo keeps its files")
    d.set_defaults(func=cmd_demo)
    return p


def _not_negative(text: str, parse: Callable[[str], float], what: str) -> float:
    """A command-line number: finite, zero or more (argparse shows the error)."""
    try:
        v = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected {what} >= 0, got {text!r}")
    return v


def _seconds(text: str) -> float:
    """A ``--timeout``."""
    return _not_negative(text, float, "a finite number of seconds")


def _count(text: str) -> int:
    """A ``--limit``."""
    return int(_not_negative(text, int, "a whole number"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SynclineError as e:
        secrets: list[str] = []
        with contextlib.suppress(Exception):
            secrets = _load(args).secrets()
        print(f"syncline: error: {redact(str(e), secrets)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
