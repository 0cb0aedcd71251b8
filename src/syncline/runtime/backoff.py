"""Retry with exponential backoff and jitter (transient errors only)."""

from __future__ import annotations

import random
import threading


class Backoff:
    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        d = min(self.cap, self.first * (2**self.attempt))
        self.attempt += 1
        return float(d * (0.5 + random.random() / 2))

    def wait(self, stop: threading.Event) -> float:
        d = self.next_delay()
        stop.wait(d)
        return d
