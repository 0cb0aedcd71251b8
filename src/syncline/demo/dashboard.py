"""The live terminal dashboard of the demo: per view events/s, lag, applied position and
state, read from :func:`syncline.runtime.status.status` (what ``syncline status`` shows)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from syncline.core.config_models import Config
from syncline.runtime.status import status

STATE_STYLE = {
    "running": "green",
    "streaming": "green",
    "snapshotting": "yellow",
    "starting": "yellow",
    "filling": "yellow",
    "new": "yellow",
    "retrying": "bold yellow",
    "failed": "bold red",
    "stopped": "dim",
}


@dataclass
class Rates:
    """Events per second of each view, from successive ``applied_events`` samples."""

    last: dict[str, tuple[float, int]] = field(default_factory=dict)
    rate: dict[str, float] = field(default_factory=dict)

    def update(self, views: dict[str, Any], now: float) -> None:
        for name, v in views.items():
            n = int(v.get("applied_events") or 0)
            prev = self.last.get(name)
            if prev is not None and now > prev[0]:
                r = (n - prev[1]) / (now - prev[0])
                # smooth a little: samples are half a second apart
                self.rate[name] = 0.5 * self.rate.get(name, r) + 0.5 * r
            self.last[name] = (now, n)


class Dashboard:
    """Samples the status and renders it; ``phase`` and ``workload`` are set by the demo."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rates = Rates()
        self.phase = "starting syncline run"
        self.workload = ""
        self.snapshot: dict[str, Any] = {}

    def sample(self) -> dict[str, Any]:
        try:
            self.snapshot = status(self.cfg)
        except Exception as e:  # the log is being created: show the error, keep going
            self.snapshot = {"source": {}, "log": {"error": str(e)}, "views": {}}
        self.rates.update(self.snapshot.get("views", {}), time.monotonic())
        return self.snapshot

    def render(self) -> RenderableType:
        st = self.snapshot
        t = Table(title="syncline run — views", title_justify="left", expand=False)
        for col, just in (
            ("view", "left"),
            ("kind", "left"),
            ("state", "left"),
            ("events/s", "right"),
            ("lag ms", "right"),
            ("applied position", "left"),
            ("events applied", "right"),
        ):
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        for name, v in st.get("views", {}).items():
            state = str(v.get("state"))
            style = STATE_STYLE.get(state, "")
            t.add_row(
                name,
                str(v.get("kind")),
                Text(state, style=style),
                f"{self.rates.rate.get(name, 0.0):,.0f}",
                f"{1000 * float(v.get('lag_seconds') or 0):,.0f}",
                str(v.get("applied_lsn") or "-"),
                f"{int(v.get('applied_events') or 0):,}",
            )
        src = st.get("source", {})
        lg = st.get("log", {})
        head = Text.assemble(
            ("phase: ", "bold"),
            (self.phase, "cyan"),
            "   ",
            self.workload,
        )
        foot = Text(
            f"source: slot {src.get('slot')} confirmed {src.get('confirmed_lsn') or '-'}, "
            f"retained WAL {src.get('retained_wal_bytes') or 0:,} bytes   "
            f"log: newest commit {lg.get('last_commit_lsn') or '-'}",
            style="dim",
        )
        return Group(head, t, foot)

    def line(self) -> str:
        """One plain progress line (``--no-dashboard``)."""
        parts = []
        for name, v in self.snapshot.get("views", {}).items():
            parts.append(
                f"{name} {v.get('state')} {self.rates.rate.get(name, 0.0):.0f} ev/s "
                f"lag {1000 * float(v.get('lag_seconds') or 0):.0f} ms @ {v.get('applied_lsn') or '-'}"
            )
        return f"[{self.phase}] {self.workload} | " + "; ".join(parts)
