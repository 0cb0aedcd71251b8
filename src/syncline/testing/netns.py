"""Separate "hosts" for tests, made with Linux network namespaces (needs root and iproute2).

A :class:`Network` is a bridge in the root namespace with the first address of a private
``/24`` (``10.77.N.1``), and one namespace per host, each joined to the bridge by a veth pair
(``10.77.N.2``, ``.3``...; loopback up; default route via the bridge). The root namespace
reaches every host at its address and every host reaches the root namespace at
:attr:`Network.gateway`, so servers in the root namespace bound to it serve every host.

Every name starts with ``sl<pid in hex>_<counter>``: parallel runs cannot clash, and a run
removes what a dead run left behind (the pid in the name is no longer alive) before it
creates anything. ``with Network() as net:`` removes every namespace, veth and bridge it
created, and kills what still runs in its namespaces, even after a failure::

    with Network() as net:
        cap = net.add_host("cap")
        proc = net.popen("cap", ["nats-server", "-a", cap.ip])
        net.cut("cap")      # its cable pulled: packets dropped both ways
        net.restore("cap")
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from syncline.core.procs import pid_alive

PREFIX = "sl"
SUPERNET = "10.77"
# sl<pid>_<counter> then "b" (the bridge), "v<index>" (a veth's root side) or "-<host>" (a namespace)
_OURS = re.compile(rf"^{PREFIX}([0-9a-f]{{1,7}})_([0-9a-f]{{1,2}})(b|v[0-9a-f]+|-.+)$")
_counter = itertools.count()

_Out = int | IO[Any] | None


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no ``ip``, no permission)."""


@dataclass(frozen=True)
class Host:
    name: str  # the test's name for it, e.g. "cap"
    netns: str  # the namespace's name
    ip: str  # its address on the bridge
    veth: str  # the root namespace's end of its veth pair


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def _netns_names() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _link_names() -> list[str]:
    out = _ip("-o", "link", "show", check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def _kill_netns_pids(netns: str) -> list[int]:
    """SIGKILL every process in ``netns`` (started there by a test); returns their pids."""
    out = _ip("netns", "pids", netns, check=False).stdout
    pids = [int(p) for p in out.split() if p.isdigit()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _wait_gone(pids: Sequence[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.02)


def cleanup_leftovers() -> list[str]:
    """Remove namespaces, veths and bridges named by a run whose process is gone (killed
    before its cleanup ran); returns their names."""
    removed = []
    for ns in _netns_names():
        m = _OURS.match(ns)
        if m and not pid_alive(int(m.group(1), 16)):
            _wait_gone(_kill_netns_pids(ns))
            _ip("netns", "del", ns, check=False)
            removed.append(ns)
    for link in _link_names():
        m = _OURS.match(link)
        if m and not pid_alive(int(m.group(1), 16)):
            _ip("link", "del", link, check=False)
            removed.append(link)
    return removed


def _subnets_in_use() -> list[ipaddress.IPv4Network]:
    used = []
    for line in _ip("-4", "-o", "addr", "show", check=False).stdout.splitlines():
        m = re.search(r"\binet (\S+)", line)
        if m:
            used.append(ipaddress.IPv4Interface(m.group(1)).network)
    for line in _ip("-4", "route", "show", "table", "all", check=False).stdout.splitlines():
        dest = line.split()[0] if line.split() else ""
        if dest in ("default", "broadcast", "local", "unreachable", "blackhole", "prohibit"):
            dest = line.split()[1] if len(line.split()) > 1 else ""
        with contextlib.suppress(ValueError):
            used.append(ipaddress.IPv4Network(dest, strict=False))
    return used


class Network:
    """A bridge and namespaced hosts on it; a context manager that always cleans up."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid():x}_{next(_counter) % 256:x}"
        self.bridge = f"{self.tag}b"
        self.third = 0  # N of 10.77.N.0/24, chosen by open()
        self.hosts: dict[str, Host] = {}
        self._netns: list[str] = []
        self._links: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._opened = False

    @property
    def gateway(self) -> str:
        """The bridge's address: the root namespace as the hosts reach it."""
        return f"{SUPERNET}.{self.third}.1"

    @property
    def cidr(self) -> str:
        return f"{SUPERNET}.{self.third}.0/24"

    def open(self) -> Network:
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root (ip netns add)")
        if shutil.which("ip") is None:
            raise NetnsUnavailable("the ip command (iproute2) is not installed")
        cleanup_leftovers()
        self._opened = True
        self.third = self._free_subnet()
        r = _ip("link", "add", self.bridge, "type", "bridge", check=False)
        if r.returncode != 0:
            raise NetnsUnavailable(f"cannot create a bridge (ip link add type bridge): {r.stderr.strip()}")
        self._links.append(self.bridge)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def _free_subnet(self) -> int:
        used = _subnets_in_use()
        start = (os.getpid() * 7 + int(self.tag.rsplit("_", 1)[1], 16)) % 250
        for i in range(250):
            third = (start + i) % 250 + 2
            net = ipaddress.IPv4Network(f"{SUPERNET}.{third}.0/24")
            if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
                return third
        raise RuntimeError(f"no free /24 in {SUPERNET}.0.0/16")

    def add_host(self, name: str) -> Host:
        """A namespace joined to the bridge, with the next address."""
        assert self._opened, "open() the Network first"
        assert name not in self.hosts and re.fullmatch(r"[A-Za-z0-9_]+", name), name
        index = len(self.hosts)
        if index > 200:
            raise RuntimeError("too many hosts on one Network")
        netns = f"{self.tag}-{name}"
        veth = f"{self.tag}v{index:x}"
        assert len(veth) <= 15 and len(self.bridge) <= 15, (veth, self.bridge)
        ip = f"{SUPERNET}.{self.third}.{index + 2}"
        r = _ip("netns", "add", netns, check=False)
        if r.returncode != 0:
            raise NetnsUnavailable(f"cannot create a network namespace (ip netns add): {r.stderr.strip()}")
        self._netns.append(netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        self._links.append(veth)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.gateway)
        host = Host(name, netns, ip, veth)
        self.hosts[name] = host
        return host

    def popen(
        self,
        host: str,
        argv: Sequence[str],
        stdout: _Out = None,
        stderr: _Out = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """``argv`` inside ``host``'s namespace, in a session of its own (``ip netns exec``
        execs it: the Popen's pid is the command's)."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.hosts[host].netns, *argv],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def run(self, host: str, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``argv`` inside ``host``'s namespace, to completion, output captured."""
        return subprocess.run(
            ["ip", "netns", "exec", self.hosts[host].netns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cut(self, host: str) -> None:
        """Pull ``host``'s cable: its veth's root end goes down, packets are dropped silently
        both ways (no reset: connections hang until the link is back or they time out)."""
        _ip("link", "set", self.hosts[host].veth, "down")

    def restore(self, host: str) -> None:
        _ip("link", "set", self.hosts[host].veth, "up")

    def close(self) -> None:
        """Kill what runs in the namespaces, remove every namespace, veth and bridge made."""
        errors = []
        pids: list[int] = []
        for netns in self._netns:
            pids += _kill_netns_pids(netns)
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        _wait_gone(pids)
        for link in reversed(self._links):
            r = _ip("link", "del", link, check=False)
            if r.returncode != 0 and link in _link_names():
                errors.append(f"ip link del {link}: {r.stderr.strip()}")
        for netns in reversed(self._netns):
            r = _ip("netns", "del", netns, check=False)
            if r.returncode != 0 and netns in _netns_names():
                errors.append(f"ip netns del {netns}: {r.stderr.strip()}")
        self._links.clear()
        self._netns.clear()
        self._procs.clear()
        self.hosts.clear()
        self._opened = False
        if errors:
            raise RuntimeError("network cleanup: " + "; ".join(errors))

    def __enter__(self) -> Network:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
