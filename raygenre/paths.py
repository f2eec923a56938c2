"""Where things live: built in one place so no module reassembles a path by hand."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from raygenre.storage import Location


def default_cache() -> Path:
    """Generated and prepared data: reused by every sweep on this machine."""
    return Path(os.environ.get("RAYGENRE_CACHE", Path.home() / ".cache" / "raygenre"))


def default_storage() -> Path:
    """Ray run folders (Tune state, Train checkpoints, TensorBoard): large, kept out of results/."""
    return Path(os.environ.get("RAYGENRE_STORAGE", Path.home() / "raygenre_runs"))


ASHA_STATE_NAME = "asha_rungs.state"  # why not .json: RunPaths.asha_state


def epoch_dir(epoch: int) -> str:
    """The folder name of an epoch's checkpoint where raygenre names it (a data-parallel trial's
    Train checkpoints, the copies kept for a shared trial's members); Tune names its own."""
    return f"epoch_{epoch:04d}"


@dataclass(frozen=True)
class RunPaths:
    storage: Location  # --storage: a folder every node sees, or a bucket URI
    name: str  # the experiment: grid name, "-smoke" for smoke runs
    results_root: Path  # --results: always on the machine that runs the command

    @property
    def experiment(self) -> Location:
        """Tune's experiment folder (what `--resume` restores)."""
        return self.storage / self.name

    @property
    def train_storage(self) -> Location:
        """Ray Train runs of data-parallel trials, one per trial, named by trial id so a
        restored trial finds its own."""
        return self.experiment / "_train"

    def train_run(self, trial_id: str) -> Location:
        return self.train_storage / trial_id

    def members(self, trial_id: str) -> Location:
        """A shared trial's checkpoints kept for its shorter members (epoch_NNNN/ each)."""
        return self.experiment / "members" / trial_id

    @property
    def manifest(self) -> Location:
        """What the run was started with, checked on --resume."""
        return self.experiment / "raygenre_run.json"

    @property
    def loggers(self) -> Location:
        """The --logger a run was started with, checked on a resume (`sweep.loggers`). Written
        once, before Tune starts: Tune's copy of the top-level .json files (`asha_state`)
        then puts back the same file."""
        return self.experiment / "raygenre_loggers.json"

    @property
    def asha_state(self) -> Location:
        """ASHA's rungs and stop decisions, kept across a resume.

        Not a .json or .pkl name: on a restore Tune copies the run folder's top-level .json
        and .pkl files into its driver folder and uploads that folder over the run folder at
        every state save, so a file written straight to the run folder during a resumed sweep
        is put back as it was when the sweep resumed (ray/tune/execution/experiment_state.py,
        `sync_down_experiment_state`). Runs started before this was found keep theirs in
        `asha_rungs.json` (`raygenre.sweep.asha.LEGACY_NAME`)."""
        return self.experiment / ASHA_STATE_NAME

    @property
    def wall_state(self) -> Location:
        """The wall of each command that ran the sweep (`sweep.clock`); not .json for the
        reason `asha_state` gives."""
        return self.experiment / "sweep_wall.state"

    @property
    def results(self) -> Path:
        return self.results_root / self.name

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files, one TensorBoard run per Tune trial, on the machine running
        the sweep."""
        return self.results / "tensorboard"
