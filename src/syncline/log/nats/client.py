"""A blocking face on nats-py (asyncio) for the log's synchronous callers: one event loop
in a daemon thread per connection; each call runs a coroutine there and waits for it.

Errors from NATS come out as :class:`syncline.core.errors.LogError` with one line that names
the server (credentials removed) and what to check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from syncline.core.errors import LogError, LogUnavailable
from syncline.log.nats import redact

T = TypeVar("T")

# nats-py logs its own recoverable trouble (a pong after a reconnect, a cancelled flush) with
# tracebacks; syncline reports what matters through the errors of its calls (LogUnavailable,
# retried): keep nats-py's log for debugging only
logging.getLogger("nats").setLevel(logging.CRITICAL)

CALL_TIMEOUT = 30.0
"""Seconds any one call may take before it is an error (a stalled cluster)."""


def describe(servers: tuple[str, ...]) -> str:
    return ", ".join(redact(s) for s in servers)


def bucket_name(stream: str) -> str:
    """The KV bucket of a log's positions, shapes and metadata."""
    return f"{stream}-meta"


class Nats:
    """One NATS connection with JetStream, used from any thread of the calling process."""

    def __init__(self, servers: tuple[str, ...], name: str = "syncline") -> None:
        self.servers = servers
        self.where = describe(servers)
        self._loop = asyncio.new_event_loop()
        # what reaches the loop's handler are nats-py's own background tasks (cancelled on a
        # lost connection or at close); our calls' errors come back through their futures
        self._loop.set_exception_handler(_background_error)
        self.denied = ""
        """The last permissions violation the server reported (they come asynchronously; the
        call that caused one then times out)."""
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats-loop", daemon=True)
        self._thread.start()
        self.nc: Client = self.run(self._connect(name), timeout=15.0)
        self.js: JetStreamContext = self.nc.jetstream(timeout=10.0)

    async def _connect(self, name: str) -> Client:
        try:
            nc = await nats.connect(
                list(self.servers),
                name=name,
                connect_timeout=3,
                # the first connection tries each server twice: an unreachable log is a
                # clear error at once; once connected, reconnects never give up
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                error_cb=self._on_error,
                disconnected_cb=_quiet_none,
            )
            nc.options["max_reconnect_attempts"] = -1
            return nc
        except nats.errors.NoServersError as e:
            raise LogUnavailable(f"cannot reach NATS at {self.where}: no server answered ({e})") from None
        except (OSError, TimeoutError, nats.errors.Error) as e:
            raise LogUnavailable(f"cannot connect to NATS at {self.where}: {type(e).__name__}: {e}") from None

    async def _on_error(self, e: Exception) -> None:
        """nats-py's asynchronous errors: remember a permissions violation (the rest, such
        as reconnects, show in the callers' failures)."""
        if "permissions violation" in str(e).lower():
            self.denied = str(e).strip().strip("'")

    def _refused(self) -> LogError | None:
        if not self.denied:
            return None
        return LogError(
            f"NATS at {self.where} refused this user: {self.denied} (the user needs publish and"
            " subscribe permission on $JS.API.>, $KV.<stream>-meta.>, $O.<stream>-compact.>, the"
            " stream's subjects and _INBOX.>)"
        )

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        """Run ``coro`` on the connection's loop and return its result (LogError on NATS
        errors and on timeout)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            refused = self._refused()
            if refused is not None:
                fut.cancel()
                raise refused from None
            if fut.done():  # nats-py's own timeout (a subclass of TimeoutError)
                raise LogUnavailable(f"NATS at {self.where} did not answer in time") from None
            fut.cancel()
            raise LogUnavailable(
                f"NATS at {self.where} did not answer within {timeout:.0f} s (a cluster without a"
                " leader, or a server out of storage: see the server's log)"
            ) from None
        except nats.js.errors.ServiceUnavailableError:
            raise LogUnavailable(
                f"JetStream is not available at {self.where} (the server runs without -js, the"
                " cluster has no leader, or JetStream stopped itself after running out of storage:"
                " see the server's log)"
            ) from None
        except nats.js.errors.APIError as e:
            raise LogError(f"JetStream at {self.where} refused: {e.description or e}") from None
        except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
            raise LogUnavailable(
                f"no JetStream answers at {self.where} (a leader election, or JetStream not enabled)"
            ) from None
        except nats.errors.Error as e:  # connection closed, stale, reconnecting ...
            raise LogUnavailable(f"NATS at {self.where}: {type(e).__name__}: {e}") from None
        except (OSError, asyncio.CancelledError) as e:
            raise LogUnavailable(f"NATS at {self.where}: {type(e).__name__}: {e}") from None

    def kv(self, stream: str, replicas: int = 1, create: bool = False) -> KeyValue:
        """The log's KV bucket (created with ``create``)."""
        name = bucket_name(stream)

        async def go() -> KeyValue:
            try:
                return await self.js.key_value(name)
            except nats.js.errors.BucketNotFoundError:
                if not create:
                    raise LogError(
                        f"no syncline log named {stream!r} on NATS at {self.where} (has `syncline"
                        " run` or `syncline capture` started with this [log] stream?)"
                    ) from None
                return await self.js.create_key_value(bucket=name, history=1, replicas=replicas)

        return self.run(go())

    def close(self) -> None:
        async def go() -> None:
            try:
                await asyncio.wait_for(self.nc.drain(), 3.0)
            except Exception:  # closing: nothing to report
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.nc.close(), 2.0)

        async def cancel_the_rest() -> None:
            # nats-py's background tasks of a connection that could not close cleanly
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        with contextlib.suppress(Exception):  # closing a broken connection
            self.run(go(), timeout=6.0)
        with contextlib.suppress(Exception):
            self.run(cancel_the_rest(), timeout=3.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._loop.close()


def _background_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    logging.getLogger("syncline.nats").debug("nats-py background: %s", context.get("message"))


async def _quiet_none() -> None:
    pass
