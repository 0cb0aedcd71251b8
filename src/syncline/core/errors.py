"""Error hierarchy. *Transient* errors are retried with backoff; *terminal* ones stop the
component with one clear message. Messages never contain secrets."""

from __future__ import annotations


class SynclineError(Exception):
    """Base class of every error syncline raises on purpose."""

    transient = False


class ConfigError(SynclineError):
    """The configuration is invalid: names file, key and what was expected."""


class SourceError(SynclineError):
    """The source database refused or cannot serve what syncline needs."""


class TransientSourceError(SourceError):
    transient = True


class SourceUnreachable(TransientSourceError):
    """No connection to the source could be made (refused, wrong host, password or database).
    Transient for a source syncline has reached before; terminal on a first start, where it
    is almost always a wrong ``[source] dsn``."""


class LogError(SynclineError):
    """The durable log failed (disk full, corrupt, held by another process)."""


class ViewError(SynclineError):
    """A view could not apply a batch."""


class TransientViewError(ViewError):
    transient = True


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret occurring in ``text`` by ``***``."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


class ViewFailed(SynclineError):
    """A view asked for (``wait``) has failed: waiting longer cannot help."""

    def __init__(self, view: str, error: str) -> None:
        super().__init__(f"view {view} has failed: {error or 'see syncline status'}")
        self.view = view
        self.error = error


class TablesNotFollowed(SynclineError):
    """Tables match ``[source] tables`` but are not captured yet (created after ``run``
    started): ``wait`` cannot promise their rows reached any view."""

    def __init__(self, tables: list[str]) -> None:
        super().__init__(
            f"table{'s' if len(tables) > 1 else ''} {', '.join(tables)} match source.tables but "
            "were created after `syncline run` started and are not followed yet: their changes reach "
            "no view (restart `syncline run` to follow them; rows they already hold are not copied)"
        )
        self.tables = tables
