"""The pgoutput stream machine on recorded wire messages: plain transactions, streamed ones
in chunks interleaved with them (sub-transaction aborts included), replays, watermark
messages and keepalives."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncline.sources.postgres import machine as m
from syncline.sources.postgres.pgoutput import (
    PG_EPOCH_OFFSET_US,
    ProtocolError,
    RelationMessage,
    encode_begin,
    encode_commit,
    encode_insert,
    encode_relation,
)

T0 = 1_700_000_000_000_000


def w(payload: bytes) -> bytes:
    return b"w" + struct.pack("!QQq", 0, 0, 0) + payload


def streamed(payload: bytes, xid: int) -> bytes:
    return payload[:1] + struct.pack("!I", xid) + payload[1:]


def stream_start(xid: int) -> bytes:
    return b"S" + struct.pack("!IB", xid, 1)


def stream_commit(xid: int, lsn: int) -> bytes:
    return b"c" + struct.pack("!IBQQq", xid, 0, lsn, lsn + 8, T0 - PG_EPOCH_OFFSET_US)


def stream_abort(xid: int, subxid: int) -> bytes:
    return b"A" + struct.pack("!II", xid, subxid)


def message(content: bytes) -> bytes:
    return (
        b"M"
        + bytes([0])
        + struct.pack("!Q", 1)
        + b"syncline.watermark\0"
        + struct.pack("!I", len(content))
        + content
    )


def keepalive(end: int, reply: bool) -> bytes:
    return b"k" + struct.pack("!QqB", end, 0, int(reply))


REL = encode_relation(RelationMessage(16384, "public", "t", "d", [(1, "id", 23, -1)]))


def test_a_plain_transaction_and_a_replay() -> None:
    sm = m.StreamMachine(lambda: 100)
    evs = [
        sm.feed(w(encode_begin(200, T0, 7))),
        sm.feed(w(REL)),
        sm.feed(w(encode_insert(16384, ("1",)))),
        sm.feed(w(encode_commit(200, 208, T0))),
        sm.feed(w(encode_begin(90, T0, 8))),
        sm.feed(w(encode_insert(16384, ("2",)))),
        sm.feed(w(encode_commit(90, 98, T0))),
    ]
    assert evs == [
        m.Begin(7, 200, T0, False),
        m.RelationSeen(REL, None, False),
        m.Change(encode_insert(16384, ("1",)), 7, False),
        m.Commit(7, 200, 208, T0, False),
        m.Begin(8, 90, T0, True),
        m.Change(encode_insert(16384, ("2",)), 8, True),
        m.Commit(8, 90, 98, T0, True),
    ]
    assert sm.idle


def test_messages_between_transactions_only_and_keepalives() -> None:
    sm = m.StreamMachine(lambda: 0)
    assert sm.feed(w(message(b"low:abc"))) == m.Message(message(b"low:abc"))
    sm.feed(w(encode_begin(10, T0, 1)))
    assert not sm.idle
    assert sm.feed(w(message(b"inside"))) is None  # a transactional message: not ours
    sm.feed(w(encode_commit(10, 18, T0)))
    assert sm.feed(keepalive(500, True)) == m.Keepalive(500, True)
    assert sm.feed(w(b"Y" + struct.pack("!I", 1) + b"public\0mood\0")) is None


def test_bad_input_is_a_protocol_error() -> None:
    sm = m.StreamMachine(lambda: 0)
    with pytest.raises(ProtocolError):
        sm.feed(b"x123")
    with pytest.raises(ProtocolError):
        sm.feed(w(encode_insert(16384, ("1",))))  # a change outside a transaction


@dataclass
class Plain:
    xid: int
    rows: int


@dataclass
class Streamed:
    xid: int
    chunks: list[list[tuple[int, int]]]  # per chunk: (subxid offset, rows)
    commit: bool


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[object], int]:
    units: list[object] = []
    xid = 1000
    for _ in range(draw(st.integers(0, 8))):
        xid += 10
        if draw(st.booleans()):
            units.append(Plain(xid, draw(st.integers(0, 3))))
        else:
            chunks = draw(
                st.lists(
                    st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3)), max_size=3),
                    min_size=1,
                    max_size=3,
                )
            )
            units.append(Streamed(xid, chunks, draw(st.booleans())))
    return units, draw(st.integers(0, 3))


@settings(max_examples=200, deadline=None)
@given(workloads())
def test_any_interleaving_gives_each_transaction_whole_and_in_order(case: tuple[list[object], int]) -> None:
    """Streamed chunks of every streamed transaction are sent first (interleaved with the
    plain transactions after them), then the transactions end in commit order; those
    committed at or before the log's newest commit are replays."""
    units, replayed = case
    wire: list[bytes] = []
    expect: list[m.Event] = []
    lsn = 1000
    commits: list[int] = []
    # chunks first (they precede their commit), each between two plain transactions' ends
    for u in units:
        if isinstance(u, Streamed):
            for chunk in u.chunks:
                wire.append(w(stream_start(u.xid)))
                for sub, rows in chunk:
                    for i in range(rows):
                        plain = encode_insert(16384, (str(i),))
                        wire.append(w(streamed(plain, u.xid + sub)))
                        expect.append(m.StreamedChange(plain, u.xid, u.xid + sub))
                wire.append(w(b"E"))
    for _ in units:
        lsn += 100
        commits.append(lsn)
    last = commits[replayed - 1] if 0 < replayed <= len(commits) else 0
    for u, at in zip(units, commits, strict=True):
        replay = at <= last
        if isinstance(u, Plain):
            wire.append(w(encode_begin(at, T0, u.xid)))
            expect.append(m.Begin(u.xid, at, T0, replay))
            for i in range(u.rows):
                wire.append(w(encode_insert(16384, (str(i),))))
                expect.append(m.Change(encode_insert(16384, (str(i),)), u.xid, replay))
            wire.append(w(encode_commit(at, at + 8, T0)))
            expect.append(m.Commit(u.xid, at, at + 8, T0, replay))
        elif u.commit:
            wire.append(w(stream_commit(u.xid, at)))
            expect.append(m.StreamCommitted(u.xid, at, at + 8, T0, replay))
        else:
            wire.append(w(stream_abort(u.xid, u.xid)))
            expect.append(m.StreamAborted(u.xid, u.xid))
    sm = m.StreamMachine(lambda: last)
    got = [ev for ev in (sm.feed(x) for x in wire) if ev is not None]
    assert got == expect
    assert sm.idle
