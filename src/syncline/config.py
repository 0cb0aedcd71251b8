"""Loading ``syncline.toml``: TOML, ``${ENV}`` references, validation with errors that name
the file, the key and what was expected."""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from syncline.core.config_models import (
    Config,
    HttpConfig,
    LogConfig,
    Secret,
    SourceConfig,
    ViewConfig,
)
from syncline.core.errors import ConfigError
from syncline.views.options import REQUIRED, OptionSpec
from syncline.views.registry import KINDS, kind_module

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_OPEN_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?![A-Za-z0-9_}])")
"""A ``${NAME`` left open: a reference with its closing brace forgotten."""
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _view_kinds() -> dict[str, dict[str, OptionSpec]]:
    """kind -> option -> (type, what is expected, default or REQUIRED): each kind declares
    its own (``views/KIND/__init__.py``)."""
    return {kind: kind_module(kind).OPTIONS for kind in KINDS}


SECRET_KEYS = {"dsn", "url", "token", "password"}


class _Ctx:
    def __init__(self, file: str) -> None:
        self.file = file

    def err(self, key: str, expected: str, got: object = None) -> ConfigError:
        """``key`` expected ``expected``; what was given is shown, unless the key holds a
        secret (a DSN, URL, token or password given with the wrong type still holds one)."""
        secret = key.rsplit(".", 1)[-1] in SECRET_KEYS
        shown = "(value not shown: it may hold a secret)" if secret else _show(got)
        extra = f", got {type(got).__name__} {shown}" if got is not None else ""
        return ConfigError(f"{self.file}: {key}: expected {expected}{extra}")


def _show(v: object) -> str:
    if isinstance(v, str):
        return repr(v if len(v) < 40 else v[:37] + "...")
    return repr(v) if not isinstance(v, dict) else "table"


def _expand(ctx: _Ctx, key: str, value: str, environ: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in environ:
            raise ConfigError(f"{ctx.file}: {key}: environment variable {name} is referenced but not set")
        return environ[name]

    m = _ENV_OPEN_RE.search(value)
    if m is not None:
        name = m.group(1)
        raise ConfigError(f"{ctx.file}: {key}: ${{{name} has no closing brace (write ${{{name}}})")
    return _ENV_RE.sub(sub, value)


def _get(
    ctx: _Ctx,
    table: dict[str, Any],
    prefix: str,
    key: str,
    typ: type | tuple[type, ...],
    expected: str,
    default: Any = ...,
    environ: dict[str, str] | None = None,
) -> Any:
    full = f"{prefix}.{key}" if prefix else key
    if key not in table:
        if default is ...:
            raise ConfigError(f"{ctx.file}: {full}: missing (expected {expected})")
        return default
    v = table[key]
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, typ) or (isinstance(v, bool) and typ in (int, float)):
        raise ctx.err(full, expected, v)
    if isinstance(v, str) and environ is not None:
        v = _expand(ctx, full, v, environ)
    return v


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|KB|MB|GB|TB)?\s*$")
_UNITS = {None: 1, "B": 1, "kB": 1 << 10, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def _size(ctx: _Ctx, table: dict[str, Any], prefix: str, key: str, default: int) -> int:
    """A size: bytes (an integer) or a string with a unit as PostgreSQL writes them
    (``"512MB"``, ``"1GB"``; 1 kB = 1024 B)."""
    full = f"{prefix}.{key}"
    expected = 'bytes, or a size such as "512MB" or "2GB"'
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ctx.err(full, expected, v)
    if isinstance(v, int):
        n = v
    else:
        m = _SIZE_RE.match(v)
        if m is None:
            raise ctx.err(full, expected, v)
        n = int(float(m.group(1)) * _UNITS[m.group(2)])
    if n <= 0:
        raise ctx.err(full, expected, v)
    return n


def _positive(ctx: _Ctx, table: dict[str, Any], prefix: str, key: str, default: int) -> int:
    v = _get(ctx, table, prefix, key, int, "a positive integer", default)
    if v < 1:
        raise ctx.err(f"{prefix}.{key}", "a positive integer", v)
    return int(v)


def _str_list(
    ctx: _Ctx, table: dict[str, Any], prefix: str, key: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    full = f"{prefix}.{key}"
    if key not in table:
        return default
    v = table[key]
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ctx.err(full, "a list of strings (glob patterns over schema.table)", v)
    for p in v:
        if "." not in p:
            raise ConfigError(f"{ctx.file}: {full}: pattern {p!r} must be schema.table (e.g. public.*)")
    return tuple(v)


def _column_patterns(ctx: _Ctx, s: dict[str, Any]) -> tuple[str, ...]:
    """``source.exclude_columns``: glob patterns over ``schema.table.column``."""
    full = "source.exclude_columns"
    v = s.get("exclude_columns", [])
    if isinstance(v, str):
        v = [v]
    expected = 'a list of "schema.table.column" patterns'
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ctx.err(full, expected, v)
    for p in v:
        if p.count(".") < 2 or p.startswith("!"):
            raise ConfigError(
                f"{ctx.file}: {full}: pattern {p!r} must be schema.table.column (e.g. public.users.ssn"
                " or *.*.password)"
            )
    return tuple(v)


def _unknown(ctx: _Ctx, table: dict[str, Any], prefix: str, known: set[str]) -> None:
    for k in table:
        if k not in known:
            raise ConfigError(
                f"{ctx.file}: {prefix}.{k}: unknown key (expected one of {', '.join(sorted(known))})"
            )


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    p = Path(path)
    env = dict(os.environ) if environ is None else environ
    _Ctx(str(p))
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: configuration file not found (use -c FILE)") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a configuration file (use -c FILE)") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}): TOML files are UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the configuration file: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return parse_config(raw, str(p), env, base_dir=p.parent)


def parse_config(
    raw: dict[str, Any], file: str, environ: dict[str, str], base_dir: Path | None = None
) -> Config:
    ctx = _Ctx(file)
    _unknown(ctx, raw, "", {"source", "log", "views", "http"})
    if "source" not in raw or not isinstance(raw["source"], dict):
        raise ConfigError(f"{file}: [source]: missing table (expected kind, dsn, tables, ...)")
    s = raw["source"]
    _unknown(
        ctx,
        s,
        "source",
        {
            *("kind", "dsn", "tables", "slot", "publication", "streaming", "failover", "copy_parallel"),
            *("exclude_columns", "allow_superuser", "retained_wal_warning"),
        },
    )
    kind = _get(ctx, s, "source", "kind", str, '"postgres"', "postgres")
    if kind != "postgres":
        raise ConfigError(f'{file}: source.kind: expected "postgres", got {kind!r}')
    dsn = _get(ctx, s, "source", "dsn", str, "a libpq URI or key=value string", environ=environ)
    if not dsn.strip():
        # libpq would take an empty string as "the machine's default server"
        raise ctx.err("source.dsn", "a libpq URI or key=value string, not an empty one")
    slot = _get(ctx, s, "source", "slot", str, "a slot name", "syncline")
    pub = _get(ctx, s, "source", "publication", str, "a publication name", "syncline")
    for key, val in (("slot", slot), ("publication", pub)):
        if not _NAME_RE.match(val):
            raise ConfigError(f"{file}: source.{key}: expected lower-case letters, digits and _, got {val!r}")
    source = SourceConfig(
        dsn=Secret(dsn),
        tables=_str_list(ctx, s, "source", "tables", ("*.*",)),
        slot=slot,
        publication=pub,
        streaming=_get(ctx, s, "source", "streaming", bool, "true or false", True),
        failover=_get(ctx, s, "source", "failover", bool, "true or false", False),
        copy_parallel=_get(ctx, s, "source", "copy_parallel", int, "chunks read at once, 1 to 16", 2),
        exclude_columns=_column_patterns(ctx, s),
        allow_superuser=_get(ctx, s, "source", "allow_superuser", bool, "true or false", None),
        retained_wal_warning=_size(ctx, s, "source", "retained_wal_warning", 1 << 30),
    )
    if not 1 <= source.copy_parallel <= 16:
        raise ConfigError(f"{file}: source.copy_parallel: expected 1 to 16, got {source.copy_parallel}")
    lraw = raw.get("log", {})
    if not isinstance(lraw, dict):
        raise ctx.err("log", "a table", lraw)
    _unknown(
        ctx,
        lraw,
        "log",
        {"kind", "path", "retention", "servers", "stream", "replicas", "compact_publish_interval"},
    )
    lkind = _get(ctx, lraw, "log", "kind", str, '"embedded" or "nats"', "embedded")
    if lkind not in ("embedded", "nats"):
        raise ConfigError(
            f'{file}: log.kind: {lkind!r} is not available in this version (expected "embedded" or "nats")'
        )
    if lkind == "nats" and importlib.util.find_spec("nats") is None:
        raise ConfigError(f"{file}: log.kind = \"nats\" needs nats-py: pip install 'syncline[nats]'")
    nats_keys = {"servers", "stream", "replicas", "compact_publish_interval"} & set(lraw)
    if lkind != "nats" and nats_keys:
        raise ConfigError(f'{file}: log.{sorted(nats_keys)[0]}: only for kind = "nats"')
    servers = lraw.get("servers", ["nats://127.0.0.1:4222"])
    if isinstance(servers, str):
        servers = [servers]
    if not isinstance(servers, list) or not servers or not all(isinstance(x, str) and x for x in servers):
        # the value may hold credentials: name its type only
        raise ConfigError(f"{file}: log.servers: expected a list of NATS URLs, got {type(servers).__name__}")
    servers = [_expand(ctx, "log.servers", x, environ) for x in servers]
    stream = _get(ctx, lraw, "log", "stream", str, "a stream name", "syncline")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", stream):
        raise ConfigError(
            f"{file}: log.stream: {stream!r} is not a NATS stream name (letters, digits, '_' and '-')"
        )
    replicas = _get(ctx, lraw, "log", "replicas", int, "1, 3 or 5", 1)
    if replicas not in (1, 3, 5):
        raise ConfigError(f"{file}: log.replicas: expected 1, 3 or 5, got {replicas}")
    interval = _get(ctx, lraw, "log", "compact_publish_interval", float, "seconds (at least 1)", 60.0)
    if isinstance(interval, bool) or not interval >= 1:  # also refuses nan
        raise ctx.err("log.compact_publish_interval", "seconds (at least 1)", interval)
    lpath = _get(ctx, lraw, "log", "path", str, "a directory path", "./.syncline", environ=environ)
    retention = _get(ctx, lraw, "log", "retention", str, '"applied" or "keep"', "applied")
    if retention not in ("applied", "keep"):
        raise ConfigError(f'{file}: log.retention: expected "applied" or "keep", got {retention!r}')
    logc = LogConfig(
        kind=lkind,
        path=_resolve(lpath, base_dir),
        retention=retention,
        servers=tuple(servers),
        stream=stream,
        replicas=replicas,
        compact_publish_interval=float(interval),
    )

    vraw = raw.get("views", {})
    if not isinstance(vraw, dict):
        raise ctx.err("views", "tables [views.NAME]", vraw)
    views = []
    for name, v in vraw.items():
        prefix = f"views.{name}"
        if not isinstance(v, dict):
            raise ctx.err(prefix, "a table with kind = ...", v)
        if not re.match(r"^[A-Za-z0-9_-]{1,63}$", name):
            raise ConfigError(f"{file}: {prefix}: view names use letters, digits, _ and -")
        vkind = _get(ctx, v, prefix, "kind", str, f"one of {', '.join(KINDS)}")
        if vkind not in KINDS:
            raise ConfigError(f"{file}: {prefix}.kind: expected one of {', '.join(KINDS)}, got {vkind!r}")
        spec = _view_kinds()[vkind]
        _unknown(
            ctx,
            v,
            prefix,
            {"kind", "tables", "batch_events", "batch_interval", "partitions", *_TRANSFORM_KEYS, *spec},
        )
        opts: dict[str, object] = {}
        for key, (typ, expected, default) in spec.items():
            if default is REQUIRED:
                val = _get(ctx, v, prefix, key, typ, expected, environ=environ)
            else:
                val = _get(ctx, v, prefix, key, typ, expected, default, environ=environ)
            if val is None:
                continue
            if key in SECRET_KEYS and isinstance(val, str) and not val.strip():
                raise ctx.err(f"{prefix}.{key}", f"{expected}, not an empty one")
            if isinstance(val, list) and not all(isinstance(x, str) and x for x in val):
                raise ctx.err(f"{prefix}.{key}", expected, val)
            # a catalog (ducklake, iceberg) is a file or a DSN: a DSN may hold a password
            dsn_like = key == "catalog" and isinstance(val, str) and ("://" in val or "=" in val)
            if key in ("path", "data_path", "warehouse") or (key == "catalog" and not dsn_like):
                val = _resolve(val, base_dir)
            opts[key] = Secret(val) if key in SECRET_KEYS or dsn_like else val
        _check_choices(file, prefix, vkind, opts)
        partitions = _get(ctx, v, prefix, "partitions", int, "an integer from 1 to 64", 1)
        if isinstance(partitions, bool) or not 1 <= partitions <= 64:
            raise ctx.err(f"{prefix}.partitions", "an integer from 1 to 64", partitions)
        if partitions > 1 and not getattr(kind_module(vkind), "PARTITIONABLE", False):
            raise ConfigError(
                f"{file}: {prefix}.partitions: a {vkind} view is applied by one process (it keeps whole "
                f"source transactions in order); only {', '.join(_partitionable())} views take partitions"
            )
        interval = _get(ctx, v, prefix, "batch_interval", float, "seconds from 0 to 60", None)
        if interval is not None and not 0 <= interval <= 60:  # also refuses nan
            raise ctx.err(f"{prefix}.batch_interval", "seconds from 0 to 60", interval)
        transform, transform_errors = _transform(ctx, v, prefix, vkind, base_dir)
        document = None
        if "document" in v:
            from syncline.transform.join import parse_document

            try:
                document = parse_document(f"{prefix}.document", v["document"])
            except ConfigError as e:
                raise ConfigError(f"{file}: {e}") from None
            if transform is not None or vkind == "outbox":
                raise ConfigError(
                    f"{file}: {prefix}.document: a {vkind} view with a transform cannot hold documents"
                )
        views.append(
            ViewConfig(
                name=name,
                kind=vkind,
                tables=_str_list(ctx, v, prefix, "tables", ()),
                batch_events=_positive(ctx, v, prefix, "batch_events", 50_000),
                batch_interval=interval,
                options=opts,
                partitions=partitions,
                transform=transform,
                transform_errors=transform_errors,
                document=document,
            )
        )
    hraw = raw.get("http", {})
    if not isinstance(hraw, dict):
        raise ctx.err("http", "a table", hraw)
    http = _http(ctx, hraw, environ)
    _check_targets(file, views, logc)
    return Config(path=file, source=source, log=logc, views=tuple(views), http=http)


_TRANSFORM_KEYS = ("transform", "transform_errors", "document")


def _transform(
    ctx: _Ctx, v: dict[str, Any], prefix: str, kind: str, base_dir: Path | None
) -> tuple[str | None, str]:
    """A view's transform (imported now: a function that cannot be loaded is an error here)
    and what its errors do."""
    ref = _get(ctx, v, prefix, "transform", str, "module:function", None)
    errors = _get(ctx, v, prefix, "transform_errors", str, '"stop" or "skip"', "stop")
    if errors not in ("stop", "skip"):
        raise ctx.err(f"{prefix}.transform_errors", '"stop" or "skip"', errors)
    if ref is None:
        return None, errors
    if kind == "outbox":
        raise ConfigError(f"{ctx.file}: {prefix}.transform: an outbox publishes its table's rows as they are")
    from syncline.transform import load_transform

    try:
        load_transform(ref, base_dir)
    except ConfigError as e:
        raise ConfigError(f"{ctx.file}: {prefix}.transform: {e}") from None
    return ref, errors


_LOG_FILES = ("log.db", "compact.db")


def _check_targets(file: str, views: list[ViewConfig], logc: LogConfig) -> None:
    """Two views writing one store (a file, an index, a replica database, the same Redis
    keys) would overwrite each other and wait on each other's locks; a view's file cannot be
    one of the log's own."""
    seen: dict[tuple[str, ...], str] = {}
    log_dir = os.path.realpath(logc.path)
    own = {os.path.join(log_dir, f) for f in _LOG_FILES}
    for v in views:
        store_of = getattr(kind_module(v.kind), "store_of", None)
        t = store_of(v.options) if store_of is not None else None
        if t is None:
            continue
        if t[0] == "path" and (t[1] in own or t[1] == log_dir or t[1].removesuffix(".wal") in own):
            raise ConfigError(
                f"{file}: views.{v.name}.path: {t[1]} is a file of syncline's own log "
                f"(log.path {logc.path}): choose another path"
            )
        other = seen.get(t)
        if other is not None:
            if t[0] == "path":
                what = f"the same path {t[1]}"
            elif t[0] == "postgres":
                what = f"the same database ({t[3]} on {t[1]}:{t[2]})"
            elif t[0] == "redis":
                what = f"the same Redis keys (database {t[2]} on {t[1]}, key {t[3]!r})"
            else:
                what = f"the same {t[0]} ({', '.join(t[1:])})"
            raise ConfigError(
                f"{file}: views.{v.name}: views {other} and {v.name} both write {what}; each view "
                "needs a store of its own (one view can hold several tables: use its tables list)"
            )
        seen[t] = v.name


def _partitionable() -> list[str]:
    return [k for k in KINDS if getattr(kind_module(k), "PARTITIONABLE", False)]


def _check_choices(file: str, prefix: str, kind: str, opts: dict[str, object]) -> None:
    """Options with a fixed set of values, and the kind's own checks, at load."""
    mod = kind_module(kind)
    for key, allowed in mod.CHOICES.items():
        if key in opts and opts[key] not in allowed:
            raise ConfigError(
                f"{file}: {prefix}.{key}: expected {' or '.join(map(repr, allowed))}, got {opts[key]!r}"
            )
    try:
        mod.check_options(prefix.split(".", 1)[1], opts)
    except ConfigError as e:
        raise ConfigError(f"{file}: {prefix}.{e}") from None


def _http(ctx: _Ctx, hraw: dict[str, Any], environ: dict[str, str]) -> HttpConfig:
    """``[http]``: where ``syncline run`` serves its HTTP API, and its bearer token."""
    _unknown(ctx, hraw, "http", {"listen", "token"})
    expected = 'HOST:PORT (e.g. "127.0.0.1:8474", "[::1]:8474"), or "off"'
    listen = _get(ctx, hraw, "http", "listen", str, expected, "127.0.0.1:8474", environ=environ)
    token = _get(ctx, hraw, "http", "token", str, "a string", None, environ=environ)
    http = HttpConfig(listen=listen.strip(), token=Secret(token) if token else None)
    if not http.enabled:
        return http
    m = re.match(r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]*):([0-9]{1,5})$", http.listen)
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise ctx.err("http.listen", expected, listen)
    if not http.loopback and http.token is None:
        raise ConfigError(
            f"{ctx.file}: http.listen: {http.listen!r} is reachable beyond this machine: set "
            'http.token (e.g. token = "${SYNCLINE_HTTP_TOKEN}") or listen on 127.0.0.1'
        )
    return http


def _resolve(path: str, base: Path | None) -> str:
    p = Path(path)
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p)
