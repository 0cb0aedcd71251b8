from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncline.testing.harness import Pipeline
from syncline.testing.pgcluster import PgCluster, running_cluster

CI = os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under ``CI=true`` a skipped test fails: a test that needs something missing must
    install it or fail, never pass silently."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if CI and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped under CI=true (a skip is a failure here): {reason}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suites' figures (``syncline.testing.faults``), as one table."""
    from syncline.testing import faults

    if faults.RECORDED:
        terminalreporter.section("fault summary")
        terminalreporter.line(faults.table(faults.RECORDED))


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    with running_cluster() as c:
        yield c


@pytest.fixture
def pipeline(pg: PgCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    """A pipeline with every view kind (a module's ``EXTRA_VIEWS`` adds kinds); the log's kind is the indirect parameter when a
    module parametrises ``pipeline`` (``embedded``, ``nats``), else ``SYNCLINE_TEST_LOG``."""
    kinds = tuple(os.environ.get("SYNCLINE_TEST_VIEWS", "postgres,duckdb,redis,tantivy").split(","))
    log_kind = getattr(request, "param", None)
    base_only = request.node.get_closest_marker("base_views") is not None
    if log_kind != "nats" and not os.environ.get("PG_BINDIR") and not base_only:
        # a view kind's own behaviour does not change with the log or the PostgreSQL major:
        # the extra kinds run once, on the embedded log and the machine's PostgreSQL
        kinds += tuple(k for k in getattr(request.module, "EXTRA_VIEWS", ()) if k not in kinds)
    p = Pipeline(pg, tmp_path, views=kinds, log_kind=log_kind)
    try:
        yield p
    finally:
        p.close()
