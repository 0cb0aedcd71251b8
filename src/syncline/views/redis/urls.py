"""Redis URLs: which database one selects (light: no redis import)."""

from __future__ import annotations

import urllib.parse


def redis_db(url: str) -> int:
    """The database number a Redis URL selects (0 by default)."""
    parts = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qs(parts.query)
    if "db" in q:
        return int(q["db"][-1])
    path = parts.path.strip("/")
    return int(path) if path.isdigit() else 0


def url_with_db(url: str, db: int) -> str:
    """The same URL selecting database ``db``."""
    parts = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qs(parts.query)
    if "db" in q or parts.scheme == "unix":
        q["db"] = [str(db)]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q, doseq=True)))
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db}"))


def server_of(url: str) -> str:
    """The server a Redis URL names (``host:port`` or a socket path; no credentials)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
