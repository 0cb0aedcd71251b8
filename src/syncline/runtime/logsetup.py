"""Logging to stderr with every configured secret redacted."""

from __future__ import annotations

import logging
import sys

from syncline.core.errors import redact


class _Redact(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        record.msg = redact(msg, self.secrets)
        record.args = None
        return True


def setup_logging(secrets: list[str], level: int = logging.INFO, prefix: str = "") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s", "%H:%M:%S"))
    h.addFilter(_Redact(secrets))
    root.addHandler(h)
    root.setLevel(level)
