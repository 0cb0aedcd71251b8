"""A real schema and data set: pagila (enums, domains, partitioned payments, arrays, bytea,
tsvector, triggers), snapshot plus a stream of changes, every view compared."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

from syncline.testing.harness import Pipeline

PAGILA = Path(__file__).resolve().parents[1] / "data" / "pagila"
"""pagila (PostgreSQL licence, LICENSE.txt there), kept in the repository so the test never skips."""


def load(p: Pipeline, file: Path) -> None:
    subprocess.run(
        [
            str(p.cluster.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=0",
            "-d",
            p.source_dsn,
            "-f",
            str(file),
        ],
        check=True,
        capture_output=True,
    )


def test_pagila_snapshot_and_stream(pipeline: Pipeline, tmp_path: Path) -> None:
    p = pipeline
    data = tmp_path / "pagila-data.sql"
    with gzip.open(PAGILA / "pagila-data.sql.gz", "rb") as src, open(data, "wb") as dst:
        shutil.copyfileobj(src, dst)
    load(p, PAGILA / "pagila-schema.sql")
    load(p, data)
    p.start()
    p.wait_caught_up(timeout=300)
    p.sql(
        "UPDATE film SET rental_rate = rental_rate + 1, special_features = special_features || '{Trailers}'::text[] WHERE film_id % 7 = 0"
    )
    p.sql("UPDATE customer SET activebool = NOT activebool, email = lower(email) WHERE customer_id % 5 = 0")
    p.sql(
        "INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date)"
        " SELECT customer_id, staff_id, rental_id, amount + 1, payment_date"
        " FROM payment WHERE payment_id % 50 = 0"
    )
    p.sql("DELETE FROM payment WHERE payment_id % 97 = 0")
    p.sql(
        "UPDATE payment SET payment_date = payment_date - interval '1 month'"
        " WHERE payment_id % 111 = 0 AND payment_date >= '2022-02-15'"
    )  # moves partitions
    p.sql("UPDATE staff SET picture = '\\xdeadbeef'::bytea WHERE staff_id = 1")
    p.wait_caught_up(timeout=300)
    assert p.stop() == 0
    p.assert_equal()
