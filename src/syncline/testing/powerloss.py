"""Simulated power loss on the embedded log: a file layer that drops everything not synced.

``powerloss_shim.c`` (built here with the system's C compiler, loaded with ``LD_PRELOAD``
into ``syncline run`` through :meth:`PowerLoss.env`) copies each file of the log directory
into a shadow directory whenever a process fsyncs it. :meth:`PowerLoss.cut`, once every
process is dead (SIGKILL), puts the shadow in place of the directory: the log as a disk
would hold it after the machine lost power. A name is durable once its file or its
directory was synced (a file never synced is then there, empty). Not modelled: torn writes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SHIM = Path(__file__).with_name("powerloss_shim.c")


class PowerLoss:
    def __init__(self, directory: Path, workdir: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        workdir.mkdir(parents=True, exist_ok=True)
        self.directory = directory.resolve()
        self.shadow = (workdir / "shadow").resolve()
        self.shadow.mkdir(exist_ok=True)
        self.library = workdir / "powerloss.so"
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise RuntimeError("the power-loss test needs a C compiler (apt-get install gcc)")
        flags = ["-shared", "-fPIC", "-O2", "-Wall", "-Wno-format-truncation"]
        subprocess.run(
            [cc, *flags, "-o", str(self.library), str(SHIM), "-ldl"],
            check=True,
            capture_output=True,
        )
        self.cuts = 0
        self.lost_files = 0

    def env(self) -> dict[str, str]:
        """The environment that puts ``syncline run`` (and what it starts) on the layer."""
        return {
            "LD_PRELOAD": str(self.library),
            "SYNCLINE_POWERLOSS_DIR": str(self.directory),
            "SYNCLINE_POWERLOSS_SHADOW": str(self.shadow),
        }

    def cut(self) -> None:
        """The power goes: the directory becomes what was synced (every process writing
        to it must be dead already)."""
        kept = {p.name for p in self.shadow.iterdir() if not p.name.startswith(".")}
        for p in sorted(self.directory.rglob("*"), reverse=True):
            if p.is_file() or p.is_symlink():
                rel = str(p.relative_to(self.directory)).replace("/", "%")
                if rel not in kept:
                    self.lost_files += 1
                p.unlink()
        for name in kept:
            dst = self.directory / name.replace("%", "/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.shadow / name, dst)
        self.cuts += 1
