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


class LogUnavailable(LogError):
    """The log's servers do not answer now (a network cut, a leader election, a restart):
    retried with back-off; nothing is lost meanwhile."""

    transient = True


class ViewError(SynclineError):
    """A view could not apply a batch.

    ``fixable``: the cause lies in the target and a change there can remove it (a
    constraint, a privilege, a schema changed behind syncline's back): the view is retried
    with back-off. ``action``: what the operator should do, for ``status`` and the log."""

    def __init__(self, message: str, *, fixable: bool = False, action: str = "") -> None:
        super().__init__(message)
        self.fixable = fixable
        self.action = action


class TransientViewError(ViewError):
    transient = True


def target_fix(sqlstate: str | None, view: str) -> tuple[bool, str]:
    """(fixable, action) for a SQL error a target database raised while a view applied."""
    state = sqlstate or ""
    retry = f"syncline retries it by itself with back-off, or at once with `syncline retry {view}`"
    if state.startswith("23"):
        return True, (
            "a constraint in the target rejects a row the source holds (syncline creates only "
            f"primary keys): drop or relax it in the target; {retry}"
        )
    if state == "42501":
        return True, f"grant the view's role the privileges it needs in the target; {retry}"
    if state.startswith("42"):
        return True, (
            "the target's schema no longer matches what syncline created (a table, column or type "
            f"was changed or dropped there): restore it in the target; {retry}"
        )
    if state.startswith("22"):
        return True, (
            "the target cannot store a value the source holds: make the column's type (or the "
            f"enum's labels) in the target match the source; {retry}"
        )
    if state[:2] in ("53", "54", "55", "57"):
        return True, f"the target is out of resources or busy (SQLSTATE {state}): fix that; {retry}"
    return False, f"fix the cause, then run `syncline retry {view}`"


def first_line(e: BaseException) -> str:
    """The first line of an error's text (its class name when it has none): drivers put
    details and hints on the lines below."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


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


class CatalogueNotSeen(SynclineError):
    """A DDL changed followed tables and the capture has not looked at the catalogue since:
    ``wait`` cannot promise its effect (rows rewritten, a table or column dropped or
    renamed) reached the views."""

    def __init__(self) -> None:
        super().__init__(
            "a DDL changed the followed tables and the capture has not acted on it yet: it looks "
            "at the catalogue every second while `syncline run` runs (see its log and `syncline status`)"
        )


class TablesNotFollowed(SynclineError):
    """Tables match ``[source] tables`` but are not followed yet (created while ``run``
    runs, and not yet added and copied): ``wait`` cannot promise their rows reached a view."""

    def __init__(self, tables: list[str]) -> None:
        super().__init__(
            f"table{'s' if len(tables) > 1 else ''} {', '.join(tables)} match source.tables but "
            "are not followed yet: `syncline run` adds a new table and copies its rows within "
            "seconds while it runs (see its log and `syncline status`)"
        )
        self.tables = tables
