from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    c = PgCluster()
    c.init()
    c.start()
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture
def pipeline(pg: PgCluster, tmp_path: Path) -> Iterator[Pipeline]:
    kinds = tuple(os.environ.get("SYNCLINE_TEST_VIEWS", "postgres,duckdb").split(","))
    p = Pipeline(pg, tmp_path, views=kinds)
    try:
        yield p
    finally:
        p.close()
