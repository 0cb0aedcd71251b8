"""The log on NATS JetStream (``[log] kind = "nats"``, extra ``syncline[nats]``): see
:mod:`syncline.log.nats.store` for its layout and guarantees. This module stays light (no
nats-py import) for status and config code."""

from __future__ import annotations

import re


def redact(url: str) -> str:
    """A server URL without its user and password (for messages)."""
    return re.sub(r"//[^@/]*@", "//***@", url)
