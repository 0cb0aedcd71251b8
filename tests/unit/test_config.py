from __future__ import annotations

from pathlib import Path

import pytest

from syncline.config import load_config, parse_config
from syncline.core.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "syncline.toml"
    p.write_text(text)
    return p


def test_minimal_config_and_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[source]\ndsn = "postgresql://u@h/db"\n'), environ={})
    assert cfg.source.slot == "syncline" and cfg.source.tables == ("*.*",)
    assert cfg.log.kind == "embedded" and cfg.log.path == str(tmp_path / ".syncline")
    assert cfg.views == ()
    assert cfg.source.copy_parallel == 2
    assert cfg.source.retained_wal_warning == 1 << 30


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("512MB", 512 << 20),
        ("2GB", 2 << 30),
        ("1.5 GB", 3 << 29),
        ("64kB", 64 << 10),
        (4096, 4096),
        ("10", 10),
    ],
)
def test_retained_wal_warning_sizes(tmp_path: Path, given: object, expected: int) -> None:
    value = f'"{given}"' if isinstance(given, str) else str(given)
    cfg = load_config(write(tmp_path, f'[source]\ndsn = "x"\nretained_wal_warning = {value}\n'), environ={})
    assert cfg.source.retained_wal_warning == expected


def test_env_reference_and_secret_never_printed(tmp_path: Path) -> None:
    text = '[source]\ndsn = "postgresql://u:${PW}@h/db"\n[views.r]\nkind = "postgres"\ndsn = "${RDSN}"\n'
    cfg = load_config(write(tmp_path, text), environ={"PW": "s3cr3t", "RDSN": "host=x password=hunter2"})
    assert cfg.source.dsn.value == "postgresql://u:s3cr3t@h/db"
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg.source)
    assert "hunter2" not in repr(cfg)
    assert "s3cr3t" in cfg.secrets() and "hunter2" in cfg.secrets()


@pytest.mark.parametrize(
    "text",
    [
        '[source]\ndsn = ["postgresql://u:PW-1234@h/db"]\n',
        '[source]\ndsn = { uri = "postgresql://u:PW-1234@h/db" }\n',
        '[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = ["redis://:PW-1234@h:6379/0"]\n',
        '[source]\ndsn = "x"\n[views.r]\nkind = "postgres"\ndsn = ["host=h password=PW-1234"]\n',
        '[source]\ndsn = "x"\n[http]\nlisten = "0.0.0.0:8474"\ntoken = ["PW-1234"]\n',
    ],
)
def test_a_secret_given_with_the_wrong_type_is_not_echoed(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), environ={})
    assert "PW-1234" not in str(e.value)
    assert "expected" in str(e.value) and "not shown" in str(e.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[source]\n", "source.dsn: missing"),
        ("[source]\ndsn = 5\n", "source.dsn: expected a libpq URI"),
        ('[source]\ndsn = "x"\nslot = "Bad-Slot"\n', "source.slot: expected lower-case"),
        ('[source]\ndsn = "x"\ntables = ["nodot"]\n', "source.tables: pattern 'nodot' must be schema.table"),
        ('[source]\ndsn = "x"\nwhat = 1\n', "source.what: unknown key"),
        ('[source]\ndsn = "x"\ncopy_parallel = 0\n', "source.copy_parallel: expected 1 to 16, got 0"),
        ('[source]\ndsn = "x"\ncopy_parallel = "2"\n', "source.copy_parallel: expected chunks read at once"),
        (
            '[source]\ndsn = "x"\nretained_wal_warning = "lots"\n',
            "source.retained_wal_warning: expected bytes",
        ),
        ('[source]\ndsn = "x"\nretained_wal_warning = 0\n', "source.retained_wal_warning: expected bytes"),
        ('[source]\ndsn = "x"\nretained_wal_warning = "5 PB"\n', "source.retained_wal_warning: expected"),
        ('[source]\ndsn = "x"\n[views.a]\nkind = "nope"\n', "views.a.kind: expected one of"),
        ('[source]\ndsn = "x"\n[views.a]\nkind = "duckdb"\n', "views.a.path: missing"),
        ('[source]\ndsn = "${NOPE}"\n', "source.dsn: environment variable NOPE"),
        ('[source]\ndsn = ""\n', "source.dsn: expected a libpq URI or key=value string, not an empty one"),
        ('[source]\ndsn = "x"\n[views.r]\nkind = "postgres"\ndsn = " "\n', "views.r.dsn: expected"),
        (
            '[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = ""\n',
            "views.c.url: expected a redis:// URL, not",
        ),
        (
            '[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = "redis://h"\nbatch_events = 0\n',
            "views.c.batch_events: expected a positive integer, got int 0",
        ),
        (
            '[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = "redis://h"\nbatch_interval = -1\n',
            "views.c.batch_interval: expected seconds from 0 to 60, got float -1.0",
        ),
        (
            '[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = "redis://h"\nbatch_interval = nan\n',
            "views.c.batch_interval: expected seconds from 0 to 60, got float nan",
        ),
        (
            '[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = "redis://h"\nbatch_interval = "1"\n',
            "views.c.batch_interval: expected seconds from 0 to 60",
        ),
        ('[source]\ndsn = "x"\n[log]\nkind = "kafka"\n', "log.kind"),
        ("[source\n", "not valid TOML"),
        (
            '[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = "redis://h"\nkey = "{table}:{price}"\n',
            "views.c.key: view 'c' (redis): option 'key' '{table}:{price}': unknown placeholder {price}",
        ),
        (
            '[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = "redis://h"\nkey = "{table}"\n',
            "must contain {pk}",
        ),
        ('[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = "redis://h"\nmode = "x"\n', "views.c.mode"),
        (
            '[source]\ndsn = "x"\n[views.s]\nkind = "tantivy"\npath = "p"\non_error = "go"\n',
            "views.s.on_error",
        ),
        (
            '[source]\ndsn = "x"\n[views.w]\nkind = "duckdb"\npath = "p"\nkeep_dropped_tables = "yes"\n',
            "views.w.keep_dropped_tables: expected true or false",
        ),
        (
            '[source]\ndsn = "x"\n[log]\nkind = "nats"\ncompact_publish_interval = 0\n',
            "log.compact_publish_interval: expected seconds (at least 1)",
        ),
        (
            '[source]\ndsn = "x"\n[log]\ncompact_publish_interval = 5\n',
            'log.compact_publish_interval: only for kind = "nats"',
        ),
        (
            '[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = "redis://h"\npartitions = 0\n',
            "views.c.partitions: expected an integer from 1 to 64, got int 0",
        ),
        (
            '[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = "redis://h"\npartitions = "2"\n',
            "views.c.partitions: expected an integer from 1 to 64",
        ),
        (
            '[source]\ndsn = "x"\n[views.r]\nkind = "postgres"\ndsn = "y"\npartitions = 2\n',
            "views.r.partitions: a postgres view is applied by one process",
        ),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path: Path, text: str, needle: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p, environ={})
    assert str(p) in str(e.value)
    assert needle in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")


def test_parse_config_views(tmp_path: Path) -> None:
    raw = {
        "source": {"dsn": "x", "tables": ["public.*"]},
        "views": {"w": {"kind": "duckdb", "path": "wh.duckdb", "tables": ["public.a"]}},
    }
    cfg = parse_config(raw, "f.toml", {}, base_dir=tmp_path)
    assert cfg.views[0].options["path"] == str(tmp_path / "wh.duckdb")
    assert cfg.views[0].tables == ("public.a",)


def test_nats_log(tmp_path: Path) -> None:
    text = (
        '[source]\ndsn = "postgresql://u@h/db"\n[log]\nkind = "nats"\n'
        'servers = ["nats://app:${NPW}@n1:4222", "nats://n2:4222"]\nstream = "orders-cdc"\nreplicas = 3\n'
    )
    cfg = load_config(write(tmp_path, text), environ={"NPW": "natsecret"})
    assert cfg.log.kind == "nats" and cfg.log.stream == "orders-cdc" and cfg.log.replicas == 3
    assert cfg.log.servers == ("nats://app:natsecret@n1:4222", "nats://n2:4222")
    assert "natsecret" in cfg.secrets()


@pytest.mark.parametrize(
    ("log", "needle"),
    [
        ('kind = "nats"\nservers = 5', "log.servers: expected a list of NATS URLs, got int"),
        (
            'kind = "nats"\nservers = {url = "nats://u:pw@h"}',
            "log.servers: expected a list of NATS URLs, got dict",
        ),
        ('kind = "nats"\nstream = "a.b"', "log.stream: 'a.b' is not a NATS stream name"),
        ('kind = "nats"\nreplicas = 2', "log.replicas: expected 1, 3 or 5, got 2"),
        ('stream = "x"', 'log.stream: only for kind = "nats"'),
        ('kind = "kafka"', "log.kind: 'kafka' is not available in this version"),
    ],
)
def test_nats_log_errors(tmp_path: Path, log: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f'[source]\ndsn = "x"\n[log]\n{log}\n'), environ={})
    assert needle in str(e.value)
    assert "pw@" not in str(e.value)


def test_partitions_make_one_applier_each(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path, '[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = "redis://h"\npartitions = 3\n'
        ),
        environ={},
    )
    (v,) = cfg.views
    assert v.partitions == 3 and v.partition is None
    assert [a.consumer for a in v.appliers()] == ["c.p0of3", "c.p1of3", "c.p2of3"]
    assert cfg.consumers() == {"c.p0of3", "c.p1of3", "c.p2of3"}


@pytest.mark.parametrize(
    ("views", "needle"),
    [
        (
            '[views.a]\nkind = "duckdb"\npath = "w.duckdb"\n[views.b]\nkind = "duckdb"\npath = "./w.duckdb"\n',
            "views a and b both write the same path",
        ),
        (
            '[views.a]\nkind = "tantivy"\npath = "idx"\n[views.b]\nkind = "tantivy"\npath = "idx/"\n',
            "views a and b both write the same path",
        ),
        (
            '[views.a]\nkind = "duckdb"\npath = "idx"\n[views.b]\nkind = "tantivy"\npath = "idx"\n',
            "views a and b both write the same path",
        ),
        (
            '[views.a]\nkind = "postgres"\ndsn = "postgresql://u:SECRET9@h:5433/rep"\n'
            '[views.b]\nkind = "postgres"\ndsn = "host=h port=5433 dbname=rep user=other"\n',
            "views a and b both write the same database (rep on h:5433)",
        ),
        (
            '[views.a]\nkind = "redis"\nurl = "redis://:SECRET9@h:6379/2"\n'
            '[views.b]\nkind = "redis"\nurl = "redis://h/2"\n',
            "views a and b both write the same Redis keys (database 2 on h:6379",
        ),
        ('[views.a]\nkind = "duckdb"\npath = "lg/log.db"\n', "is a file of syncline's own log"),
        ('[views.a]\nkind = "duckdb"\npath = "lg/compact.db"\n', "is a file of syncline's own log"),
    ],
)
def test_two_views_on_one_target_are_refused(tmp_path: Path, views: str, needle: str) -> None:
    text = '[source]\ndsn = "x"\n[log]\npath = "lg"\n' + views
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), environ={})
    assert needle in str(e.value)
    assert "SECRET9" not in str(e.value)


def test_views_on_different_targets_of_one_server_are_fine(tmp_path: Path) -> None:
    text = (
        '[source]\ndsn = "x"\n'
        '[views.a]\nkind = "redis"\nurl = "redis://h/2"\n'
        '[views.b]\nkind = "redis"\nurl = "redis://h/3"\n'
        '[views.c]\nkind = "redis"\nurl = "redis://h/2"\nkey = "c:{table}:{pk}"\n'
        '[views.d]\nkind = "postgres"\ndsn = "postgresql://h/one"\n'
        '[views.e]\nkind = "postgres"\ndsn = "postgresql://h/two"\n'
        '[views.f]\nkind = "duckdb"\npath = ".syncline/w.duckdb"\n'
    )
    assert len(load_config(write(tmp_path, text), environ={}).views) == 6


def test_a_config_that_cannot_be_read_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a configuration file"):
        load_config(tmp_path, environ={})
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[source]\ndsn = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(bad, environ={})


@pytest.mark.parametrize(
    ("url", "needle"),
    [("http://u:SECRET9@h:6379/0", "got http://"), ("h:6379", "got no scheme"), ("SECRET9", "got no scheme")],
)
def test_a_redis_url_of_another_scheme_is_refused_at_load(tmp_path: Path, url: str, needle: str) -> None:
    text = f'[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = "{url}"\n'
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), environ={})
    assert "views.c.url: expected a redis://, rediss:// or unix:// URL" in str(e.value) and needle in str(
        e.value
    )
    assert "SECRET9" not in str(e.value)


def test_batch_interval_is_the_kinds_default_unless_configured(tmp_path: Path) -> None:
    from syncline.runtime.workers import batch_interval

    f = tmp_path / "s.toml"
    f.write_text(
        '[source]\ndsn = "x"\n[views.c]\nkind = "redis"\nurl = "redis://h"\n'
        '[views.w]\nkind = "duckdb"\npath = "w.duckdb"\nbatch_interval = 0\n'
        '[views.s]\nkind = "tantivy"\npath = "idx"\n'
    )
    views = {v.name: v for v in load_config(f).views}
    assert batch_interval(views["c"]) == 0.005
    assert batch_interval(views["w"]) == 0.0
    assert batch_interval(views["s"]) == 0.1
