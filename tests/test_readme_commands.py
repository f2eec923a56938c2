"""README's one-machine commands, read from README.md and run in its order after the quick
start, as a newcomer would: each must work as written. Smoke-sized, as README's quick start
says any command may be (`--smoke`); the quick start itself is the shared `smoke_run` (the
same command plus --smoke, with --results/--storage/--cache where README's defaults would
put them: results/ in its working folder, $RAYGENRE_STORAGE, $RAYGENRE_CACHE)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _commands(title: str) -> list[list[str]]:
    """The `python -m raygenre.grid` commands of a README section's bash blocks, as words
    (continuation lines joined, comments dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", _section(title), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:1] and words[0].endswith("python") and words[1:3] == [
                        "-m", "raygenre.grid"]:
                    out.append(words[3:])
    return out


def _grid(words: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    words = [os.path.expanduser(w) if w.startswith("~") else w for w in words]
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "raygenre.grid", *words], cwd=cwd,
                          env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (words, proc.stdout[-3000:], proc.stderr[-3000:])
    print(f"[test] {time.time() - t0:.0f} s: {shlex.join(words)}")
    return proc


def _split_lists(root: Path, folder: Path) -> Path:
    """Fixed lists for the gtzan_like folder (10 tracks per genre: 6 train, 2 val, 2 test)."""
    names: dict[str, list[str]] = {"train.txt": [], "val.txt": [], "test.txt": []}
    for genre in sorted(p for p in root.iterdir() if p.is_dir()):
        for k, f in enumerate(sorted(genre.iterdir())):
            which = "train.txt" if k < 6 else "val.txt" if k < 8 else "test.txt"
            names[which].append(f"{genre.name}/{f.name}")
    folder.mkdir()
    for name, lines in names.items():
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def test_readmes_commands_work_in_order_after_the_quick_start(
        smoke_run: dict, gtzan_like: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    base: Path = smoke_run["base"]
    # README's defaults, pointed where the quick start (smoke_run) wrote: results/ in the
    # working folder, the run folders and the cache by their environment variables. HOME too,
    # so that README's `~/...` lands in this test's folders.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    work = tmp_path / "work"
    # The quick start's results and run folder, copied (other tests read the originals); a
    # cache of this test's own (tests/test_grid_e2e.py reads the shared one's only set).
    shutil.copytree(base / "results", work / "results")
    shutil.copytree(base / "runs", tmp_path / "runs")
    env = {"RAYGENRE_STORAGE": str(tmp_path / "runs"), "RAYGENRE_CACHE": str(tmp_path / "cache"),
           "HOME": str(home)}
    quick = _commands("Quick start")
    assert quick == [["batch_epoch"]], quick  # the quick start is what smoke_run ran, smoke-sized
    assert smoke_run["args"][:2] == ["batch_epoch", "--smoke"]

    # The TensorBoard line: its command as written (plus a free port), serving the quick
    # start's runs.
    line = re.search(r"`(tensorboard --logdir [^`]+)`", README).group(1)
    logdir = line.split()[-1].replace("batch_epoch", "batch_epoch-smoke")
    tb = subprocess.Popen([str(Path(sys.executable).parent / "tensorboard"), "--logdir",
                           logdir, "--port", "0", "--host", "127.0.0.1"], cwd=work,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        deadline = time.time() + 120
        while url is None and time.time() < deadline:
            out = tb.stdout.readline()
            assert out or tb.poll() is None, "tensorboard exited"
            m = re.search(r"(http://[^ ]+/)", out)
            url = m.group(1) if m else None
        assert url, "tensorboard never said where it serves"
        runs = {}
        for _ in range(60):  # it loads the event files in the background
            runs = json.loads(urllib.request.urlopen(url + "data/runs", timeout=10).read())
            if runs:
                break
            time.sleep(1)
        # The smoke grid's two trials, and under each its cells' HParams runs.
        assert len([r for r in runs if "/" not in r]) == 2, runs
    finally:
        tb.kill()
        tb.wait(timeout=30)

    # Your own GTZAN copy: the check, then the full run (smoke-sized), with README's folders.
    own = _commands("Your own GTZAN copy")
    assert len(own) == 2 and all("--data" in c for c in own), own
    lists = _split_lists(gtzan_like, tmp_path / "lists")

    def mine(words: list[str]) -> list[str]:
        return [str(gtzan_like) if w == "/path/to/genres" else
                str(lists) if w == "/path/to/lists" else w for w in words]

    check = _grid(mine(own[0]), work, env)
    assert "--smoke" in own[0] and "[results] best" in check.stdout
    # As written, the full run writes batch_epoch/, beside the check's batch_epoch-smoke/, and
    # is GPU work: smoke-sized and, as README says for a CPU, with --preset cpu.
    # Smoke-sized it would take the check's folders, so those go first (the point here is that
    # it does not meet the quick start's, which stay).
    folders = [w for w in own[1] if w in ("--results", "--storage")]
    assert folders == ["--results", "--storage"], own[1]
    shutil.rmtree(work / own[1][own[1].index("--results") + 1] / "batch_epoch-smoke")
    shutil.rmtree(Path(os.path.expanduser(own[1][own[1].index("--storage") + 1]))
                  / "batch_epoch-smoke")
    _grid([*mine(own[1]), "--smoke", "--preset", "cpu"], work, env)
    mine_best = json.loads((work / "results-gtzan" / "batch_epoch-smoke" / "best.json")
                           .read_text())
    assert mine_best["data_source"] == str(gtzan_like)
    quick_best = json.loads((work / "results" / "batch_epoch-smoke" / "best.json").read_text())
    assert quick_best["data_source"] == "builtin:synthetic"  # the quick start's, kept

    # Your own grid: the grid file as README shows it, then its two commands.
    grid_section = _section("Your own grid")
    yaml_text = re.search(r"```yaml\n(.*?)```", grid_section, re.S).group(1)
    (work / "my_grids").mkdir()
    (work / "my_grids" / "my_sweep.yaml").write_text(yaml_text)
    cmds = _commands("Your own grid")
    assert cmds[0][:3] == ["--grids", "my_grids", "my_sweep"], cmds
    _grid([*cmds[0], "--smoke"], work, env)
    assert (work / "results" / "my_sweep-smoke" / "configs.csv").exists()
    listing = _grid(cmds[1], work, env)
    assert "batch_epoch" in listing.stdout
