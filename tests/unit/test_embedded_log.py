"""The embedded log's rules, on a real SQLite file: whole transactions in commit order,
streamed transactions buffered per xid with (sub)transaction aborts honoured, and nothing
of an unfinished transaction visible or kept after a crash."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from syncline.core.events import Checkpoint, RowChange
from syncline.log.embedded import store
from syncline.log.embedded.store import EmbeddedLogReader, EmbeddedLogWriter
from syncline.sources.postgres.pgoutput import encode_insert


def read_all(path: Path) -> list[tuple[int, list[str]]]:
    r = EmbeddedLogReader(path)
    out: list[tuple[int, list[str]]] = []
    cp = Checkpoint()
    try:
        while True:
            txns = r.read(cp, 7)
            if not txns:
                return out
            for t in txns:
                vals = [str(i.new[0]) for i in t.items if isinstance(i, RowChange) and i.new]
                if out and out[-1][0] == t.commit_lsn and out[-1][1][-1:] != ["<end>"]:
                    out[-1][1].extend(vals)
                else:
                    out.append((t.commit_lsn, vals))
                if t.last:
                    out[-1][1].append("<end>")
            cp = Checkpoint(txns[-1].seq, txns[-1].commit_lsn)
    finally:
        r.close()


def test_unfinished_transaction_is_invisible_and_dropped_at_open(tmp_path: Path) -> None:
    w = EmbeddedLogWriter(tmp_path)
    w.begin(1, 100, 0)
    w.add(encode_insert(1, ("a",)))
    w.commit(100, 110, 0)
    w.sync()
    w.begin(2, 200, 0)
    for i in range(50):
        w.add(encode_insert(1, (f"big{i}" + "x" * 200_000,)))  # several parts, some written
    assert read_all(tmp_path) == [(100, ["a", "<end>"])]
    w.close()  # crash: the transaction never committed
    w2 = EmbeddedLogWriter(tmp_path)
    assert w2.last_commit_lsn() == 100
    count = w2.conn.execute("SELECT count(*) FROM records").fetchone()[0]
    assert count == 1
    w2.close()


def test_large_transaction_spans_parts_in_order(tmp_path: Path, monkeypatch: object) -> None:
    w = EmbeddedLogWriter(tmp_path)
    w.begin(1, 100, 0)
    for i in range(3000):
        w.add(encode_insert(1, (str(i), "y" * 3000)))
    w.commit(100, 110, 0)
    w.sync()
    w.close()
    got = read_all(tmp_path)
    assert got == [(100, [*map(str, range(3000)), "<end>"])]


# a script of streamed-transaction events: (op, xid, subxid)
ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "add", "abort_sub", "commit", "abort"]),
        st.integers(1, 3),
        st.integers(0, 2),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_streamed_transactions_commit_in_commit_order(script: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)
        old = store.PART_BYTES
        store.PART_BYTES = 64  # spill to the pending table all the time
        try:
            w = EmbeddedLogWriter(path)
            model: dict[int, list[tuple[int, str]]] = {}
            expected: list[tuple[int, list[str]]] = []
            lsn = 1000
            n = 0
            for op, x, sub in script:
                xid = x * 10
                subxid = xid + sub  # sub == 0: the top transaction itself
                if op == "add":
                    n += 1
                    w.stream_add(xid, subxid, encode_insert(1, (f"v{n}",)))
                    model.setdefault(xid, []).append((subxid, f"v{n}"))
                elif op == "abort_sub" and sub:
                    w.stream_abort(xid, subxid)
                    model[xid] = [(s, v) for s, v in model.get(xid, []) if s != subxid]
                elif op == "abort":
                    w.stream_abort(xid, xid)
                    model.pop(xid, None)
                elif op == "commit" and xid in model:
                    lsn += 10
                    w.stream_commit(xid, lsn, lsn + 5, 0)
                    vals = [v for _s, v in model.pop(xid)]
                    if vals:  # an empty transaction leaves no record
                        expected.append((lsn, [*vals, "<end>"]))
            w.sync()
            w.close()
            assert read_all(path) == expected
        finally:
            store.PART_BYTES = old


def test_a_log_keeps_its_id_until_it_is_emptied_after_holding_records(tmp_path: Path) -> None:
    """(issue 13, item 8) The id views store with their checkpoint: kept across opens and by
    the reset of a log that never held a record (views may have read the id already), new
    once a log that held records is emptied."""
    w = EmbeddedLogWriter(tmp_path)
    first = w.meta("log_id")
    assert len(first) == 16
    w.reset()  # the first snapshot begins: nothing was visible yet
    assert w.meta("log_id") == first
    w.begin(1, 100, 0)
    w.add(encode_insert(1, ("a",)))
    w.commit(100, 110, 0)
    w.sync()
    w.close()
    w = EmbeddedLogWriter(tmp_path)
    assert w.meta("log_id") == first
    w.reset()
    second = w.meta("log_id")
    assert len(second) == 16 and second != first
    r = EmbeddedLogReader(tmp_path)
    assert r.meta("log_id") == second
    r.close()
    w.close()


def test_decoded_inserts_span_parts_in_order_like_items(tmp_path: Path) -> None:
    """``add_insert`` (a copy's rows, decoded) counts toward a part's size as its item would:
    a large transaction is cut into several records, read back in order."""
    w = EmbeddedLogWriter(tmp_path)
    w.begin(1, 100, 0)
    for i in range(3000):
        if i % 3:
            w.add_insert(1, (str(i), "y" * 3000))
        else:
            w.add(encode_insert(1, (str(i), "y" * 3000)))
    w.commit(100, 110, 0)
    w.sync()
    records = w.conn.execute("SELECT count(*) FROM records").fetchone()[0]
    w.close()
    assert records > 1
    assert read_all(tmp_path) == [(100, [*map(str, range(3000)), "<end>"])]
