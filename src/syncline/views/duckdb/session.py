"""Every DuckDB connection syncline opens (the views, their readers, ``syncline sql``).

DuckDB draws a progress bar on stdout for any query that runs longer than two seconds, even
when stdout is a pipe: ``syncline sql --json`` or a script reading a lake would get it in
their output. The bar cannot be turned off in the connect config, so each connection turns
it off as it opens."""

from __future__ import annotations

from typing import Any

OFFLINE = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
"""Config of the in-memory connections that load extensions from their packages only."""


def open_duckdb(path: str = ":memory:", *, read_only: bool = False, offline: bool = False) -> Any:
    """A DuckDB connection to ``path`` that never prints; ``offline``: extensions load only
    from the packages syncline names, never from the network."""
    import duckdb

    con = duckdb.connect(path, read_only=read_only, config=dict(OFFLINE) if offline else {})
    try:
        con.execute("SET enable_progress_bar = false")
    except BaseException:
        con.close()
        raise
    return con
