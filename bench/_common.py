"""What every benchmark shares: the machine line, running the CLI with timestamps, and writing
`results/bench/<name>.md` ending in the `RESULT <name> <figure>=<value>` lines it also prints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from raygenre.tools import page
from raygenre.tools.page import machine  # noqa: F401  (the benchmarks' machine line, too)

REPO = Path(__file__).resolve().parent.parent
# Tests point this elsewhere, so that running a benchmark never rewrites a committed figure.
RESULTS = Path(os.environ.get("RAYGENRE_BENCH_RESULTS", REPO / "results" / "bench"))




@dataclass
class CliRun:
    """A `python -m raygenre.grid` run: its output lines with the seconds at which each came."""

    argv: list[str]
    rc: int = 0
    wall_s: float = 0.0
    lines: list[tuple[float, str]] = field(default_factory=list)

    def first(self, needle: str) -> float | None:
        """Seconds from the start to the first line containing `needle`."""
        return next((t for t, line in self.lines if needle in line), None)


def run_cli(args: list[str], env: dict[str, str] | None = None, echo: bool = True,
            on_line=None, check: bool = True, interrupt_after_s: float | None = None) -> CliRun:
    """Run the CLI as a user would, in a fresh process; raises if it fails (unless `check` is
    off). Past `interrupt_after_s` it gets Ctrl-C (SIGINT), as a user would give it."""
    argv = [sys.executable, "-m", "raygenre.grid", *args]
    run = CliRun(argv)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, **(env or {})})
    timer = None
    if interrupt_after_s is not None:
        timer = threading.Timer(max(interrupt_after_s, 1), proc.send_signal, [signal.SIGINT])
        timer.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        t = time.perf_counter() - t0
        run.lines.append((t, line.rstrip("\n")))
        if echo:
            print(f"  {t:7.1f}s | {line}", end="", flush=True)
        if on_line:
            on_line(proc, line)
    run.rc = proc.wait()
    if timer is not None:
        timer.cancel()
    run.wall_s = time.perf_counter() - t0
    if check and run.rc != 0:
        tail = "\n".join(line for _, line in run.lines[-30:])
        raise RuntimeError(f"{' '.join(argv)} exited {run.rc}:\n{tail}")
    return run


class PeakRss:
    """Samples the memory of a process tree in a thread: the root process alone, each process
    whose command line contains one of `roles`, and the tree's sum; peak of each, in MiB.

    PSS (proportional set size): a shared page counts 1/n in each of the n processes that map
    it, so the object store's shared memory is not counted once per process that touched it
    (RSS did: 7 GB "in all" for a 0.3 GB data set) and the tree's sum is the real total."""

    def __init__(self, roles: dict[str, str], every_s: float = 0.2) -> None:
        self.roles = roles
        self.every_s = every_s
        names = ["driver", *roles, "tree"]
        self.peak: dict[str, float] = {n: 0.0 for n in names}  # PSS
        # PSS outside the object store's shared memory (/dev/shm/plasma*): a process's own
        # memory. The pages a driver writes into the object store count as "private" in
        # /proc (USS) until another process touches them, so USS does not separate them.
        self.peak_own: dict[str, float] = {n: 0.0 for n in names}
        self.peak_store = 0.0  # the object store pages mapped by any process of the tree
        self._stop = threading.Event()

    def watch(self, pid: int) -> None:
        threading.Thread(target=self._loop, args=(pid,), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self, pid: int) -> None:
        import psutil

        root = psutil.Process(pid)
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = total_own = store = 0.0
                for p in procs:
                    try:
                        pss, shm = (m / 2**20 for m in _pss_and_store(p))
                        cmd = " ".join(p.cmdline())
                    except psutil.Error:
                        continue
                    total, total_own, store = total + pss, total_own + pss - shm, store + shm
                    roles = [r for r, needle in self.roles.items() if needle in cmd]
                    for role in (["driver"] if p.pid == pid else []) + roles:
                        self.peak[role] = max(self.peak[role], pss)
                        self.peak_own[role] = max(self.peak_own[role], pss - shm)
                self.peak["tree"] = max(self.peak["tree"], total)
                self.peak_own["tree"] = max(self.peak_own["tree"], total_own)
                self.peak_store = max(self.peak_store, store)
            except psutil.Error:
                pass
            self._stop.wait(self.every_s)


def _pss_and_store(p) -> tuple[float, float]:
    """(PSS, the part of it in the object store's shared memory), in bytes; RSS and 0 where
    the platform has no PSS."""
    try:
        maps = p.memory_maps(grouped=True)
    except AttributeError:  # not Linux
        return p.memory_info().rss, 0.0
    return (sum(m.pss for m in maps),
            sum(m.pss for m in maps if "plasma" in m.path or "/dev/shm/" in m.path))


def write_grid(folder: Path, name: str, text: str) -> Path:
    """A grid file for one benchmark, named so its results folder is recognisable."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def cnn1_grid(folder: Path, name: str, description: str, epochs: int,
              seeds: list[int]) -> Path:
    """The benchmarks' grid: CNN1 on spectrograms, batch 32, one cell per seed (each its own
    Tune trial), every trial in full (no ASHA: each trial's cost is what is measured)."""
    return write_grid(folder, name, f"""\
description: {description}
metric: val/acc
asha: false
base:
  model: cnn1
  features: spectrogram
  batch_size: 32
  epochs: {epochs}
grid:
  seed: {list(seeds)}
""")


def commit() -> str:
    """The code a figure was measured at (the tools' pages say it the same way)."""
    return page.commit(REPO)


def report(name: str, title: str, body: list[str], figures: dict[str, float | str],
           command: str | None = None, machine_line: str | None = None,
           date: str | None = None) -> Path:
    """Print the RESULT lines and write results/bench/<name>.md (machine, date, command).
    `machine_line` and `date` are for figures measured elsewhere (a lent GPU machine) and
    written up here."""
    command = command or f"python bench/{name}.py " + " ".join(sys.argv[1:])
    results = [f"RESULT {name} {k}={v}" for k, v in figures.items()]
    text = "\n".join([f"# {title}", "",
                      f"- machine: {machine_line or machine()}",
                      f"- date: {date or f'{datetime.now():%Y-%m-%d %H:%M}'}",
                      f"- commit: {commit()}",
                      f"- command: `{command.strip()}`", "",
                      *body, "", "```", *results, "```", ""])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.md"
    out.write_text(text)
    print("\n".join(results), flush=True)
    return out
