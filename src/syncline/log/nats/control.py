"""The NATS log's control plane (:class:`syncline.log.base.LogControl`) in its KV bucket, so
that ``status``, ``wait``, retention and the supervisors of ``capture`` and ``apply`` agree
from any host. Keys (one writer each, so plain puts suffice):

- ``c.NAME``: what view ``NAME`` (or ``_compactor``) last reported (position, state, error,
  events applied);
- ``f.NAME``: why a failed view failed, whether a retry is asked for or scheduled;
- ``e.COMPONENT.NAME``: error counts by class (``capture`` or ``view``);
- ``d.KEY``: small documents for the console (``d.stats.VIEW``, ``d.verify.VIEW``);
- ``copy.ID``: ``syncline snapshot`` requests the capture has not taken yet;
- ``rebuild.VIEW``: a ``syncline rebuild`` under way (host, pid, pause asked).

Advisory, as on the embedded log: a view's authoritative position is stored with its data.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from syncline.core.config_models import LogConfig
from syncline.core.errors import LogError
from syncline.core.position import Position
from syncline.core.procs import holder_alive
from syncline.log.base import ConsumerRow, ErrorRow, FailureRow
from syncline.log.nats.client import Nats


async def entries(kv: KeyValue, prefix: str) -> dict[str, Any]:
    """The current value of every key under ``prefix.`` (deleted keys left out).

    The keys are listed by the server (the subjects of the bucket's stream), not by a KV
    watcher: nats-py's watcher can report "no more keys" before the first one arrives."""
    bucket = kv._name
    head = f"$KV.{bucket}."
    info = await kv._js.stream_info(f"KV_{bucket}", subjects_filter=f"{head}{prefix}.>")
    out: dict[str, Any] = {}
    for subj in sorted(info.state.subjects or {}):
        key = subj[len(head) :]
        try:
            e = await kv.get(key)
        except nats.js.errors.NotFoundError:  # deleted or purged
            continue
        if e.value:
            out[key[len(prefix) + 1 :]] = json.loads(e.value)
    return out


async def get_doc(kv: KeyValue, key: str) -> dict[str, Any]:
    try:
        e = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return {}
    return json.loads(e.value) if e.value else {}


async def put_doc(kv: KeyValue, key: str, doc: dict[str, Any]) -> None:
    await kv.put(key, json.dumps(doc, separators=(",", ":")).encode())


async def delete_key(kv: KeyValue, key: str) -> None:
    with contextlib.suppress(nats.js.errors.KeyNotFoundError):
        await kv.purge(key)


VIEW_LEASE = 15.0
"""Seconds a view's applier lease lasts without a refresh (refreshed every few seconds)."""


def consumer_rows(docs: dict[str, dict[str, Any]]) -> dict[str, ConsumerRow]:
    return {
        name: ConsumerRow(
            name,
            str(d.get("kind", "")),
            int(d.get("seq", 0)),
            Position(int(d.get("commit_lsn", 0))),
            str(d.get("state", "new")),
            str(d.get("error", "")),
            int(d.get("applied_events", 0)),
            float(d.get("updated_at", 0.0)),
        )
        for name, d in docs.items()
    }


def failure_rows(docs: dict[str, dict[str, Any]]) -> dict[str, FailureRow]:
    return {
        name: FailureRow(bool(d.get("fixable")), str(d.get("action", "")), float(d.get("next_retry", 0.0)))
        for name, d in docs.items()
        if "action" in d
    }


def error_rows(docs: dict[str, dict[str, Any]]) -> list[ErrorRow]:
    out = []
    for key, counts in docs.items():
        component, _, name = key.partition(".")
        for cls_transient, n in counts.items():
            cls, _, transient = cls_transient.rpartition(":")
            out.append(ErrorRow(component, name, cls, transient == "1", int(n)))
    return out


def live_rebuilds(docs: dict[str, dict[str, Any]]) -> dict[str, tuple[int, bool]]:
    return {
        v: (int(d.get("pid", 0)), bool(d.get("pause")))
        for v, d in docs.items()
        if holder_alive(str(d.get("host", "")), int(d.get("pid", 0)))
    }


class NatsControl:
    """:class:`syncline.log.base.LogControl` in the NATS log's KV bucket."""

    def __init__(self, cfg: LogConfig) -> None:
        self.cfg = cfg
        self.nats = Nats(cfg.servers, name="syncline-control")
        try:
            self.kv = self.nats.kv(cfg.stream, cfg.replicas, create=True)
        except BaseException:
            self.nats.close()
            raise
        self._consumers: dict[str, dict[str, Any]] = {}
        self._unreported = 0

    def _consumer(self, name: str) -> dict[str, Any]:
        doc = self._consumers.get(name)
        if doc is None:
            doc = self.nats.run(get_doc(self.kv, f"c.{name}"))
            self._consumers[name] = doc
        return doc

    def update(self, name: str, kind: str, **fields: object) -> None:
        doc = dict(self._consumer(name))
        doc.update(fields, kind=kind, updated_at=time.time())
        self.nats.run(put_doc(self.kv, f"c.{name}", doc))
        self._consumers[name] = doc

    def add_applied(self, name: str, kind: str, events: int, seq: int, commit_lsn: Position) -> bool:
        self._unreported += events
        doc = dict(self._consumer(name))
        doc.update(
            kind=kind,
            seq=seq,
            commit_lsn=commit_lsn,
            state="running",
            error="",
            applied_events=int(doc.get("applied_events", 0)) + self._unreported,
            updated_at=time.time(),
        )
        try:
            self.nats.run(put_doc(self.kv, f"c.{name}", doc), timeout=5.0)
        except LogError:
            return False
        self._consumers[name] = doc
        self._unreported = 0
        return True

    def _count(self, component: str, name: str, error: BaseException, transient: bool) -> None:
        key = f"e.{component}.{name or '-'}"
        try:
            doc = self.nats.run(get_doc(self.kv, key), timeout=5.0)
            k = f"{type(error).__name__}:{int(transient)}"
            doc[k] = int(doc.get(k, 0)) + 1
            self.nats.run(put_doc(self.kv, key, doc), timeout=5.0)
        except LogError:  # best effort: a count is never worth a failure
            pass

    def count_error(self, name: str, error: BaseException, transient: bool) -> None:
        self._count("view", name, error, transient)

    def count_capture_error(self, error: BaseException, transient: bool) -> None:
        self._count("capture", "", error, transient)

    def _failure_doc(self, name: str) -> dict[str, Any]:
        return self.nats.run(get_doc(self.kv, f"f.{name}"))

    def set_failure(self, name: str, fixable: bool, action: str) -> None:
        doc = self._failure_doc(name)
        doc.update(fixable=fixable, action=action, next_retry=0.0)
        self.nats.run(put_doc(self.kv, f"f.{name}", doc))

    def set_next_retry(self, name: str, at: float) -> None:
        doc = self._failure_doc(name)
        if doc:
            doc["next_retry"] = at
            self.nats.run(put_doc(self.kv, f"f.{name}", doc))

    def failure(self, name: str) -> tuple[bool, str, bool]:
        doc = self._failure_doc(name)
        return bool(doc.get("fixable")), str(doc.get("action", "")), bool(doc.get("retry_requested"))

    def request_retry(self, name: str) -> None:
        doc = self._failure_doc(name)
        doc["retry_requested"] = True
        self.nats.run(put_doc(self.kv, f"f.{name}", doc))

    def clear_retry_request(self, name: str) -> None:
        doc = self._failure_doc(name)
        if doc:
            doc.update(retry_requested=False, next_retry=0.0)
            self.nats.run(put_doc(self.kv, f"f.{name}", doc))

    def put_doc(self, key: str, doc: dict[str, Any]) -> None:
        with contextlib.suppress(LogError):
            self.nats.run(put_doc(self.kv, f"d.{key}", doc), timeout=5.0)

    def get_doc(self, key: str) -> dict[str, Any]:
        try:
            return self.nats.run(get_doc(self.kv, f"d.{key}"), timeout=5.0)
        except (LogError, ValueError):
            return {}

    def clear_failure(self, name: str) -> None:
        self.nats.run(delete_key(self.kv, f"f.{name}"))

    def remove_others(self, keep: set[str]) -> list[str]:
        docs = self.nats.run(entries(self.kv, "c"))
        gone = [n for n in docs if n not in keep and not n.startswith("_")]
        for n in gone:
            self.nats.run(delete_key(self.kv, f"c.{n}"))
            self._consumers.pop(n, None)
        return gone

    def lease_view(self, name: str) -> str | None:
        key = f"lock.{name}"
        me = {"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}

        async def go() -> str | None:
            try:
                e = await self.kv.get(key)
                doc, rev = (json.loads(e.value) if e.value else {}), int(e.revision or 0)
            except nats.js.errors.KeyNotFoundError:
                doc, rev = {}, 0
            host, pid, at = str(doc.get("host", "")), int(doc.get("pid", 0)), float(doc.get("at", 0))
            mine = (host, pid) == (me["host"], me["pid"])
            if doc and not mine and time.time() - at < VIEW_LEASE and holder_alive(host, pid):
                return f"process {pid} on {host}"
            data = json.dumps(me).encode()
            try:
                if rev == 0:
                    await self.kv.create(key, data)
                else:
                    await self.kv.update(key, data, last=rev)
            except nats.js.errors.KeyWrongLastSequenceError:
                return "another process (it took the lease just now)"
            # any other refusal (a full store, no permission) is an error, not a holder
            return None

        return self.nats.run(go())

    def release_view(self, name: str) -> None:
        """Let go of the lease (a clean stop: another applier may take over at once)."""
        doc = self.nats.run(get_doc(self.kv, f"lock.{name}"))
        if doc.get("pid") == os.getpid() and doc.get("host") == socket.gethostname():
            self.nats.run(delete_key(self.kv, f"lock.{name}"))

    def request_copy(self, tables: list[str]) -> None:
        rid = time.time_ns()
        self.nats.run(put_doc(self.kv, f"copy.{rid}", {"tables": tables, "requested_at": time.time()}))

    def rebuilds(self) -> dict[str, bool]:
        docs = self.nats.run(entries(self.kv, "rebuild"))
        return {v: pause for v, (_pid, pause) in live_rebuilds(docs).items()}

    def start_rebuild(self, view: str) -> None:
        docs = self.nats.run(entries(self.kv, "rebuild"))
        held = live_rebuilds(docs).get(view)
        mine = docs.get(view, {}).get("host") == socket.gethostname() and held and held[0] == os.getpid()
        if held is not None and not mine:
            host = docs[view].get("host", "?")
            raise LogError(f"view {view} is being rebuilt by process {held[0]} on {host}")
        doc = {"host": socket.gethostname(), "pid": os.getpid(), "pause": False, "started": time.time()}
        self.nats.run(put_doc(self.kv, f"rebuild.{view}", doc))

    def pause_for_rebuild(self, view: str) -> None:
        doc = self.nats.run(get_doc(self.kv, f"rebuild.{view}"))
        if doc:
            doc["pause"] = True
            self.nats.run(put_doc(self.kv, f"rebuild.{view}", doc))

    def end_rebuild(self, view: str) -> None:
        doc = self.nats.run(get_doc(self.kv, f"rebuild.{view}"))
        if doc.get("pid") == os.getpid() and doc.get("host") == socket.gethostname():
            self.nats.run(delete_key(self.kv, f"rebuild.{view}"))

    def close(self) -> None:
        self.nats.close()
