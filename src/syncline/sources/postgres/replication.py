"""The walsender connection: replication commands and the COPY BOTH stream.

psycopg 3 has no high-level replication API; its libpq binding (``psycopg.pq``) is enough:
commands through ``exec_``, then ``get_copy_data`` / ``put_copy_data`` for the stream.
The framing (XLogData ``w``, keepalive ``k``, standby status ``r``) follows the
"Streaming Replication Protocol" chapter of the PostgreSQL docs.
"""

from __future__ import annotations

import select
import struct
import time
from dataclasses import dataclass

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from syncline.core.errors import SourceError, SourceUnreachable, TransientSourceError
from syncline.sources.postgres.lsn import format_lsn, parse_lsn
from syncline.sources.postgres.pgoutput import PG_EPOCH_OFFSET_US

_XLOG = struct.Struct("!QQq")
_STATUS = struct.Struct("!cQQQqB")

SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres "
    "-c extra_float_digits=1 -c bytea_output=hex -c client_encoding=UTF8"
)
"""Settings that make the text output of values canonical (see the interface contract)."""


def session_conninfo(dsn: str, **extra: str) -> str:
    params = conninfo_to_dict(dsn)
    opts = str(params.get("options") or "")
    params["options"] = (opts + " " + SESSION_OPTIONS).strip()
    params.setdefault("application_name", "syncline")
    params.setdefault("connect_timeout", "10")
    params.update(extra)
    return make_conninfo("", **params)


def now_pg_us() -> int:
    return int(time.time() * 1_000_000) - PG_EPOCH_OFFSET_US


@dataclass(frozen=True, slots=True)
class SlotCreated:
    name: str
    consistent_point: int
    snapshot_name: str


class ReplicationConnection:
    def __init__(self, dsn: str) -> None:
        info = session_conninfo(dsn, replication="database")
        self.conn = pq.PGconn.connect(info.encode())
        if self.conn.status != pq.ConnStatus.OK:
            msg = self.conn.get_error_message()
            self.conn.finish()
            raise SourceUnreachable(f"cannot open a replication connection: {msg.strip()}")
        self._copying = False

    def _exec(self, command: str) -> pq.abc.PGresult:
        res = self.conn.exec_(command.encode())
        if res.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            msg = res.get_error_message().strip()
            state = res.error_field(pq.DiagnosticField.SQLSTATE)
            raise SourceError(
                f"{command.split()[0]} failed: {msg}" + (f" (SQLSTATE {state.decode()})" if state else "")
            )
        return res

    def identify_system(self) -> tuple[str, int, int, str]:
        res = self._exec("IDENTIFY_SYSTEM")

        def v(col: int) -> str:
            val = res.get_value(0, col)
            return val.decode() if val is not None else ""

        return v(0), int(v(1)), parse_lsn(v(2)), v(3)

    def create_slot(self, name: str, failover: bool = False) -> SlotCreated:
        """A logical pgoutput slot with an exported snapshot (``failover``: PostgreSQL 17+)."""
        options = "(SNAPSHOT 'export', FAILOVER true)" if failover else "EXPORT_SNAPSHOT"
        res = self._exec(f'CREATE_REPLICATION_SLOT "{name}" LOGICAL pgoutput {options}')
        cp = res.get_value(0, 1)
        snap = res.get_value(0, 2)
        assert cp is not None and snap is not None
        return SlotCreated(name, parse_lsn(cp.decode()), snap.decode())

    def set_failover(self, name: str) -> None:
        """Make an existing slot a failover slot (PostgreSQL 17+)."""
        self._exec(f'ALTER_REPLICATION_SLOT "{name}" (FAILOVER true)')

    def drop_slot(self, name: str) -> None:
        self._exec(f'DROP_REPLICATION_SLOT "{name}" WAIT')

    def start(self, slot: str, lsn: int, options: dict[str, str]) -> None:
        opts = ", ".join(f"\"{k}\" '{v}'" for k, v in options.items())
        cmd = f'START_REPLICATION SLOT "{slot}" LOGICAL {format_lsn(lsn)} ({opts})'
        res = self.conn.exec_(cmd.encode())
        if res.status != pq.ExecStatus.COPY_BOTH:
            msg = res.get_error_message().strip()
            state = res.error_field(pq.DiagnosticField.SQLSTATE)
            code = state.decode() if state else ""
            raise SourceError(f"START_REPLICATION failed: {msg}" + (f" (SQLSTATE {code})" if code else ""))
        self._copying = True

    def read(self, timeout: float) -> bytes | None:
        """One CopyData message, or None when nothing arrived within ``timeout``."""
        conn = self.conn
        n, data = conn.get_copy_data(1)
        if n > 0:
            return bytes(data)
        if n == 0:
            r, _, _ = select.select([conn.socket], [], [], timeout)
            if r:
                conn.consume_input()
                n, data = conn.get_copy_data(1)
                if n > 0:
                    return bytes(data)
            if n == 0:
                return None
        # -1: copy done; -2: error
        self._copying = False
        res = conn.get_result()
        msg = ""
        if res is not None:
            msg = res.get_error_message().strip()
        msg = msg or conn.get_error_message().strip() or "stream ended"
        raise TransientSourceError(f"replication stream ended: {msg}")

    def send_status(self, write: int, flush: int, apply: int, reply: bool = False) -> None:
        self.conn.put_copy_data(_STATUS.pack(b"r", write, flush, apply, now_pg_us(), int(reply)))
        self.conn.flush()

    def close(self) -> None:
        try:
            if self._copying:
                self.conn.put_copy_end()
                self.conn.flush()
        except Exception:
            pass
        self.conn.finish()


def parse_xlogdata(msg: bytes) -> tuple[int, int, bytes]:
    start, wal_end, _clock = _XLOG.unpack_from(msg, 1)
    return start, wal_end, msg[25:]
