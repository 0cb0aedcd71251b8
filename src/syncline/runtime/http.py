"""The HTTP API of ``syncline run``: a small stdlib server in a thread of the supervisor.

``GET /status``   the JSON of ``syncline status --json``
``GET /wait``     ``?lsn=X/Y&view=NAME&timeout=SECONDS``: 200 once every named view (``view``
                  repeatable or comma-separated; default all) has applied every transaction
                  that committed at or before ``lsn`` (default: the source's current WAL
                  insert position), 408 when ``timeout`` (default 30, at most 300) passes first
``GET /healthz``  200 when the capture and every view run (or retry), 503 when one failed
``GET /metrics``  Prometheus text format (:mod:`syncline.runtime.metrics`)
``GET /``         the console (:mod:`syncline.runtime.console`); ``/console/series`` its charts'
                  data; ``/console/view/NAME`` a view's page, ``/console/view/NAME.json`` its data

With ``[http] token`` set, every endpoint but ``/healthz`` requires
``Authorization: Bearer TOKEN`` (401 otherwise); ``/healthz`` tells only states, for probes.
A browser opens ``/?token=TOKEN`` once: the answer sets the token as an HttpOnly,
SameSite=Strict cookie (``syncline_token``), which every endpoint accepts as well.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import math
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from syncline.core.config_models import Config
from syncline.core.errors import (
    CatalogueNotSeen,
    LogError,
    SynclineError,
    TablesNotFollowed,
    ViewFailed,
    redact,
)
from syncline.log import log_ready, open_observer
from syncline.log.base import LogBusy, by_view
from syncline.runtime import console
from syncline.runtime.metrics import CONTENT_TYPE, Metrics
from syncline.runtime.status import (
    applied_positions,
    capture_state,
    status,
    view_detail,
    views_behind,
    wait_caught_up,
)
from syncline.sources.registry import format_position, open_admin, parse_position

log = logging.getLogger("syncline.http")

DEFAULT_WAIT = 30.0
MAX_WAIT = 300.0
COOKIE = "syncline_token"
"""The cookie a browser keeps the token in (set by ``/?token=TOKEN``)."""
MAX_WAITERS = 64
"""Concurrent ``/wait`` requests; more get 503 (each holds a thread and polls the log)."""
WAIT_CONNECTIONS = 4
"""Source connections the server keeps for waits' checks (a pool: waits share them)."""


@dataclass(frozen=True)
class Processes:
    """What the supervisor knows of its processes (for ``/healthz``)."""

    capture_alive: bool = True
    failed_views: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Response:
    code: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _json(code: int, doc: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(code, (json.dumps(doc, default=str) + "\n").encode(), headers=headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: ApiServer, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family
        self.api = api
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also looks the host name up (getfqdn): slow without DNS
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 60  # seconds a client may take to send its request
    # a request line that cannot be read is answered with a status line and headers too
    # (http.server's default, HTTP/0.9, sends the body alone)
    default_request_version = "HTTP/1.0"

    def do_GET(self) -> None:
        try:
            h = self.headers
            r = self.server.api.get(self.path, h.get("Authorization"), h.get("Cookie"), h.get("Accept"))
        except Exception as e:  # one bad request must not kill the server
            log.exception("HTTP %s failed", redact(self.path, self.server.api.cfg.secrets()))
            msg = redact(f"{type(e).__name__}: {e}", self.server.api.cfg.secrets())
            r = _json(500, {"error": msg})
        self.send_response(r.code)
        self.send_header("Content-Type", r.content_type)
        self.send_header("Content-Length", str(len(r.body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in r.headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(r.body)

    def __getattr__(self, name: str) -> Any:
        # every method but GET (HEAD, POST, ...): 405 with a JSON error, never HTML
        if name.startswith("do_"):
            return self._refuse_method
        raise AttributeError(name)

    def _refuse_method(self) -> None:
        body = json.dumps({"error": f"method {self.command} not allowed: the API answers GET only"}).encode()
        self.send_response(405)
        self.send_header("Allow", "GET")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors of the HTTP layer itself (a malformed request, headers too large) as JSON."""
        body = json.dumps({"error": message or HTTPStatus(code).phrase}).encode()
        self.send_response(code, message)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # a request line may hold the token (``/?token=``): never in the log
        log.debug("%s %s", self.address_string(), redact(format % args, self.server.api.cfg.secrets()))


class ApiServer:
    """Bound at construction (a port in use is one clear error before anything starts);
    serves from :meth:`start` until :meth:`stop`."""

    def __init__(self, cfg: Config, processes: Callable[[], Processes] | None = None) -> None:
        self.cfg = cfg
        self.processes = processes or Processes
        self.metrics = Metrics(cfg, lambda: self.processes().capture_alive)
        self.stopping = threading.Event()
        self.waiters = threading.BoundedSemaphore(MAX_WAITERS)
        self.admin = open_admin(cfg, pool_size=WAIT_CONNECTIONS)
        self.thread: threading.Thread | None = None
        self.history = console.History(path=Path(cfg.log.path) / "console-series.json")
        self.sampler = console.Sampler(self.history, lambda: status(cfg, with_source=False).get("views", {}))
        host, port = cfg.http.address()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.httpd = _Server(self, (host, port), family)
        except OSError as e:
            why = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise SynclineError(
                f"http.listen {cfg.http.listen}: cannot listen: {why} (is another syncline run "
                'serving there? set [http] listen to a free port, or to "off")'
            ) from None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self.thread.start()
        self.sampler.start()
        log.info(
            "HTTP API on %s (status, wait, healthz, metrics); console at http://%s/",
            self.cfg.http.listen,
            self.cfg.http.listen,
        )

    def stop(self) -> None:
        self.stopping.set()  # waits in progress answer 503
        if self.sampler.thread.is_alive():
            self.sampler.stop()
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join(5)
        self.httpd.server_close()
        self.admin.close()

    # ------------------------------------------------------------------ routing

    def get(
        self, target: str, authorization: str | None, cookie: str | None = None, accept: str | None = None
    ) -> Response:
        url = urlsplit(target)
        route = url.path.rstrip("/") or "/"
        if route == "/healthz":
            return self._healthz()
        query = parse_qs(url.query, keep_blank_values=True)
        browser = "text/html" in (accept or "")  # API clients get JSON errors, browsers a page
        if route == "/" and "token" in query:
            return self._token_login(query["token"][-1], browser)
        if not self._authorized(authorization) and not self._cookie_authorized(cookie):
            if route == "/" and browser:
                return Response(401, console.token_page(), "text/html; charset=utf-8")
            return _json(
                401,
                {"error": "missing or wrong bearer token (Authorization: Bearer TOKEN)"},
                (("WWW-Authenticate", 'Bearer realm="syncline"'),),
            )
        if route == "/":
            return Response(200, console.page("syncline console"), "text/html; charset=utf-8")
        if route == "/console/series":
            return Response(200, console.series_json(self.history))
        if route.startswith("/console/view/"):
            return self._view_page(unquote(route[len("/console/view/") :]))
        if route == "/status":
            return _json(200, status(self.cfg))
        if route == "/wait":
            return self._wait(query)
        if route == "/metrics":
            return Response(200, self.metrics.render(), CONTENT_TYPE)
        return _json(404, {"error": f"no such endpoint {url.path!r} (/, status, wait, healthz, metrics)"})

    def _view_page(self, name: str) -> Response:
        """``/console/view/NAME``: the page of one view; ``NAME.json``: its data."""
        data = name.endswith(".json")
        name = name[: -len(".json")] if data else name
        if name not in {v.name for v in self.cfg.views}:
            return _json(404, {"error": f"no view named {name!r}"})
        if data:
            return _json(200, view_detail(self.cfg, name))
        return Response(200, console.view_page(name), "text/html; charset=utf-8")

    def _token_login(self, given: str, browser: bool) -> Response:
        """``/?token=TOKEN``: the token as a cookie, then the console without it in the URL."""
        token = self.cfg.http.token
        if token is None:
            return Response(303, b"", "text/plain", (("Location", "/"),))
        if not hmac.compare_digest(given.encode(), token.value.encode()):
            if browser:
                return Response(401, console.token_page(), "text/html; charset=utf-8")
            return _json(401, {"error": "wrong token"})
        cookie = f"{COOKIE}={token.value}; HttpOnly; SameSite=Strict; Path=/"
        return Response(303, b"", "text/plain", (("Location", "/"), ("Set-Cookie", cookie)))

    def _cookie_authorized(self, header: str | None) -> bool:
        token = self.cfg.http.token
        if token is None or not header:
            return False
        from http.cookies import CookieError, SimpleCookie

        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            return False
        got = jar.get(COOKIE)
        return got is not None and hmac.compare_digest(got.value.encode(), token.value.encode())

    def _authorized(self, header: str | None) -> bool:
        token = self.cfg.http.token
        if token is None:
            return True
        scheme, _, value = (header or "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.value.encode()
        )

    def _wait(self, query: dict[str, list[str]]) -> Response:
        configured = [v.name for v in self.cfg.views]
        names = [n.strip() for v in query.get("view", []) for n in v.split(",") if n.strip()]
        names = names or configured
        unknown = [n for n in names if n not in configured]
        if unknown:
            return _json(400, {"error": f"no view named {', '.join(unknown)}"})
        try:
            timeout = float(query.get("timeout", [str(DEFAULT_WAIT)])[-1])
        except ValueError:
            timeout = math.nan
        if not 0 <= timeout <= MAX_WAIT:
            return _json(400, {"error": f"timeout: expected seconds from 0 to {MAX_WAIT:g}"})
        text = query.get("lsn", [""])[-1].strip()
        deadline = time.monotonic() + timeout
        try:
            given = parse_position(text) if text else None
        except ValueError as e:
            return _json(400, {"error": f"lsn: {e}"})
        if not self.waiters.acquire(blocking=False):
            return _json(503, {"error": f"more than {MAX_WAITERS} waits in progress"})
        try:
            try:
                # tables not followed yet (a new table is added and copied within seconds)
                # and DDL the capture has not acted on yet are waited for, within the
                # timeout; asked afresh each time: a write a moment ago may have created the
                # table. The source connections come from the server's small pool.
                lsn = self.admin.followed_position(deadline, given, self.stopping)
            except TablesNotFollowed as e:
                unfollowed = {"applied": False, "lsn": text or None, "unfollowed": e.tables, "error": str(e)}
                return _json(503, unfollowed)
            except CatalogueNotSeen as e:  # a timeout: the client may ask again
                return _json(408, {"applied": False, "lsn": text or None, "behind": names, "error": str(e)})
            except SynclineError as e:
                return _json(503, {"error": redact(str(e), self.cfg.secrets())})
            left = max(0.0, deadline - time.monotonic())
            done = wait_caught_up(self.cfg, lsn, names, left, stop=self.stopping)
        except ViewFailed as e:
            return _json(
                503,
                {
                    "applied": False,
                    "lsn": format_position(lsn),
                    "view": e.view,
                    "error": redact(str(e), self.cfg.secrets()),
                    "views": applied_positions(self.cfg, names),
                },
            )
        finally:
            self.waiters.release()
        doc: dict[str, Any] = {
            "applied": done,
            "lsn": format_position(lsn),
            "views": applied_positions(self.cfg, names),
        }
        if done:
            return _json(200, doc)
        if self.stopping.is_set():
            return _json(503, {**doc, "error": "syncline run is stopping"})
        behind = views_behind(self.cfg, lsn, names)
        return _json(
            408,
            {**doc, "behind": behind, "error": f"{', '.join(behind) or 'views'} behind after {timeout:g}s"},
        )

    def _healthz(self) -> Response:
        procs = self.processes()
        capture, views = _states(self.cfg)
        problems = []
        if not procs.capture_alive:
            problems.append("the capture process is not running")
        if capture == "failed":
            problems.append("the capture failed")
        for name in sorted(procs.failed_views | {n for n, s in views.items() if s == "failed"}):
            problems.append(f"view {name} failed")
        doc = {
            "status": "failing" if problems else "ok",
            "capture": capture,
            "views": views,
            "problems": problems,
        }
        return _json(503 if problems else 200, doc)


def _states(cfg: Config) -> tuple[str, dict[str, str]]:
    """The capture's state and each configured view's, as recorded in the log."""
    views = {v.name: "new" for v in cfg.views}
    if not log_ready(cfg.log):
        return "starting", views
    try:
        obs = open_observer(cfg.log)
    except LogError:
        return "starting", views
    try:
        capture = capture_state(obs)
        for name, r in by_view(obs.consumers()).items():
            if name in views:
                views[name] = r.state
    except LogBusy:  # the log is being created
        capture = "starting"
    finally:
        obs.close()
    return capture, views
