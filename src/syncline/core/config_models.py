"""Frozen, validated configuration models, one per component (loading lives in config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


class Secret(str):
    """A string that never prints itself."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:  # pragma: no cover - deliberate
        return "***"

    @property
    def value(self) -> str:
        return str.__str__(self)


@dataclass(frozen=True)
class SourceConfig:
    dsn: Secret
    tables: tuple[str, ...] = ("*.*",)
    slot: str = "syncline"
    publication: str = "syncline"
    kind: str = "postgres"
    streaming: bool = True
    """Ask for protocol 2 streaming of in-progress transactions where the server has it."""
    failover: bool = False
    """Create the slot as a failover slot (PostgreSQL 17+): standbys with
    ``sync_replication_slots`` keep a copy, so the slot survives a promotion."""
    copy_parallel: int = 2
    """Chunks a watermark copy reads at once (each on its own connection, inside one window)."""
    allow_superuser: bool | None = None
    """A superuser role: accepted (True), refused (False), or accepted with a warning (not
    set: syncline needs only REPLICATION and SELECT)."""
    exclude_columns: tuple[str, ...] = ()
    """Glob patterns over ``schema.table.column``: columns the capture drops, so their values
    reach neither the log nor any view."""
    retained_wal_warning: int = 1 << 30
    """Bytes of WAL the slot may hold back before ``status`` and the console warn."""


@dataclass(frozen=True)
class LogConfig:
    kind: str = "embedded"
    path: str = "./.syncline"
    retention: str = "applied"
    """``applied``: trim records every view has applied (after compaction); ``keep``: never."""
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    """``kind = "nats"``: the NATS servers (URLs; may carry credentials, never printed)."""
    stream: str = "syncline"
    """``kind = "nats"``: the JetStream stream (and ``STREAM-meta`` KV bucket) of the log."""
    replicas: int = 1
    """``kind = "nats"``: copies of the stream kept by a JetStream cluster (1, 3 or 5)."""
    compact_publish_interval: float = 60.0
    """``kind = "nats"``: seconds between copies of the compacted state published for new
    views on other hosts (the stream is trimmed only up to the newest copy)."""


@dataclass(frozen=True)
class ViewConfig:
    name: str
    kind: str
    tables: tuple[str, ...] = ()
    batch_events: int = 50_000
    """Upper bound of events grouped into one target transaction."""
    batch_interval: float | None = None
    """Least seconds between the starts of two batches that are not full: transactions
    arriving meanwhile are applied together (None: the kind's ``BATCH_INTERVAL``)."""
    options: dict[str, object] = field(default_factory=dict)
    """Kind-specific settings (dsn, path, ...), validated by the view's module."""
    partitions: int = 1
    """Appliers that share the view's changes by key hash (kinds that allow it)."""
    partition: int | None = None
    """Which of ``partitions`` this applier applies (None: the view as a whole)."""
    transform: str | None = None
    """``module:function`` every row change passes through before the view (issue 16)."""
    document: object | None = None
    """Joined documents (:class:`syncline.transform.join.Document`) the view holds instead
    of rows."""
    transform_errors: str = "stop"
    """``stop``: an error in the transform stops the view; ``skip``: the row is left out,
    counted and logged."""

    @property
    def consumer(self) -> str:
        """The name this applier reports under in the log's control plane, and stores its
        position under in the view's store: the view's name, or ``NAME.pIofN`` for one
        partition (``.`` is not allowed in view names)."""
        if self.partitions <= 1:
            return self.name
        if self.partition is None:
            raise ValueError(f"view {self.name} is applied in {self.partitions} partitions: name one")
        return partition_consumer(self.name, self.partition, self.partitions)

    def appliers(self) -> list[ViewConfig]:
        """One config per applier of the view: itself, or one per partition."""
        if self.partitions <= 1:
            return [self]
        return [replace(self, partition=i) for i in range(self.partitions)]


def partition_consumer(view: str, index: int, count: int) -> str:
    return f"{view}.p{index}of{count}"


def split_consumer(name: str) -> tuple[str, int, int] | None:
    """``(view, index, count)`` of a partition's consumer name; None for a whole view."""
    view, dot, part = name.rpartition(".p")
    if not dot or "of" not in part:
        return None
    i, _, n = part.partition("of")
    if not (i.isdigit() and n.isdigit()):
        return None
    return view, int(i), int(n)


OFF = ("", "off")
"""``[http] listen`` values that turn the HTTP API off."""


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "127.0.0.1:8474"
    """``HOST:PORT`` (IPv6 as ``[::1]:8474``) the HTTP API of ``syncline run`` listens on;
    ``""`` or ``"off"``: no HTTP API."""
    token: Secret | None = None
    """Bearer token every endpoint but ``/healthz`` requires when set (required itself when
    the API listens beyond loopback)."""

    @property
    def enabled(self) -> bool:
        return self.listen.strip().lower() not in OFF

    def address(self) -> tuple[str, int]:
        """(host, port) of ``listen`` (validated when the configuration was loaded)."""
        host, _, port = self.listen.strip().rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def loopback(self) -> bool:
        """Whether the API is reachable from this machine only."""
        import ipaddress

        host = self.address()[0]
        if host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:  # a host name (or "" = every interface): assume it is reachable
            return False


@dataclass(frozen=True)
class Config:
    path: str
    source: SourceConfig
    log: LogConfig
    views: tuple[ViewConfig, ...]
    http: HttpConfig = HttpConfig()

    def consumers(self) -> set[str]:
        """Every applier's consumer name (a partitioned view has one per partition)."""
        return {a.consumer for v in self.views for a in v.appliers()}

    def secrets(self) -> list[str]:
        out = [self.source.dsn.value]
        out += dsn_passwords(self.source.dsn.value)
        for v in self.views:
            for val in v.options.values():
                if isinstance(val, Secret):
                    out.append(val.value)
                    out += dsn_passwords(val.value)
        if self.http.token:
            out.append(self.http.token.value)
        if self.log.kind == "nats":
            for url in self.log.servers:
                if "@" in url:
                    out += [url, *dsn_passwords(url)]
        return [s for s in out if s]


def dsn_passwords(dsn: str) -> list[str]:
    import re
    from urllib.parse import unquote

    found = []
    m = re.match(r"^[a-z]+://[^:/@]*:([^@]*)@", dsn)
    if m:
        found += [m.group(1), unquote(m.group(1))]
    found += re.findall(r"password\s*=\s*'?([^'\s]+)", dsn)
    return found
