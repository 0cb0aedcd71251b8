"""The console's documents in the log (``put_doc`` / ``get_doc`` / ``docs``) on both logs:
the embedded one (``log.db``) and NATS (the stream's KV bucket, a real nats-server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncline.core.config_models import LogConfig
from syncline.log import open_control, open_observer
from syncline.testing.natsserver import NatsServer


@pytest.mark.parametrize("kind", ["embedded", "nats"])
def test_documents_round_trip_and_are_listed_by_prefix(kind: str, tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats") if kind == "nats" else None
    try:
        cfg = LogConfig(
            kind=kind,
            path=str(tmp_path / "log"),
            servers=(server.url,) if server else (),
            stream="docs",
        )
        (tmp_path / "log").mkdir()
        control = open_control(cfg)
        try:
            assert control.get_doc("stats.replica") == {}
            control.put_doc("stats.replica", {"tables": {"public.t": 3}, "apply_seconds": None})
            control.put_doc("stats.cache", {"tables": {}})
            control.put_doc("verify.replica", {"status": "equal"})
            control.put_doc("stats.replica", {"tables": {"public.t": 5}})  # replaced
            assert control.get_doc("stats.replica") == {"tables": {"public.t": 5}}
        finally:
            control.close()
        obs = open_observer(cfg)
        try:
            assert obs.docs("stats") == {"replica": {"tables": {"public.t": 5}}, "cache": {"tables": {}}}
            assert obs.docs("verify") == {"replica": {"status": "equal"}}
            assert obs.docs("nothing") == {}
        finally:
            obs.close()
    finally:
        if server is not None:
            server.stop()
