"""Read-your-writes from Python: wait until views have applied your transaction.

::

    import psycopg
    from syncline.client import current_position, wait_for

    with psycopg.connect(app_dsn) as conn:
        conn.execute("UPDATE products SET price = 10 WHERE id = 7")
        conn.commit()
        pos = current_position(conn)           # after the commit
    wait_for(pos, views=["cache"], timeout=5)  # raises WaitTimeout if not applied in time
    # a read of the view now sees the update

:func:`wait_for` asks the HTTP API of ``syncline run`` (``GET /wait``, default
``http://127.0.0.1:8474``, ``token`` when ``[http] token`` is set); given ``config`` (a
``syncline.toml`` path or a loaded :class:`~syncline.core.config_models.Config`) it reads
the log database directly instead (same machine, no HTTP). Either way success means: every
named view has committed every transaction that committed at or before the position, in
its store (PostgreSQL and DuckDB: committed; Redis: its MULTI/EXEC executed; Tantivy:
committed, seen by a newly opened or reloaded searcher).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncline.core.config_models import Config
from syncline.core.errors import CatalogueNotSeen, SynclineError, TablesNotFollowed, ViewFailed
from syncline.sources.registry import format_position, parse_position

if TYPE_CHECKING:
    from syncline.views.ducklake.query import Answer

DEFAULT_URL = "http://127.0.0.1:8474"
CHUNK = 60.0
"""Longest single ``/wait`` request; longer waits are several requests."""

_BUSY = (1, 2, 3)
"""libpq transaction states ACTIVE, INTRANS, INERROR: a transaction is open."""


class ClientError(SynclineError):
    """syncline could not be asked (unreachable, unauthorized, bad request)."""


class WaitTimeout(TimeoutError):
    """The views had not applied the position within the timeout."""


def current_position(conn: Any) -> str:
    """The WAL position (``X/Y``) that covers every transaction committed so far on the
    server of ``conn`` (a psycopg 3 or psycopg2 connection), yours included: call it
    right after your ``commit()``, outside any transaction.

    It is ``pg_current_wal_insert_lsn()``: the end of everything inserted into the WAL, so
    it is past your commit record even with ``synchronous_commit = off`` (where the commit
    returns before its record is flushed, and ``pg_current_wal_lsn()`` may still be before
    it; syncline receives the record once the server has flushed it, at most
    ``wal_writer_delay`` later). Read inside a transaction it would not cover that
    transaction's own commit, which is why an open transaction is refused."""
    info = getattr(conn, "info", None)
    if int(getattr(info, "transaction_status", 0)) in _BUSY:
        raise ClientError(
            "current_position: the connection is inside a transaction; commit first, then ask "
            "(the position must come after your commit)"
        )
    cur = conn.cursor()
    try:
        cur.execute("SELECT pg_current_wal_insert_lsn()::text")
        row = cur.fetchone()
    finally:
        cur.close()
    if not getattr(conn, "autocommit", True):
        conn.rollback()  # end the (read-only) transaction the query opened
    return str(row[0])


def _lsn_text(lsn: str | int | None) -> str | None:
    if lsn is None:
        return None
    if isinstance(lsn, int):
        return format_position(lsn)
    try:
        return format_position(parse_position(lsn))
    except ValueError as e:
        raise ValueError(f"lsn: {e}") from None


class Client:
    """The HTTP API of a running ``syncline run``."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def _get(self, path: str, params: list[tuple[str, str]], timeout: float) -> tuple[int, bytes]:
        target = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        req = urllib.request.Request(target)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as e:
            body = e.read()
            e.close()
            return int(e.code), bytes(body)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ClientError(f"cannot reach syncline at {self.url}: {reason}") from None

    def _json(self, path: str, params: list[tuple[str, str]], timeout: float, ok: tuple[int, ...]) -> Any:
        return self._answer(path, params, timeout, ok)[1]

    def _answer(
        self, path: str, params: list[tuple[str, str]], timeout: float, ok: tuple[int, ...]
    ) -> tuple[int, Any]:
        code, body = self._get(path, params, timeout)
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            doc = {"error": body[:200].decode(errors="replace")}
        if code not in ok:
            msg = doc.get("error", "") if isinstance(doc, dict) else ""
            raise ClientError(f"{path}: HTTP {code}: {msg or 'unexpected answer'}")
        return code, doc

    def status(self, timeout: float = 30.0) -> dict[str, Any]:
        """What ``syncline status --json`` prints."""
        return dict(self._json("/status", [], timeout, (200,)))

    def health(self, timeout: float = 10.0) -> dict[str, Any]:
        """``/healthz``: ``{"status": "ok" | "failing", ...}``."""
        return dict(self._json("/healthz", [], timeout, (200, 503)))

    def metrics(self, timeout: float = 30.0) -> str:
        code, body = self._get("/metrics", [], timeout)
        if code != 200:
            raise ClientError(f"/metrics: HTTP {code}")
        return body.decode()

    def wait_for(
        self, lsn: str | int | None = None, views: Sequence[str] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Return once ``views`` (default all) have applied every transaction committed at or
        before ``lsn`` (default: the source's position when asked); raise
        :class:`WaitTimeout` after ``timeout`` seconds. Returns ``/wait``'s answer."""
        text = _lsn_text(lsn)
        deadline = time.monotonic() + timeout
        while True:
            # the first request fixes the position, so later ones wait for the same one
            chunk = max(0.0, min(CHUNK, deadline - time.monotonic()))
            params = [("timeout", f"{chunk:.3f}"), *(("view", v) for v in views or ())]
            if text:
                params.append(("lsn", text))
            code, doc = self._answer("/wait", params, chunk + 30.0, (200, 408, 503))
            if doc.get("applied"):
                return dict(doc)
            if code == 503:
                if doc.get("unfollowed"):
                    raise TablesNotFollowed([str(t) for t in doc["unfollowed"]])
                if doc.get("view"):
                    raise ViewFailed(str(doc["view"]), str(doc.get("error", "")).split(": ", 1)[-1])
                raise ClientError(f"/wait: HTTP 503: {doc.get('error') or 'unavailable'}")
            text = doc.get("lsn") or text
            if time.monotonic() >= deadline:
                if not text:  # the capture never acted on a DDL: no position yet
                    raise WaitTimeout(f"{doc.get('error') or 'no answer'} (after {timeout:g}s)")
                behind = doc.get("behind") or views or list(doc.get("views", {}))
                raise WaitTimeout(f"views {', '.join(behind)} have not applied {text} within {timeout:g}s")


def wait_for(
    lsn: str | int | None,
    views: Sequence[str] | None = None,
    timeout: float = 30.0,
    *,
    url: str = DEFAULT_URL,
    token: str | None = None,
    config: str | Path | Config | None = None,
) -> None:
    """Return once ``views`` (names; default every configured view) have applied every
    transaction that committed at or before ``lsn`` (``X/Y`` text as returned by
    :func:`current_position`, or an int; None: the source's current position); raise
    :class:`WaitTimeout` after ``timeout`` seconds.

    Without ``config``: through the HTTP API at ``url`` (with ``token``). With ``config``:
    from the log database on this machine (``syncline run`` need not serve HTTP)."""
    if config is None:
        Client(url, token).wait_for(lsn, views, timeout)
        return
    from syncline.config import load_config
    from syncline.runtime.status import views_behind, wait_caught_up
    from syncline.sources.registry import open_admin

    cfg = config if isinstance(config, Config) else load_config(config)
    configured = [v.name for v in cfg.views]
    names = list(views) if views else configured
    unknown = [n for n in names if n not in configured]
    if unknown:
        raise ValueError(f"no view named {', '.join(unknown)} in {cfg.path}")
    text = _lsn_text(lsn)
    deadline = time.monotonic() + timeout
    # tables being copied, and DDL the capture has not acted on yet, are waited for too
    pos = open_admin(cfg).followed_position(deadline, at=parse_position(text) if text else None)
    if not wait_caught_up(cfg, pos, names, max(0.0, deadline - time.monotonic())):
        behind = views_behind(cfg, pos, names) or names
        raise WaitTimeout(
            f"views {', '.join(behind)} have not applied {format_position(pos)} within {timeout:g}s"
        )


def sql(
    config: str | Path | Config,
    view: str,
    query: str,
    *,
    at: str | int | None = None,
) -> Answer:
    """One read-only query on a warehouse view (``ducklake``, ``iceberg``, ``duckdb``), as
    ``syncline sql`` runs it: on the view as it is now, or with ``at`` (``X/Y`` text or an
    int) as it was at that source position, answered by the newest retained batch at or
    before it (``Answer.position`` says which; exact at a batch's own position). A query
    that would write, a position outside the retained batches, or ``at`` on a duckdb view
    (it keeps no history) raises :class:`~syncline.views.ducklake.query.QueryError`.

    ::

        from syncline.client import current_position, sql, wait_for

        pos = current_position(conn)                         # after your commit
        wait_for(pos, views=["lake"], config="syncline.toml")
        answer = sql("syncline.toml", "lake", "SELECT count(*) FROM public.orders", at=pos)
        answer.rows, answer.position
    """
    from syncline.config import load_config
    from syncline.views.ducklake.query import QueryError, run_query

    cfg = config if isinstance(config, Config) else load_config(config)
    vcfg = next((v for v in cfg.views if v.name == view), None)
    if vcfg is None:
        raise QueryError(f"no view named {view!r} in {cfg.path}")
    try:
        text = _lsn_text(at)
    except ValueError:
        raise QueryError(f"at: expected a position like 0/16B3748, got {at!r}") from None
    return run_query(cfg, vcfg, query, None if text is None else parse_position(text))


def __getattr__(name: str) -> Any:
    """``Answer`` on first use: importing the client for ``wait_for`` must not load the
    warehouse readers (and psycopg with them)."""
    if name == "Answer":
        from syncline.views.ducklake.query import Answer

        return Answer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_URL",
    "Answer",
    "CatalogueNotSeen",
    "Client",
    "ClientError",
    "TablesNotFollowed",
    "ViewFailed",
    "WaitTimeout",
    "current_position",
    "sql",
    "wait_for",
]
