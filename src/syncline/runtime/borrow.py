"""Reading a view whose store admits one process (a DuckDB file) while ``run`` runs: the
view's worker lets go of the store for the read, the way it does for ``syncline rebuild``'s
swap (the same request in the log's control plane; the worker closes its store, gives up
the view's lock, and takes both again once the request is gone, also when the reader dies).

The view does not apply while it is lent: each read should be short (one table's checksums,
one query). Embedded log only: with a NATS log the worker may run on another host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from syncline.core.config_models import Config

LEND_TIMEOUT = 60.0
"""Seconds to wait for the worker to let go of the store."""


@contextlib.contextmanager
def borrowed(cfg: Config, view: str, timeout: float = LEND_TIMEOUT) -> Iterator[bool]:
    """The view's store, free for this process within the block (the view's lock held, so
    no worker takes it meanwhile). Yields whether a running worker had it."""
    from syncline.log import log_exists, view_running

    if cfg.log.kind != "embedded" or not log_exists(cfg.log):
        yield False
        return
    from syncline.runtime.rebuild import _request, _take_view_lock

    held = view_running(cfg.log, view)
    with _request(cfg, view) as pause:
        pause()
        lock = _take_view_lock(Path(cfg.log.path), view, timeout)
        try:
            yield held
        finally:
            lock.close()
