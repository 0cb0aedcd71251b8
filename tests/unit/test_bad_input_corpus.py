"""The bad-input corpus (issue 13): configurations and command lines a user can get wrong,
each answered by exactly one clear line on stderr and exit code 2, before anything connects
or is created, with the canary secret printed nowhere.

Each case is a configuration (or a command line) and a piece of the one line it must get.
The corpus runs the real command (``syncline status -c FILE``) in this process; a case that
were accepted would reach for the source (a closed port here) and fail the needle check."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from syncline.cli.main import main

CANARY = "Kanary7f3aSecretZ"
"""A password in every DSN, URL and token of the corpus: it must never be printed."""

DSN = f"postgresql://app:{CANARY}@127.0.0.1:9/shop"
REDIS = f"redis://:{CANARY}@127.0.0.1:9/0"
NATS = f"nats://u:{CANARY}@127.0.0.1:9"


@dataclass(frozen=True)
class Case:
    name: str
    text: str | bytes
    """The configuration file's content."""
    needle: str
    """A piece of the one error line."""


def src(**over: str) -> str:
    """A ``[source]`` table: the defaults, with ``over`` replacing or adding TOML values."""
    keys = {"dsn": f'"{DSN}"'}
    keys.update(over)
    return "[source]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items() if v != "")


def view(name: str, kind: str, **over: str) -> str:
    base = {
        "postgres": {"dsn": f'"{DSN.replace("shop", "replica")}"'},
        "duckdb": {"path": '"w.duckdb"'},
        "redis": {"url": f'"{REDIS}"'},
        "tantivy": {"path": '"search"'},
    }.get(kind, {})
    keys = {"kind": f'"{kind}"', **base, **over}
    return f"[views.{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items() if v != "")


def cases() -> Iterator[Case]:
    # -- the file itself ------------------------------------------------------------------
    yield Case("empty file", "", "[source]: missing table")
    yield Case("not utf-8", b"[source]\ndsn = '\xff\xfe'\n", "not UTF-8 text")
    yield Case("latin-1 comment", b"# caf\xe9\n[source]\ndsn = 'x'\n", "not UTF-8 text")
    for i, bad in enumerate(
        [
            "[source\ndsn = 'x'",
            "[source]\ndsn = ",
            "[source]\ndsn = 'x'\ndsn = 'y'",
            "[source]\ndsn = 'unterminated",
            '[source]\ndsn = """x',
            "[source]\n= 'x'",
            "[source]\ndsn 'x'",
            "[[source]]\ndsn = 'x'\n[source]\n",
            '[source]\ntables = ["a",',
            "[source]\ncopy_parallel = 0x",
            "[source]\ndsn = 'x' junk",
            "\x00",
        ]
    ):
        yield Case(f"not toml {i}", bad, "not valid TOML")
    yield Case("source is a value", 'source = "postgresql://x"\n', "[source]: missing table")
    yield Case("source is a list", "[[source]]\ndsn = 'x'\n", "[source]: missing table")
    yield Case("unknown top-level table", src() + "[sources]\nx = 1\n", "sources")
    yield Case("log is a value", 'log = "x"\n' + src(), "log")
    yield Case("views is a value", 'views = "x"\n' + src(), "views")
    yield Case("http is a value", 'http = "x"\n' + src(), "http")

    # -- [source] -------------------------------------------------------------------------
    yield Case("no dsn", "[source]\nslot = 'a'\n", "source.dsn")
    yield Case("empty dsn", src(dsn='""'), "not an empty one")
    yield Case("blank dsn", src(dsn='"   "'), "not an empty one")
    for t, v in [("list", f'["{DSN}"]'), ("table", f'{{ url = "{DSN}" }}'), ("int", "5432")]:
        yield Case(f"dsn as a {t}", src(dsn=v), "source.dsn")
    yield Case("dsn as a bool", src(dsn="true"), "source.dsn")
    yield Case("dsn from a missing variable", src(dsn='"${SYNCLINE_CORPUS_NOPE}"'), "SYNCLINE_CORPUS_NOPE")
    yield Case("dsn with a half variable", src(dsn=f'"postgresql://app:{CANARY}@h/${{OOPS"'), "source.dsn")
    for k in ("mysql", "Postgres", "", "kafka"):
        yield Case(f"source kind {k!r}", src(kind=f'"{k}"'), "source.kind")
    yield Case("source kind a list", src(kind='["postgres"]'), "source.kind")
    for key in ("slot", "publication"):
        for bad in ("Upper", "with-dash", "", "a b", "x;drop table t", "é", "a" * 64, "1.5"):
            yield Case(f"{key} {bad[:12]!r}", src(**{key: f'"{bad}"'}), f"source.{key}")
        yield Case(f"{key} a number", src(**{key: "5"}), f"source.{key}")
    for bad in ("0", "17", "-1", "1.5", '"2"', "true"):
        yield Case(f"copy_parallel {bad}", src(copy_parallel=bad), "source.copy_parallel")
    for key in ("streaming", "failover", "allow_superuser"):
        for bad in ('"yes"', "1", '"true"'):
            yield Case(f"{key} {bad}", src(**{key: bad}), f"source.{key}")
    for bad in ('"nodot"', "[1]", '[["a"]]', "{a = 1}", '[""]'):
        yield Case(f"source tables {bad}", src(tables=bad), "source.tables")
    for bad in ('"public.t"', '["t"]', '["!public.t.c"]', "[1]", '[""]', "{a = 1}", "true"):
        yield Case(f"exclude_columns {bad}", src(exclude_columns=bad), "source.exclude_columns")
    yield Case("unknown source key", src(password=f'"{CANARY}"'), "source.password")
    yield Case("misspelt source key", src(tabels='["a.b"]'), "source.tabels")

    # -- [log] ----------------------------------------------------------------------------
    for bad in ('"kafka"', '"Embedded"', '""', "1"):
        yield Case(f"log kind {bad}", src() + f"[log]\nkind = {bad}\n", "log.kind")
    yield Case("log path a number", src() + "[log]\npath = 5\n", "log.path")
    yield Case("log path a list", src() + "[log]\npath = ['a']\n", "log.path")
    for bad in ('"forever"', '"Keep"', "true"):
        yield Case(f"retention {bad}", src() + f"[log]\nretention = {bad}\n", "log.retention")
    yield Case("unknown log key", src() + "[log]\nsize = 5\n", "log.size")
    yield Case("servers for an embedded log", src() + f'[log]\nservers = ["{NATS}"]\n', "log.servers")
    yield Case("stream for an embedded log", src() + '[log]\nstream = "s"\n', "log.stream")
    nats = '[log]\nkind = "nats"\n'
    for what, bad in [
        ("empty", "[]"),
        ("number", "4222"),
        ("list of numbers", "[4222]"),
        ("empty string", '[""]'),
        ("table", f'{{ url = "{NATS}" }}'),
        ("list with a table", f'[{{ url = "{NATS}" }}]'),
    ]:
        yield Case(f"nats servers {what}", src() + nats + f"servers = {bad}\n", "log.servers")
    yield Case(
        "nats servers from a missing variable",
        src() + nats + 'servers = ["nats://u:${SYNCLINE_CORPUS_NOPE}@h:4222"]\n',
        "SYNCLINE_CORPUS_NOPE",
    )
    for bad in ('"a.b"', '"a b"', '""', '"x>"', '"' + "s" * 65 + '"', "5"):
        yield Case(f"nats stream {bad[:10]}", src() + nats + f"stream = {bad}\n", "log.stream")
    for bad in ("0", "2", "4", "-1", '"3"', "3.0"):
        yield Case(f"nats replicas {bad}", src() + nats + f"replicas = {bad}\n", "log.replicas")
    for bad in ("0", "0.5", "-60", '"60"', "true", "nan"):
        yield Case(
            f"compact_publish_interval {bad}",
            src() + nats + f"compact_publish_interval = {bad}\n",
            "log.compact_publish_interval",
        )

    # -- [views.*] ------------------------------------------------------------------------
    yield Case("view is a value", src() + "[views]\nc = 'redis'\n", "views.c")
    for bad in ("a.b", "a b", "é", "x" * 64):
        yield Case(f"view name {bad[:8]!r}", src() + f'[views."{bad}"]\nkind = "redis"\n', "views.")
    for bad in ('"mysql"', '"Redis"', '""', "1", '["redis"]'):
        yield Case(f"view kind {bad}", src() + f"[views.v]\nkind = {bad}\n", "views.v.kind")
    yield Case("view without kind", src() + f'[views.v]\nurl = "{REDIS}"\n', "views.v.kind")
    yield Case("postgres view without dsn", src() + view("r", "postgres", dsn=""), "views.r.dsn")
    yield Case("postgres view empty dsn", src() + view("r", "postgres", dsn='""'), "views.r.dsn")
    yield Case(
        "postgres view dsn as a list",
        src() + view("r", "postgres", dsn=f'["{DSN}"]'),
        "views.r.dsn",
    )
    yield Case("duckdb view without path", src() + view("w", "duckdb", path=""), "views.w.path")
    yield Case("duckdb view path a number", src() + view("w", "duckdb", path="1"), "views.w.path")
    yield Case(
        "keep_dropped_tables a string",
        src() + view("w", "duckdb", keep_dropped_tables='"yes"'),
        "views.w.keep_dropped_tables",
    )
    yield Case("redis view without url", src() + view("c", "redis", url=""), "views.c.url")
    yield Case("redis view empty url", src() + view("c", "redis", url='""'), "views.c.url")
    yield Case("redis url a list", src() + view("c", "redis", url=f'["{REDIS}"]'), "views.c.url")
    yield Case("redis url a table", src() + view("c", "redis", url=f'{{ u = "{REDIS}" }}'), "views.c.url")
    for bad in ("http", "postgresql", "redis+sentinel", "rediss+x"):
        yield Case(
            f"redis url scheme {bad}",
            src() + view("c", "redis", url=f'"{bad}://:{CANARY}@h:6379/0"'),
            "views.c.url",
        )
    yield Case("redis url without scheme", src() + view("c", "redis", url=f'"{CANARY}@h"'), "views.c.url")
    for bad in ('"{nope}"', '"{table"', '"table}"', '"{}"', '"{pk}{pk"', "5", '""'):
        yield Case(f"redis key {bad}", src() + view("c", "redis", key=bad), "views.c.key")
    for bad in ('"HASH"', '"json"', "1"):
        yield Case(f"redis mode {bad}", src() + view("c", "redis", mode=bad), "views.c.mode")
    for bad in ('"10"', "1.5", "[1]"):
        yield Case(f"redis ttl {bad}", src() + view("c", "redis", ttl=bad), "views.c.ttl")
    for bad in ('"id"', "[1]", '[""]', '["id", 2]'):
        yield Case(f"redis columns {bad}", src() + view("c", "redis", columns=bad), "views.c.columns")
    for bad in ('"ignore"', '"Stop"'):
        yield Case(f"redis on_error {bad}", src() + view("c", "redis", on_error=bad), "views.c.on_error")
    yield Case("redis rebuild_db text", src() + view("c", "redis", rebuild_db='"1"'), "views.c.rebuild_db")
    yield Case("tantivy without path", src() + view("s", "tantivy", path=""), "views.s.path")
    yield Case(
        "tantivy text_fields a string",
        src() + view("s", "tantivy", text_fields='"name"'),
        "views.s.text_fields",
    )
    yield Case(
        "tantivy commit_interval text",
        src() + view("s", "tantivy", commit_interval='"1"'),
        "views.s.commit_interval",
    )
    yield Case("tantivy on_error", src() + view("s", "tantivy", on_error='"drop"'), "views.s.on_error")
    yield Case("tantivy unknown key", src() + view("s", "tantivy", url=f'"{REDIS}"'), "views.s.url")
    yield Case("duckdb view redis key", src() + view("w", "duckdb", key='"{pk}"'), "views.w.key")
    for kind in ("postgres", "duckdb", "redis", "tantivy"):
        for bad in ("0", "-1", '"100"', "1.5", "true"):
            yield Case(
                f"{kind} batch_events {bad}",
                src() + view("v", kind, batch_events=bad),
                "views.v.batch_events",
            )
        for bad in ("-1", "61", "nan", "inf", '"0.1"'):
            yield Case(
                f"{kind} batch_interval {bad}",
                src() + view("v", kind, batch_interval=bad),
                "views.v.batch_interval",
            )
        yield Case(f"{kind} tables without schema", src() + view("v", kind, tables='["t"]'), "views.v.tables")
    for bad in ("0", "65", "-2", '"4"', "true"):
        yield Case(
            f"redis partitions {bad}", src() + view("c", "redis", partitions=bad), "views.c.partitions"
        )
    for kind in ("postgres", "duckdb", "tantivy"):
        yield Case(f"{kind} partitions 2", src() + view("v", kind, partitions="2"), "views.v.partitions")
    # two views on one store; a view on the log's own files
    for name, text in [
        ("two duckdb views one file", view("a", "duckdb") + view("b", "duckdb")),
        (
            "two duckdb views one file by another name",
            view("a", "duckdb") + view("b", "duckdb", path='"./sub/../w.duckdb"'),
        ),
        ("two tantivy views one directory", view("a", "tantivy") + view("b", "tantivy", path='"search/"')),
        ("two replica views one database", view("a", "postgres") + view("b", "postgres")),
        ("two redis views same keys", view("a", "redis") + view("b", "redis")),
    ]:
        yield Case(name, src() + text, "each view needs a store of its own")
    for name, text in [
        ("duckdb view on log.db", view("w", "duckdb", path='"state/log.db"')),
        ("duckdb view on compact.db", view("w", "duckdb", path='"state/compact.db"')),
        ("tantivy view on the log directory", view("s", "tantivy", path='"state"')),
    ]:
        yield Case(name, src() + '[log]\npath = "state"\n' + text, "a file of syncline's own log")

    # -- [http] ---------------------------------------------------------------------------
    for bad in ('"8474"', '"localhost"', '"127.0.0.1:0"', '"127.0.0.1:70000"', '"a:b:c:1"', "8474"):
        yield Case(f"http listen {bad}", src() + f"[http]\nlisten = {bad}\n", "http.listen")
    yield Case(
        "http beyond loopback without token",
        src() + '[http]\nlisten = "0.0.0.0:8474"\n',
        "set http.token",
    )
    yield Case("http token a list", src() + f'[http]\ntoken = ["{CANARY}"]\n', "http.token")
    yield Case("http token a number", src() + "[http]\ntoken = 12345\n", "http.token")
    yield Case("http token a table", src() + f'[http]\ntoken = {{ t = "{CANARY}" }}\n', "http.token")
    yield Case("http unknown key", src() + f'[http]\npassword = "{CANARY}"\n', "http.password")


CASES = list(cases())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_configuration_gets_one_clear_line(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNCLINE_CORPUS_NOPE", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "syncline.toml"
    if isinstance(case.text, bytes):
        cfg.write_bytes(case.text)
    else:
        cfg.write_text(case.text)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["status", "-c", str(cfg)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("syncline: error: "), err
    assert case.needle in lines[0], err
    assert CANARY not in out + err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a bad configuration created files"


CLI_CASES: list[tuple[list[str], str]] = (
    [(["wait", "--timeout", t], "--timeout") for t in ("nan", "-5", "inf", "-inf", "soon", "", "1e999")]
    + [
        (["verify", "--limit", "-1"], "--limit"),
        (["verify", "--limit", "1.5"], "--limit"),
        (["search", "v", "q", "--limit", "-1"], "--limit"),
        (["search", "v", "q", "--limit", "ten"], "--limit"),
        (["search", "v"], "query"),
        (["nosuchcommand"], "invalid choice"),
        (["demo", "nosuch"], "invalid choice"),
        (["status", "--nosuchflag"], "unrecognized arguments"),
    ]
    + [(["wait", "--timeout", "1", "--timeout"], "--timeout")]
)


@pytest.mark.parametrize(("argv", "needle"), CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_a_bad_command_line_is_a_usage_error(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, "-c", str(tmp_path / "none.toml")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert "Traceback" not in err


# -- HTTP requests ------------------------------------------------------------------------------

TOKEN = CANARY + "tok"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


def _request(path: str, headers: str = AUTH, method: str = "GET", version: str = "HTTP/1.1") -> bytes:
    return f"{method} {path} {version}\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode()


HTTP_CASES: list[tuple[str, bytes, int]] = [
    # no token, a wrong one, one given another way
    *[
        (f"no token {p}", _request(p, headers=""), 401)
        for p in ("/status", "/wait", "/metrics", "/", "/nope")
    ],
    ("wrong token", _request("/status", headers="Authorization: Bearer nope\r\n"), 401),
    ("token prefix", _request("/status", headers=f"Authorization: Bearer {TOKEN[:-1]}\r\n"), 401),
    ("token longer", _request("/status", headers=f"Authorization: Bearer {TOKEN}x\r\n"), 401),
    ("basic scheme", _request("/status", headers=f"Authorization: Basic {TOKEN}\r\n"), 401),
    ("token without scheme", _request("/status", headers=f"Authorization: {TOKEN}\r\n"), 401),
    ("token in the query", _request(f"/status?token={TOKEN}", headers=""), 401),
    ("token in another header", _request("/status", headers=f"X-Token: {TOKEN}\r\n"), 401),
    # paths
    ("unknown path", _request("/nope"), 404),
    ("dot-dot path", _request("/status/../../etc/passwd"), 404),
    ("encoded nul", _request("/status%00"), 404),
    ("long path", _request("/" + "a" * 4000), 404),
    ("views path", _request("/views/x"), 404),
    # /wait's query
    *[
        (f"wait timeout {t}", _request(f"/wait?timeout={t}"), 400)
        for t in ("nan", "-1", "inf", "1e999", "abc", "301", "", "0x10")
    ],
    *[
        (f"wait lsn {v}", _request(f"/wait?timeout=1&lsn={v}"), 400)
        for v in ("garbage", "0/ZZ", "1/2/3", "-1/0", "/", "0/", "%27%3Bdrop")
    ],
    ("wait unknown view", _request("/wait?view=nope"), 400),
    ("wait one unknown of two", _request("/wait?view=v,nope"), 400),
    # other methods, and what the HTTP layer itself refuses
    *[
        (f"method {m}", _request("/status", method=m), 405)
        for m in ("POST", "PUT", "DELETE", "PATCH", "BREW")
    ],
    ("method OPTIONS", _request("*", method="OPTIONS"), 405),
    ("not http", b"GARBAGE\r\n\r\n", 400),
    ("http/2.0 request line", _request("/status", version="HTTP/2.0"), 505),
    ("huge header", _request("/status", headers=AUTH + "X-Big: " + "b" * 70_000 + "\r\n"), 431),
    ("many headers", _request("/status", headers=AUTH + "".join(f"X-{i}: v\r\n" for i in range(120))), 431),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    from syncline.config import parse_config
    from syncline.runtime.http import ApiServer
    from syncline.testing.pgcluster import free_port

    port = free_port()
    raw = {
        "source": {"dsn": DSN},
        "log": {"path": str(tmp_path_factory.mktemp("api") / "state")},
        "views": {"v": {"kind": "redis", "url": REDIS}},
        "http": {"listen": f"127.0.0.1:{port}", "token": TOKEN},
    }
    server = ApiServer(parse_config(raw, "corpus.toml", {}))
    server.start()
    try:
        yield port
    finally:
        server.stop()


@pytest.mark.parametrize(("name", "request_bytes", "code"), HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
def test_a_bad_http_request_gets_one_json_error(api: int, name: str, request_bytes: bytes, code: int) -> None:
    import json
    import socket

    with socket.create_connection(("127.0.0.1", api), timeout=10) as s:
        s.sendall(request_bytes)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert status == code, raw[:500]
    assert CANARY.encode() not in raw
    assert b"<html" not in raw.lower()
    assert json.loads(body)["error"], body


def test_the_corpus_is_large_and_its_names_unique() -> None:
    assert len(CASES) + len(CLI_CASES) + len(HTTP_CASES) >= 150
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
