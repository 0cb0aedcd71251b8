"""The ``syncline`` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
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


def cmd_status(args: argparse.Namespace) -> int:
    from syncline.runtime.status import status

    cfg = _load(args)
    st = status(cfg)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    c = Console()
    src = st["source"]
    lg = st["log"]
    c.print(
        f"[bold]source[/bold] slot={src.get('slot')} reachable={src.get('reachable')} "
        f"confirmed={src.get('confirmed_lsn')} retained_wal_bytes={src.get('retained_wal_bytes')}"
        + (f" error={src['error']}" if src.get("error") else "")
    )
    c.print(
        f"[bold]log[/bold] {lg.get('path')} state={lg.get('state')} "
        f"capture={lg.get('capture_state')} records={lg.get('records')} "
        f"last_commit={lg.get('last_commit_lsn')} size={lg.get('size_bytes')}"
        + (f" error={lg['capture_error']}" if lg.get("capture_error") else "")
    )
    t = Table("view", "kind", "state", "applied_lsn", "lag_s", "lag_events", "error")
    for name, v in st["views"].items():
        t.add_row(
            name,
            v["kind"],
            v["state"],
            str(v.get("applied_lsn")),
            f"{v.get('lag_seconds', 0):.3f}",
            str(v.get("lag_events")),
            v.get("error") or "",
        )
    c.print(t)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    from syncline.core.lsn import parse_lsn
    from syncline.runtime.status import views_caught_up

    cfg = _load(args)
    names = args.view or [v.name for v in cfg.views]
    unknown = [n for n in names if n not in {v.name for v in cfg.views}]
    if unknown:
        print(f"syncline: error: no view named {', '.join(unknown)} in {cfg.path}", file=sys.stderr)
        return 2
    if args.lsn:
        try:
            lsn = parse_lsn(args.lsn)
        except ValueError as e:
            print(f"syncline: error: --lsn: {e}", file=sys.stderr)
            return 2
    else:
        lsn = _current_lsn(cfg)
    deadline = time.monotonic() + args.timeout
    while True:
        if views_caught_up(cfg, lsn, names):
            return 0
        if time.monotonic() >= deadline:
            from syncline.core.lsn import format_lsn

            print(
                f"syncline: timeout: views {', '.join(names)} have not applied "
                f"{format_lsn(lsn)} within {args.timeout:g}s",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.02)


def _current_lsn(cfg: Any) -> int:
    import psycopg

    from syncline.core.lsn import parse_lsn
    from syncline.sources.postgres.replication import session_conninfo

    try:
        with psycopg.connect(session_conninfo(cfg.source.dsn.value), autocommit=True) as conn:
            # the insert position covers commits not yet flushed (synchronous_commit = off)
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    except psycopg.OperationalError as e:
        raise SynclineError(
            f"cannot reach the source to read its WAL position: {str(e).strip().splitlines()[0]}"
        ) from e
    assert row is not None
    return parse_lsn(str(row[0]))


def cmd_search(args: argparse.Namespace) -> int:
    cfg = _load(args)
    vcfg = next((v for v in cfg.views if v.name == args.view), None)
    if vcfg is None or vcfg.kind != "tantivy":
        print(f"syncline: error: no search (tantivy) view named {args.view!r} in {cfg.path}", file=sys.stderr)
        return 2
    from syncline.views.tantivy import search

    hits = search(str(vcfg.options["path"]), args.query, args.limit)
    if args.json:
        print(json.dumps(hits, indent=2, default=str))
        return 0
    for h in hits:
        fields = " ".join(f"{k}={v}" for k, v in h["fields"].items() if v is not None)
        print(f"{h['score']:.3f}  {h['table']}  {h['key']}  {fields}")
    if not hits:
        print("no hits", file=sys.stderr)
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
    s = add("status", "positions, lag and state of the source, the log and every view")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    w = add("wait", "wait until views have applied every transaction up to an LSN")
    w.add_argument("--lsn", help="X/Y (default: the source's current WAL position)")
    w.add_argument("--view", action="append", help="view name (repeatable; default all)")
    w.add_argument("--timeout", type=float, default=60.0)
    w.set_defaults(func=cmd_wait)
    q = add("search", "query a search (tantivy) view")
    q.add_argument("view")
    q.add_argument("query")
    q.add_argument("--limit", type=int, default=10)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_search)
    d = sub.add_parser("demo", help="run the main job on embedded defaults (see README)")
    d.add_argument("--duration", type=float, default=10.0, help="seconds of workload")
    d.add_argument("--dir", default=".syncline-demo", help="where the demo keeps its files")
    d.set_defaults(func=cmd_demo)
    return p


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
