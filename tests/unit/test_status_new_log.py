import sqlite3
from pathlib import Path

from syncline.config import load_config
from syncline.runtime.status import status


def test_status_while_run_creates_the_log(tmp_path: Path) -> None:
    cfg_path = tmp_path / "syncline.toml"
    cfg_path.write_text(
        '[source]\ndsn = "postgresql://nobody@127.0.0.1:1/none"\n[log]\npath = "log"\n'
        '[views.replica]\nkind = "postgres"\ndsn = "postgresql://nobody@127.0.0.1:1/r"\n'
    )
    (tmp_path / "log").mkdir()
    sqlite3.connect(tmp_path / "log" / "log.db").close()  # created, no tables yet
    st = status(load_config(cfg_path), with_source=False)
    assert st["log"]["state"] == "new" and st["views"]["replica"]["state"] == "new"
