"""examples/colab.ipynb survives the way Colab fails: the virtual machine goes, with the kernel,
its Ray, the local disk and Ray's session folder; only "Drive" stays. The notebook runs
headless in a real Jupyter kernel (nbclient), on the built-in data under --smoke, with Drive
replaced by a local folder (RAYGENRE_DRIVE)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

from .conftest import history_by_config, kill_tree, run_cli
from .test_grid_e2e import assert_every_row_equal

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "colab.ipynb"
# One kernel runs the notebook to the end; the test waits on it, never on a fixed sleep.
RUN_TIMEOUT = 900


def _ours(root_pid: int | None, marker: str) -> list[psutil.Process]:
    """The processes this test started: a child's tree, and any process whose command line
    names this test's own Ray folder (a Ray that outlived the kernel that started it)."""
    procs: dict[int, psutil.Process] = {}
    if root_pid is not None:
        try:
            root = psutil.Process(root_pid)
            procs.update({p.pid: p for p in [root, *root.children(recursive=True)]})
        except psutil.NoSuchProcess:
            pass
    for p in psutil.process_iter(["cmdline"]):
        if marker in " ".join(p.info["cmdline"] or []):
            procs[p.pid] = p
    procs.pop(os.getpid(), None)
    return list(procs.values())


def _outputs(nb: nbformat.NotebookNode) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") or str(o.get("data", {}).get("text/plain", "")))
    return "".join(out)


def test_a_killed_notebook_run_again_unchanged_finishes_with_the_uninterrupted_numbers(
        smoke_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drive = tmp_path / "drive"
    # The VM's local disk: HOME (~/.cache, ~/raygenre_runs) and Ray's session folder. Short,
    # under /tmp: Ray's socket paths must fit AF_UNIX's 107 bytes.
    local = Path(tempfile.mkdtemp(prefix="rgnb"))
    ray_tmp = local / "ray"
    env = {"RAYGENRE_DRIVE": str(drive), "RAYGENRE_SMOKE": "1", "HOME": str(local / "home"),
           "RAY_TMPDIR": str(ray_tmp), "PYTHONUNBUFFERED": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    first = None
    try:
        (local / "home").mkdir()
        ray_tmp.mkdir()
        # The first kernel, in a child of its own so that the whole VM can be killed at once.
        first = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, nbformat; from nbclient import NotebookClient; "
             "nb = nbformat.read(sys.argv[1], as_version=4); "
             f"NotebookClient(nb, timeout={RUN_TIMEOUT}, kernel_name='python3').execute()",
             str(NOTEBOOK)], cwd=tmp_path, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        runs = drive / "runs" / "batch_epoch-smoke"
        deadline = time.time() + RUN_TIMEOUT
        while not any(runs.rglob("state.pt")):  # a trial has saved an epoch: mid-sweep
            assert first.poll() is None, first.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "no checkpoint on 'Drive' in time"
            time.sleep(0.5)
        kill_tree(*(p.pid for p in _ours(first.pid, str(ray_tmp))))
        first.wait(timeout=30)
        results = drive / "results" / "batch_epoch-smoke"
        assert not (results / "summary.md").exists(), "killed too late: the sweep had finished"
        # Only Drive survives the VM.
        shutil.rmtree(local)
        (local / "home").mkdir(parents=True)
        ray_tmp.mkdir()
        assert (drive / "runs").is_dir() and (drive / "cache").is_dir()

        # A new kernel runs the same cells, unchanged.
        nb = nbformat.read(NOTEBOOK, as_version=4)
        t0 = time.time()
        NotebookClient(nb, timeout=RUN_TIMEOUT, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        print(f"[test] the resumed notebook ran in {time.time() - t0:.0f} s")
        text = _outputs(nb)
        assert "no GPU" in text and "preset 'cpu'" in text, text[-3000:]
        assert "--resume auto: continuing the run" in text, text[-3000:]
        assert "tied within noise" in text or "best " in text, text[-3000:]
        assert_every_row_equal(history_by_config(results / "history.csv"),
                               history_by_config(smoke_run["out"] / "history.csv"))

        # A run folder whose config changed is still refused, the difference named.
        other = run_cli(["batch_epoch", "--smoke", "--resume", "auto", "--cpus-per-trial", "0.5",
                         "--storage", str(drive / "runs"), "--cache", str(drive / "cache"),
                         "--results", str(drive / "results")], cwd=tmp_path)
        assert other.returncode == 2 and "cpus_per_worker" in other.stderr, other.stderr
    finally:
        kill_tree(*(p.pid for p in _ours(first.pid if first else None, str(ray_tmp))))
        shutil.rmtree(local, ignore_errors=True)
