"""Sampling processes through /proc: the tree of ``syncline run`` (peak RSS per process and
of the whole tree) and the CPU time of each process, including PostgreSQL backends that are
not our children (walsenders, the apply worker of a subscription)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def machine_busy() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    f = _read("/proc/stat").splitlines()[0].split()[1:]
    v = [int(x) for x in f]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK  # minus idle and iowait


def status_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB; (0, 0) if the process is gone."""
    rss = hwm = 0
    try:
        for line in _read(f"/proc/{pid}/status").splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0, 0
    return rss, hwm


def stat_fields(pid: int) -> list[str] | None:
    try:
        raw = _read(f"/proc/{pid}/stat")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name is in parentheses and may contain spaces
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    f = stat_fields(pid)
    if f is None:
        return None
    return (int(f[11]) + int(f[12])) / CLK_TCK  # utime, stime


def tree(root: int) -> list[int]:
    """``root`` and all its descendants (scanning /proc: no children files on this kernel)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        f = stat_fields(int(d))
        if f is not None:
            kids.setdefault(int(f[1]), []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def syncline_role(pid: int, root: int, views: dict[str, str]) -> str | None:
    """Which process of ``syncline run`` this is, from what it has open; None: not yet known.

    ``views`` maps a file name a view keeps open (e.g. its DuckDB file) to the view name;
    key ``"*"``: the view for a process that has only the log open (after a few seconds)."""
    if pid == root:
        return "supervisor"
    try:
        cmd = _read(f"/proc/{pid}/cmdline")
    except (FileNotFoundError, ProcessLookupError):
        return None
    if "resource_tracker" in cmd:
        return "mp resource tracker"
    names = set()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                names.add(Path(os.readlink(f"/proc/{pid}/fd/{fd}")).name)
    if "writer.lock" in names:
        return "capture"
    for n in names:  # views hold view-NAME.lock while they run
        if n.startswith("view-") and n.endswith(".lock"):
            name = n[len("view-") : -len(".lock")]
            return "compactor" if name == "_compactor" else f"view {name}"
    if "compact.db" in names:
        return "compactor"
    for fname, view in views.items():
        if fname in names:
            return f"view {view}"
    if "*" in views and "log.db" in names and age_seconds(pid) > 5:
        return f"view {views['*']}"  # the only view without a file of its own
    return None


def age_seconds(pid: int) -> float:
    f = stat_fields(pid)
    if f is None:
        return 0.0
    uptime = float(_read("/proc/uptime").split()[0])
    return uptime - int(f[19]) / CLK_TCK


@dataclass
class ProcStats:
    label: str
    hwm_kb: int = 0
    cpu_s: float = 0.0
    cpu0: float = 0.0
    """CPU seconds the process had used before the sampling started (servers that outlive a run)."""


@dataclass
class Sampler:
    """Samples every ``interval`` seconds until stopped.

    ``root``: pid of a process whose tree is "ours" (its RSS is summed); ``label(pid)`` names
    a process of the tree (None: try again later); ``extra()`` returns other processes to
    watch for CPU (label -> pid), asked about once a second."""

    root: int
    label: Callable[[int], str | None] = lambda pid: None
    extra: Callable[[], list[tuple[str, int]]] = list
    interval: float = 0.1
    procs: dict[int, ProcStats] = field(default_factory=dict)
    peak_tree_kb: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _extra: list[tuple[str, int]] = field(default_factory=list)
    busy0: float = 0.0
    started: float = 0.0
    busy: float = 0.0
    """CPU seconds the whole machine spent busy while sampling (all processes, all cores)."""

    def start(self) -> Sampler:
        self.busy0 = machine_busy()
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()  # a last look (if the processes still exist)
        self.busy = machine_busy() - self.busy0

    def _loop(self) -> None:
        last_extra = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_extra >= (1.0 if self._extra else 0.1):  # look often until found
                with contextlib.suppress(Exception):
                    self._extra = [(k, v) for k, v in self.extra() if v]
                last_extra = now
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        total = 0
        for pid in tree(self.root):
            rss, hwm = status_kb(pid)
            if not rss and not hwm:
                continue
            total += rss
            st = self.procs.get(pid)
            if st is None or st.label.startswith("?"):
                name = self.label(pid)
                if st is None:
                    st = self.procs[pid] = ProcStats(name or f"? pid {pid}")
                elif name:
                    st.label = name
            st.hwm_kb = max(st.hwm_kb, hwm, rss)
            cpu = cpu_seconds(pid)
            if cpu is not None:
                st.cpu_s = cpu
        self.peak_tree_kb = max(self.peak_tree_kb, total)
        for name, pid in list(self._extra):
            cpu = cpu_seconds(pid)
            if cpu is None:
                continue
            st = self.procs.get(pid)
            if st is None:
                st = self.procs[pid] = ProcStats(name, cpu_s=cpu)
                st.hwm_kb = -1  # not ours: no RSS accounting
                # a server that was running before (redis-server): only the CPU of this run
                st.cpu0 = cpu if age_seconds(pid) > time.monotonic() - self.started + 0.5 else 0.0
            st.cpu_s = cpu - st.cpu0

    # -- summaries ------------------------------------------------------------------------

    def ours(self) -> list[ProcStats]:
        return [p for p in self.procs.values() if p.hwm_kb >= 0]

    def sum_hwm_mb(self) -> float:
        return sum(p.hwm_kb for p in self.ours()) / 1024

    def peak_tree_mb(self) -> float:
        return self.peak_tree_kb / 1024

    def others_cpu(self) -> float:
        """Machine CPU seconds not spent in the processes watched (other work on the machine,
        the benchmark's own polling, PostgreSQL processes not watched)."""
        return max(0.0, self.busy - sum(p.cpu_s for p in self.procs.values()))

    def by_label(self) -> dict[str, tuple[float, float]]:
        """label -> (peak RSS MB or -1, CPU seconds), processes of the same label merged."""
        out: dict[str, tuple[float, float]] = {}
        for p in self.procs.values():
            mb = p.hwm_kb / 1024 if p.hwm_kb >= 0 else -1.0
            old = out.get(p.label)
            out[p.label] = (max(old[0], mb), old[1] + p.cpu_s) if old else (mb, p.cpu_s)
        return out


@dataclass
class Profiler:
    """``py-spy record`` attached to every labelled process of a ``syncline run`` tree
    (started as soon as the process is named), writing collapsed stacks (py-spy's ``raw``
    format, what flame-graph tools read) to ``DIR/PREFIX-ROLE.txt``; :func:`summarize`
    turns each into the functions that took the time."""

    root: int
    label: Callable[[int], str | None]
    out: Path
    prefix: str
    rate: int = 100
    native: bool = False
    """Sample native frames and every thread too (py-spy cannot do that without pausing)."""
    files: dict[str, Path] = field(default_factory=dict)
    _spies: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Profiler:
        self.out.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in tree(self.root):
                if pid in self._seen:
                    continue
                name = self.label(pid)
                if name is None or name == "mp resource tracker":
                    continue
                self._seen.add(pid)
                role = name.replace("view ", "").replace(" ", "-")
                path = self.out / f"{self.prefix}-{role}.txt"
                self.files[name] = path
                self._spies.append(
                    subprocess.Popen(
                        [
                            _py_spy(),
                            "record",
                            "--pid",
                            str(pid),
                            "--rate",
                            str(self.rate),
                            "--format",
                            "raw",
                            *(["--native", "--threads"] if self.native else ["--nonblocking"]),
                            "--output",
                            str(path),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            self._stop.wait(0.1)

    def stop(self) -> None:
        """Stop sampling (before the profiled processes are stopped) and write the files."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for p in self._spies:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
        for p in self._spies:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _py_spy() -> str:
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def summarize(path: Path, top: int = 12) -> list[tuple[str, float, float]]:
    """(function, share of samples where it runs itself, share where it is on the stack)
    from a collapsed-stacks file, most inclusive first; idle waits are left out of the
    total so that shares are of the time the process was busy."""
    self_n: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        if frames and _idle(frames[-1]):
            continue
        n = int(count)
        total += n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
    if not total:
        return []
    rows = [(f, self_n.get(f, 0) / total, n / total) for f, n in incl.items() if not _plumbing(f)]
    rows.sort(key=lambda r: (-r[1], -r[2]))
    return rows[:top]


def _plumbing(frame: str) -> bool:
    """Entry points of processes, threads and imports: on every stack, saying nothing."""
    return any(m in frame for m in ("(threading", "(multiprocessing/", "(<frozen", "(<string>)", "(runpy"))


def _frame(f: str) -> str:
    # py-spy raw frames: "function (path/to/module.py:line)"
    name, _, where = f.partition(" (")
    where = where.rstrip(")")
    module = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in module:
            module = module.split(marker, 1)[1]
            break
    return f"{name} ({module})" if module else name


def _idle(frame: str) -> bool:
    return frame.split(" ", 1)[0] in {"wait", "select", "poll", "sleep", "_wait_for_tstate_lock"}
