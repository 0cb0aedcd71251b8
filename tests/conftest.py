from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster, running_cluster


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    with running_cluster() as c:
        yield c


@pytest.fixture
def pipeline(pg: PgCluster, tmp_path: Path) -> Iterator[Pipeline]:
    kinds = tuple(os.environ.get("SYNCLINE_TEST_VIEWS", "postgres,duckdb,redis,tantivy").split(","))
    p = Pipeline(pg, tmp_path, views=kinds)
    try:
        yield p
    finally:
        p.close()
