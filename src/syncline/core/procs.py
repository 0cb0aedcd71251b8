"""Processes on this host (liveness of a lock's or a lease's holder)."""

from __future__ import annotations

import os
import socket


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(host: str, pid: int) -> bool:
    """Whether the holder ``pid`` on ``host`` is alive: checked on this host, taken to be on
    another (its lease's age decides there)."""
    return host != socket.gethostname() or pid_alive(pid)
