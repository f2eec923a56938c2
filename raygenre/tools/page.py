"""A tool's results page, `results/bench/<name>.md`, in the form bench/'s benchmarks write
theirs (bench/_common.report): machine, date, commit and command, the body, and the
`RESULT <name> <figure>=<value>` lines it also prints (tests/test_docs.py reads those)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path


def results_dir() -> Path:
    """Where pages go: results/bench under the current folder (the checkout's root, where a
    tool is run from); tests point RAYGENRE_BENCH_RESULTS elsewhere, as the benchmarks' do."""
    return Path(os.environ.get("RAYGENRE_BENCH_RESULTS", Path("results") / "bench"))


def machine() -> str:
    import psutil
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    # Ray's version from its metadata: this package does not import Ray (its __init__ says why).
    return (f"{platform.node()}: {os.cpu_count()} CPU ({platform.machine()}), "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"Ray {metadata.version('ray')}")


def commit(repo: Path | None = None) -> str:
    """The code a figure was measured at: HEAD's hash, marked where the tree had changes
    (`repo`: the checkout; default the current folder)."""
    head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=repo,
                          capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                           capture_output=True, text=True).stdout.strip()
    return head + (" with uncommitted changes" if dirty else "")


def write_page(name: str, title: str, body: list[str], figures: dict[str, float | str],
               command: str) -> Path:
    """Print the RESULT lines and write the page; `command` is what a reader runs again."""
    results = [f"RESULT {name} {k}={v}" for k, v in figures.items()]
    text = "\n".join([f"# {title}", "", f"- machine: {machine()}",
                      f"- date: {datetime.now():%Y-%m-%d %H:%M}", f"- commit: {commit()}",
                      f"- command: `{command.strip()}`", "", *body, "", "```", *results, "```",
                      ""])
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.md"
    out.write_text(text)
    print("\n".join(results), flush=True)
    return out


def argv_command(module: str) -> str:
    """The command line this process was started with, as its console entry's name."""
    return " ".join([module, *sys.argv[1:]])
