"""Progress of table copies on a terminal: one line per table, a bar when stdout is a TTY."""

from __future__ import annotations

from typing import Any


def bar(done: int, total: int | None, width: int = 24) -> str:
    """``[#####.......]  41%`` (no bar while the total is unknown)."""
    if not total:
        return ""
    frac = min(1.0, max(0.0, done / total))
    filled = round(frac * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {frac * 100:3.0f}%"


def _seconds(secs: float) -> str:
    s = round(secs)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def copy_line(table: str, st: dict[str, Any]) -> str:
    """One table's copy as ``status --json`` gives it (``log.copying``): rows, estimate,
    rows/s and seconds left."""
    rows = int(st.get("rows") or 0)
    est = st.get("estimate")
    parts = [table, bar(rows, int(est) if est else None), f"{rows:,} rows"]
    if est:
        parts[-1] = f"{rows:,} of ~{int(est):,} rows"
    rate = st.get("rows_per_second")
    if rate:
        parts.append(f"{int(rate):,} rows/s")
    eta = st.get("eta_seconds")
    if eta is not None:
        parts.append(f"{_seconds(float(eta))} left")
    return "  ".join(p for p in parts if p)
