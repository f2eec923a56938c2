"""What a sweep says while it runs: one progress line per event, and TensorBoard files."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from raygenre.config import METRICS
from raygenre.grid.file import packed_cells, unpack
from raygenre.grid.objective import Objective
from raygenre.sweep.loggers import Member, MemberCallback


def trial_outcome(trial: Any, finished: bool = False) -> str | None:
    """completed / stopped by ASHA / error for a Tune trial, or None while unfinished.
    `finished`: Tune said so (in on_trial_complete the status is not yet TERMINATED)."""
    if trial.status == "ERROR":
        return "error"
    if trial.status != "TERMINATED" and not finished:
        return None
    done = (trial.last_result or {}).get("epoch", 0)
    return "completed" if done >= unpack(trial.config)[0]["epochs"] else "stopped by ASHA"


@dataclass(frozen=True)
class PlannedTrial:
    """A trial of the sweep as Tune's param space holds it, its epochs, and the seconds one of
    its epochs was estimated to take here (a relative weight: calibrated as the sweep runs)."""

    value: dict[str, Any]
    epochs: int
    epoch_s: float


def _trial_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class Progress(tune.Callback):
    """One line per epoch and per finished trial: what ran, what ASHA stopped, the best so far,
    and the time left if every unfinished trial goes to its last epoch.

    The time left weighs each trial's remaining epochs by what the estimate timed for its model
    and input (a CNN1 epoch is not a linear classifier's), scaled by how the epochs run so far
    compare with their estimate; trials Tune has not created yet are counted too. An estimate,
    not a bound. Counts come from Tune's trial list each time, so they stay right after a
    resume.
    """

    def __init__(self, planned: list[PlannedTrial], concurrency: int, metric: str,
                 mode: str) -> None:
        self.planned, self.concurrency, self.metric, self.mode = (
            planned, concurrency, metric, mode)
        self.n_trials = len(planned)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A sweep started by an earlier version pickled its callback without `planned` (Tune
        # restores callbacks from the run folder): its time-left line weighs epochs alike.
        self.__dict__.update({"planned": None, **state})

    def setup(self, **info: Any) -> None:
        self.t0 = time.time()
        self.best: tuple[float, str] | None = None

    def minutes_left(self, trials: list, outcomes: list[str | None]) -> float | None:
        """Sweep minutes left if no trial stops early; None before any epoch has run."""
        planned = {_trial_key(p.value): p for p in self.planned or []}
        weight = {}  # a trial's seconds per estimated epoch; 1 without a plan
        for t in trials:
            p = planned.get(_trial_key(packed_cells(t.config)))
            weight[t.trial_id] = p.epoch_s if p is not None else 1.0
        est_run = wall = left = 0.0
        for t, o in zip(trials, outcomes, strict=True):
            done = (t.last_result or {}).get("epoch", 0)
            est_run += done * weight[t.trial_id]
            wall += (t.last_result or {}).get("time_total_s", 0.0)
            if not o:
                left += (unpack(t.config)[0]["epochs"] - done) * weight[t.trial_id]
        created = {_trial_key(packed_cells(t.config)) for t in trials}
        if self.planned:
            left += sum(p.epochs * p.epoch_s for k, p in planned.items() if k not in created)
        elif trials:  # no plan (a sweep started before plans were kept): the mean trial
            mean_epochs = sum(unpack(t.config)[0]["epochs"] for t in trials) / len(trials)
            left += (self.n_trials - len(trials)) * mean_epochs
        if not est_run or not left:
            return None
        return left * wall / est_run / self.concurrency / 60

    def _line(self, event: str, trials: list, finishing: Any = None) -> None:
        outcomes = [trial_outcome(t, finished=t is finishing) for t in trials]
        done = [o for o in outcomes if o]
        counts = {k: done.count(k) for k in ("completed", "stopped by ASHA", "error")}
        left = self.minutes_left(trials, outcomes)
        eta = f", ~{left:.1f} min left if no trial stops early" if left is not None else ""
        best = f"best {self.metric} {self.best[0]:.3f} ({self.best[1]})" if self.best else ""
        tally = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "-"
        print(f"[tune {(time.time() - self.t0) / 60:5.1f} min] {event:<38} | {len(done)}/"
              f"{self.n_trials} trials done ({tally}) | {best}{eta}", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
        value = result.get(self.metric)
        if value is not None and (self.best is None or (
                value > self.best[0] if self.mode == "max" else value < self.best[0])):
            self.best = (value, trial.trial_id)
        shown = f"{value:.3f}" if value is not None else "-"
        epochs = unpack(trial.config)[0]["epochs"]
        self._line(f"{trial.trial_id} epoch {result.get('epoch')}/{epochs}"
                   f" {self.metric} {shown}", trials)

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
        self._line(f"{trial.trial_id} {trial_outcome(trial, finished=True)}", trials,
                   finishing=trial)

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
        self._line(f"{trial.trial_id} ERROR (see cells.csv)", trials)
        error = trial.get_error()
        last = (str(error).strip().splitlines() or [""])[-1][:200] if error else ""
        print(f"[tune] {trial.trial_id} failed: {last} (traceback: {trial.error_file})",
              flush=True)


class _DropTrialTracebacks(logging.Filter):
    """Tune logs every failed trial's whole traceback; Progress prints its last line and where
    the traceback is, and cells.csv keeps the error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Trial task failed for trial")


def quiet_trial_tracebacks() -> None:
    logging.getLogger("ray.tune.execution.tune_controller").addFilter(_DropTrialTracebacks())


def trial_name(trial_id: str, config: dict[str, Any], labels: list[str]) -> str:
    """A Tune trial's TensorBoard run name: the trial id and its swept values (a variant by its
    name; a shared trial's epoch counts as 3|5|10)."""
    flat, variant, members = unpack(config)
    shown = {**flat, "variant": variant, "epochs": "|".join(map(str, members))}
    parts = [trial_id, *(f"{k}={shown.get(k)}" for k in labels)]
    return ",".join(parts).replace("/", "_").replace(" ", "")


class TensorBoard(MemberCallback):
    """Event files with the metric names of cells.csv (`val/acc`, ...), one TensorBoard run per
    Tune trial, stepped by epoch (Tune's own logger prefixes every name with `ray/tune/` and
    steps by report); and, for the HParams view, one session per cell (a shared trial's member
    too), written when it ends: its flattened config against its final metrics and its best
    value of the objective under the grid's rule (`hparams/last/val/acc` by default,
    `hparams/best/val/acc` under early stopping: `MemberCallback.judged`)."""

    def __init__(self, logdir: Path, labels: list[str], objective: Objective) -> None:
        super().__init__(objective)
        self.logdir, self.labels = logdir, labels

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A sweep started by an earlier version pickled its callback without members.
        super().__setstate__({"members": {}, **state})

    def setup(self, **info: Any) -> None:
        self.writers: dict[str, Any] = {}

    def _writer(self, trial: Any) -> Any:
        if trial.trial_id not in self.writers:
            from tensorboardX import SummaryWriter

            name = trial_name(trial.trial_id, trial.config, self.labels)
            self.writers[trial.trial_id] = SummaryWriter(str(self.logdir / name))
        return self.writers[trial.trial_id]

    def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
        if result.get("epoch") is None:
            return
        w = self._writer(trial)
        for m in (*METRICS, "lr"):
            if result.get(m) is not None:
                w.add_scalar(m, result[m], int(result["epoch"]))
        w.flush()
        super().on_trial_result(iteration, trials, trial, result, **info)

    def member_end(self, trial: Any, member: Member) -> None:
        if not member.history:
            return  # nothing to compare it by
        # Numbers, strings and booleans are what the HParams view takes; lists read as text.
        hparams = {k: (v if isinstance(v, (bool, int, float, str)) else json.dumps(v))
                   for k, v in member.params.items() if v is not None}
        metrics = {f"hparams/{k}": v for k, v in self.summary(member).items()}
        # A session folder inside the trial's, named by cells.csv's id (no ':' in a folder name).
        self._writer(trial).add_hparams(hparams, metrics, name=member.cell_id.replace(":", "_"),
                                        global_step=max(member.history))

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
        super().on_trial_complete(iteration, trials, trial, **info)  # members' sessions first
        self._close(trial)

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
        super().on_trial_error(iteration, trials, trial, **info)
        self._close(trial)

    def _close(self, trial: Any) -> None:
        w = self.writers.pop(trial.trial_id, None)
        if w is not None:
            w.close()

    def on_experiment_end(self, trials, **info):  # noqa: ANN001
        for w in self.writers.values():
            w.close()
        self.writers.clear()
