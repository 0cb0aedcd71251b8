"""`syncline search VIEW QUERY` over a tantivy view."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from syncline.config import load_config
from syncline.core.events import Column, Relation, RowChange, SchemaChange
from syncline.testing.scripted import ScriptedBatches
from syncline.views.registry import create_view


def test_search_finds_rows_by_words(tmp_path: Path) -> None:
    cfg_path = tmp_path / "syncline.toml"
    cfg_path.write_text(
        '[source]\ndsn = "postgresql://nobody@127.0.0.1:1/none"\n'
        '[views.search]\nkind = "tantivy"\npath = "idx"\ntext_fields = ["name"]\ntokenizer = "en_stem"\n'
    )
    cfg = load_config(cfg_path)
    view = create_view(cfg.views[0])
    view.open()
    rel = Relation(
        42,
        "public",
        "products",
        "d",
        (
            Column("id", 23, -1, "integer", "N", "", "integer", True),
            Column("name", 25, -1, "text", "S", "", "text"),
        ),
        ("id",),
    )
    s = ScriptedBatches()
    view.apply(
        s.batch(
            s.txn(
                SchemaChange(rel),
                RowChange("insert", 42, ("1", "Running shoes")),
                RowChange("insert", 42, ("2", "Quiet kettle")),
            )
        )
    )
    view.close()
    r = subprocess.run(
        [sys.executable, "-m", "syncline", "search", "search", "run", "--json", "-c", str(cfg_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert [(h["table"], h["key"]) for h in hits] == [("public.products", "1")]
    for sort, keys in (("id", ["1", "2"]), ("-id", ["2", "1"])):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "syncline",
                "search",
                "search",
                "*",
                f"--sort={sort}",
                "--json",
                "-c",
                str(cfg_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert [h["key"] for h in json.loads(r.stdout)] == keys
    bad = subprocess.run(
        [sys.executable, "-m", "syncline", "search", "nope", "x", "-c", str(cfg_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "no search (tantivy) view named 'nope'" in bad.stderr
    # columns by name (issue 9, item 11): name:kettle, a range over id, a quoted colon
    from syncline.views.tantivy.view import search

    idx = str(tmp_path / "idx")
    assert [h["key"] for h in search(idx, "name:kettle")] == ["2"]
    assert [h["key"] for h in search(idx, "id:[2 TO 9]")] == ["2"]
    assert [h["key"] for h in search(idx, "doc.name:running AND _table:public.products")] == ["1"]
    assert search(idx, '"name:kettle"') == []

    # bad input (issue 13, item 9): one line, exit 2, never an empty answer
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "syncline", "search", "search", *args, "-c", str(cfg_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    for args, needle in (
        (("*", "--sort=price"), "no column 'price'"),
        (("*", "--sort=-name"), "column 'name' is not a number, date or timestamp column"),
        (("*", "--limit", "-1"), "expected a whole number >= 0"),
    ):
        r = cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
