"""``syncline demo``: the main demo (what ``make demo`` runs).

A private PostgreSQL (and Redis when installed), a small shop, ``syncline run`` with four
views under a concurrent workload and a live dashboard, one question to each view, and
every view compared with the source. Everything stays in ``--dir`` (./.syncline-demo)."""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from rich.console import Console
from rich.live import Live

from syncline.config import load_config
from syncline.core.config_models import Config
from syncline.demo import shop
from syncline.demo.check import (
    SEARCH_QUERY,
    Targets,
    ask_questions,
    ask_warehouse,
    end_check,
    print_end_check,
)
from syncline.demo.dashboard import Dashboard
from syncline.demo.services import (
    DemoFailed,
    DemoServices,
    Run,
    clear_dir,
    current_lsn,
    no_interrupts,
    sigterm_as_interrupt,
    stop_leftovers,
)
from syncline.runtime.status import views_caught_up
from syncline.testing.pgcluster import PgBinariesMissing, free_port

CACHE_TABLES = ("public.categories", "public.products", "public.customers")
SEARCH_TABLES = ("public.products",)


def write_config(root: Path, svc: DemoServices) -> Path:
    """``syncline.toml`` with paths relative to it (the directory can be moved)."""
    lines = [
        "# Written by `syncline demo`: the shop in the demo's private PostgreSQL and four views.",
        "[source]",
        f'dsn = "{svc.pg_dsn("shop")}"',
        'tables = ["public.*"]',
        'slot = "syncline_demo"',
        'publication = "syncline_demo"',
        "",
        "[log]",
        'path = "log"',
        "",
        "[http]",
        f'listen = "127.0.0.1:{free_port()}"',
        "",
        "[views.replica]",
        'kind = "postgres"',
        f'dsn = "{svc.pg_dsn("replica")}"',
        "",
        "[views.warehouse]",
        'kind = "ducklake"',
        'catalog = "warehouse.sqlite"',
        'data_path = "warehouse"',
        "",
    ]
    if svc.has_redis:
        lines += [
            "[views.cache]",
            'kind = "redis"',
            f'url = "{svc.redis_url()}"',
            f"tables = {_toml_list(CACHE_TABLES)}",
            "",
        ]
    lines += [
        "[views.search]",
        'kind = "tantivy"',
        'path = "search"',
        f"tables = {_toml_list(SEARCH_TABLES)}",
        'text_fields = ["name", "description", "category"]',
        'tokenizer = "en_stem"',
        "",
        "[views.search.document]  # each product with its category's name, kept as categories are renamed",
        'root = "public.products"',
        'parents = [{ table = "public.categories", column = "category_id", fields = { category = "name" } }]',
        "",
    ]
    path = root / "syncline.toml"
    path.write_text("\n".join(lines))
    return path


def _toml_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def _rel(p: Path) -> str:
    try:
        r = p.relative_to(Path.cwd())
        return str(r) if str(r).startswith(".") else f"./{r}"
    except ValueError:
        return str(p)


def _syncline_cmd() -> str:
    exe = Path(sys.executable).parent / "syncline"
    return _rel(exe) if exe.exists() else "syncline"


def main(args: argparse.Namespace) -> int:
    console = Console()
    if not console.is_terminal:  # logs and CI: wide enough for the tables
        console = Console(width=120)
    root = Path(args.dir).resolve()
    dashboard_on = not args.no_dashboard and console.is_terminal
    with sigterm_as_interrupt():
        for what in stop_leftovers(root):
            console.print(f"stopped {what} left running by a previous demo in {_rel(root)}")
        clear_dir(root)
        root.mkdir(parents=True)
        try:
            svc = DemoServices(root)
        except PgBinariesMissing as e:
            console.print(f"[red]syncline demo needs the PostgreSQL server binaries:[/red] {e}")
            return 2
        runs: list[Run] = []
        try:
            return _tour(console, root, svc, args.duration, dashboard_on, runs)
        except KeyboardInterrupt:
            console.print(
                "\n[yellow]interrupted: stopping the workload, syncline run and the servers[/yellow]"
            )
            return 130
        except DemoFailed as e:
            console.print(f"[red]demo failed:[/red] {e}")
            return 1
        finally:
            with no_interrupts():  # a second Ctrl-C must not skip this
                for r in runs:
                    r.stop()
                svc.stop()


def _tour(
    console: Console,
    root: Path,
    svc: DemoServices,
    duration: float,
    dashboard_on: bool,
    runs: list[Run],
) -> int:
    console.rule("[bold]syncline demo")
    svc.start_postgres()
    console.print(
        f"[bold]1.[/bold] private PostgreSQL {svc.pg.version} on 127.0.0.1:{svc.pg.port} "
        f"(wal_level=logical), files in {_rel(root / 'pg')}"
    )
    if svc.has_redis:
        svc.start_redis()
        console.print(f"   private Redis on 127.0.0.1:{svc.redis_port}, files in {_rel(svc.redis_dir)}")
    else:
        console.print(
            "   [yellow]redis-server is not installed: the cache view is left out[/yellow] "
            "(install it, e.g. `apt-get install redis-server`, to see it)"
        )
    svc.pg.psql("CREATE DATABASE shop")
    svc.pg.psql("CREATE DATABASE replica")
    source_dsn = svc.pg_dsn("shop")
    shop.seed(source_dsn, random.Random(7))
    console.print(
        "[bold]2.[/bold] a small shop in database [cyan]shop[/cyan]: "
        + ", ".join(f"{n} {t}" for t, n in _counts(source_dsn).items())
    )
    config = write_config(root, svc)
    cfg = load_config(config)
    names = [v.name for v in cfg.views]
    run = Run(config)
    runs.append(run)
    run.start()
    console.print(
        f"[bold]3.[/bold] syncline run -c {_rel(config)}: snapshot, then streaming into "
        + ", ".join(f"[cyan]{v.name}[/cyan] ({v.kind})" for v in cfg.views)
    )
    console.print(f"   console (every view's lag and events/s, in a browser): http://{cfg.http.listen}/")
    dash = Dashboard(cfg)
    workload = shop.Workload(source_dsn, clients=4)

    def wait_caught_up(timeout: float, tick: Callable[[], None]) -> None:
        lsn = current_lsn(source_dsn)
        deadline = time.monotonic() + timeout
        while not views_caught_up(cfg, lsn, names):
            _check_alive(run, dash)
            if time.monotonic() > deadline:
                raise DemoFailed(f"views not caught up after {timeout:.0f}s; see {_rel(run.log)}")
            tick()

    def phases(tick: Callable[[], None]) -> None:
        dash.phase = "initial snapshot"
        wait_caught_up(120, tick)
        dash.phase = f"workload for {duration:g}s"
        workload.start()
        t0 = time.monotonic()
        try:
            while (elapsed := time.monotonic() - t0) < duration:
                s = workload.stats
                dash.workload = (
                    f"4 clients: {s.transactions:,} transactions "
                    f"({s.transactions / max(elapsed, 0.1):,.0f}/s), "
                    f"{duration - elapsed:.0f}s left"
                )
                _check_alive(run, dash)
                tick()
        finally:
            workload.stop()
        s = workload.stats
        dash.workload = f"4 clients committed {s.transactions:,} transactions in {duration:g}s"
        dash.phase = "catching up"
        wait_caught_up(120, tick)
        dash.phase = "caught up: every view has applied every committed transaction"
        tick()

    if dashboard_on:
        with Live(dash.render(), console=console, refresh_per_second=4, transient=False) as live:

            def tick() -> None:
                dash.sample()
                live.update(dash.render())
                time.sleep(0.5)

            phases(tick)
    else:
        last = [0.0]

        def tick() -> None:
            time.sleep(0.25)
            if time.monotonic() - last[0] >= 2:
                last[0] = time.monotonic()
                dash.sample()
                console.print("   " + dash.line(), highlight=False, markup=False)

        phases(tick)
        dash.sample()
        console.print("   " + dash.line(), highlight=False, markup=False)
    s = workload.stats
    console.print(
        f"   workload: {s.transactions:,} transactions ("
        + ", ".join(f"{n} {k}" for k, n in sorted(s.by_kind.items(), key=lambda kv: -kv[1]))
        + ")"
    )
    targets = Targets(
        source_dsn=source_dsn,
        replica_dsn=svc.pg_dsn("replica"),
        warehouse=str(root / "warehouse.sqlite"),
        warehouse_data=str(root / "warehouse"),
        search=str(root / "search"),
        search_tables=SEARCH_TABLES,
        cache_url=svc.redis_url() if svc.has_redis else None,
        cache_tables=CACHE_TABLES,
    )
    console.rule("[bold]one question to each view")
    ask_warehouse(console, targets)  # while syncline run still writes it
    rc = run.stop()
    console.print(f"[bold]4.[/bold] syncline run stopped (exit {rc}); the other views answer too")
    if rc != 0:
        raise DemoFailed(f"syncline run exited {rc}:\n{run.tail()}")
    ask_questions(console, targets)
    console.rule("[bold]the end check")
    check = end_check(targets)
    print_end_check(console, check)
    verified = _verify(console, cfg, config)
    script = svc.write_script()
    _print_next_steps(console, root, config, script, svc)
    return 0 if check.equal and verified else 1


def _verify(console: Console, cfg: Config, config: Path) -> bool:
    """The same question through ``syncline verify`` (chunked checksums, no row shipping)."""
    from syncline.verify.engine import Options, exit_code, verify

    results = verify(cfg, Options(limit=5))
    summary = ", ".join(f"{name} {r.status}" for name, r in results.items())
    ok = exit_code(results) == 0
    style = "green" if ok else "red"
    console.print(
        f"[bold]{_syncline_cmd()} verify -c {shlex.quote(_rel(config))}[/bold]: [{style}]{summary}[/{style}]",
        highlight=False,
    )
    for name, r in results.items():
        for q, t in r.tables.items():
            if not t.equal:
                console.print(f"  {name} {q}: {t.to_json(5)}", highlight=False)
    return ok


def _counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        out = {}
        for t in shop.TABLES:
            row = conn.execute(f"SELECT count(*) FROM {t}").fetchone()  # noqa: S608
            out[t] = int(row[0]) if row else 0
        return out


def _check_alive(run: Run, dash: Dashboard) -> None:
    rc = run.exited()
    if rc is not None:
        raise DemoFailed(f"syncline run exited {rc}:\n{run.tail()}")
    failed = [n for n, v in dash.snapshot.get("views", {}).items() if v.get("state") == "failed"]
    if failed:
        errors = "; ".join(f"{n}: {dash.snapshot['views'][n].get('error')}" for n in failed)
        raise DemoFailed(f"view(s) failed: {errors}")


def _print_next_steps(console: Console, root: Path, config: Path, script: Path, svc: DemoServices) -> None:
    sl = _syncline_cmd()
    c = shlex.quote(_rel(config))
    s = shlex.quote(_rel(script))
    servers = "PostgreSQL and Redis have" if svc.has_redis else "PostgreSQL has"
    console.rule("[bold]continue from here")
    console.print(
        f"Everything is in {_rel(root)}: the config {_rel(config)}, the log {_rel(root / 'log')}, "
        f"the warehouse {_rel(root / 'warehouse.sqlite')} (a DuckLake, its data in "
        f"{_rel(root / 'warehouse')}), the index {_rel(root / 'search')}, "
        f"syncline's output {_rel(root / 'run.log')}.\n"
        f"The demo's private {servers} stopped with it; start them again (same ports) and resume:",
        highlight=False,
    )
    cmds = [
        (f"sh {s} start", "start the private servers again"),
        (f"{sl} run -c {c}", "resumes where the demo stopped; Ctrl-C stops it"),
        (f"{sl} status -c {c}", "in another terminal: positions, lag and state of every view"),
        (f'{sl} search -c {c} search "{SEARCH_QUERY}"', "query the search view"),
        (
            f'{sl} sql -c {c} warehouse "SELECT count(*) FROM public.orders"',  # noqa: S608
            "query the warehouse, also while run runs (--at LSN: as of a source position)",
        ),
        (f"psql {svc.pg_dsn('shop')}", "change the shop and watch the views follow"),
        (f"{sl} wait -c {c}", "returns once every view has your latest commit"),
        (f"sh {s} stop", "stop the private servers (stop syncline run first)"),
    ]
    width = max(len(cmd) for cmd, _ in cmds)
    for cmd, note in cmds:
        console.print(f"  {cmd.ljust(width)}  [dim]# {note}[/dim]", highlight=False, soft_wrap=True)
    console.print(
        f"Then try [bold]{sl} demo dual-writes[/bold]: why the application should not write to the "
        "cache and the index itself.",
        highlight=False,
    )
