"""Where the time goes between a source commit and a view's commit: rolling percentiles of
the delays each stage measures (pure; the capture and the view workers feed them and
publish :meth:`Window.summary` to the log's control plane every few seconds).

- the capture: source commit → log append (the commit's timestamp is the source server's
  clock; the append is this host's: a skew between them shifts every figure);
- a view: source commit → view commit (end to end), and the time each batch takes to apply
  and commit. Log append → view commit is the end-to-end time less the capture's stage."""

from __future__ import annotations

from collections import deque

SPAN = 60.0
"""Seconds of measurements a summary covers."""
KEEP = 4096
"""Measurements kept at most (the oldest go first)."""


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values`` by the nearest rank (``values`` not empty)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.5) - 1 if q > 0 else 0))
    return ordered[rank]


class Window:
    """The last :data:`SPAN` seconds of one stage's delays (seconds)."""

    def __init__(self, span: float = SPAN, keep: int = KEEP) -> None:
        self.span = span
        self._values: deque[tuple[float, float]] = deque(maxlen=keep)

    def add(self, at: float, seconds: float) -> None:
        self._values.append((at, max(0.0, seconds)))

    def summary(self, now: float) -> dict[str, float | int] | None:
        """``{"p50": s, "p99": s, "n": count}`` over the span before ``now`` (None: nothing
        measured in it)."""
        while self._values and now - self._values[0][0] > self.span:
            self._values.popleft()
        if not self._values:
            return None
        vals = [v for _, v in self._values]
        return {
            "p50": round(percentile(vals, 0.50), 4),
            "p99": round(percentile(vals, 0.99), 4),
            "n": len(vals),
        }
