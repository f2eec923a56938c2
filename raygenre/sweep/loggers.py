"""Experiment trackers (`--logger mlflow`, `--logger wandb`) and TensorBoard's HParams view:
one entry per cell, as cells.csv has one row per cell.

Ray's own callbacks (`ray.air.integrations.mlflow.MLflowLoggerCallback`,
`ray.air.integrations.wandb.WandbLoggerCallback`) log one entry per Tune trial, stepped by
report, with Tune's config. In raygenre a Tune trial can stand for several cells of the grid,
its *members*: the first N epochs of it, one per epoch count (`grid.file.unpack`). Logged
through Ray's callbacks, a trial of members 3|5|10 would be one entry with `cells/members: [3,
5, 10]` among its parameters, and the 3- and 5-epoch cells would not be there to compare. So
`MemberCallback` splits each trial's per-epoch results into its members, and each tracker logs
what cells.csv and history.csv hold: per cell, its config flattened (with its own `epochs`)
and its metrics by epoch, under cells.csv's `cell_id`.

MLflow is written with `MlflowClient` rather than Ray's `_MLflowLoggerUtil`: the utility sets
the process-wide tracking URI (a notebook's own MLflow would log there afterwards) and, for a
run id it cannot find, logs to the active run instead, which in a notebook is the user's.
Parameters are flattened as Ray's callback flattens them (`flatten_dict`, `a/b`), so names
read the same.

Resume. Tune keeps its callbacks with the run (they are pickled in the run folder, and their
state, `get_state`, in its snapshots), so a resumed sweep logs to where it started, whatever
`--logger` says then (`check_resume` refuses a different one). An MLflow entry is found again
by its tags (this sweep's id and the cell id) and epochs it already has are skipped, so a
resume continues each entry and never duplicates it; W&B resumes its runs by a stable id.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from raygenre.config import METRICS, ConfigError
from raygenre.grid.file import unpack
from raygenre.grid.objective import Objective
from raygenre.paths import RunPaths
from raygenre.report.records import member_ids

LOGGED = (*METRICS, "lr")  # what a trial reports per epoch, by cells.csv's names
# A member's status as cells.csv writes it, and as MLflow ends its run.
MLFLOW_STATUS = {"completed": "FINISHED", "stopped_early": "KILLED", "error": "FAILED"}


@dataclass
class Member:
    """One cell of a Tune trial, as it has reported so far."""

    cell_id: str  # cells.csv's: the trial's id, or TRIAL:eN for a shared trial's member
    trial_id: str  # Tune's trial id
    epochs: int
    params: dict[str, Any]  # its config, flattened, with its own epochs
    history: dict[int, dict[str, float]] = field(default_factory=dict)  # epoch -> metrics
    status: str | None = None  # completed / stopped_early / error once it ended

    def rows(self) -> list[dict[str, Any]]:
        """Its history as history.csv rows (what `best_epoch` reads)."""
        return [{"epoch": e, **self.history[e]} for e in sorted(self.history)]

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickled by a sweep started before the words changed (Tune restores callbacks with
        # their members): its `trial_id` was the cell's id, its `run_id` Tune's.
        if "run_id" in state:
            state = {**state, "cell_id": state["trial_id"], "trial_id": state.pop("run_id")}
        self.__dict__.update(state)


def split_trial(trial_id: str, config: dict[str, Any]) -> list[Member]:
    """The cells a Tune trial stands for, with cells.csv's ids and configs."""
    from ray.tune.utils import flatten_dict

    flat, variant, epochs = unpack(config)
    out = []
    for cid, e in zip(member_ids(trial_id, epochs), epochs, strict=True):
        params = flatten_dict({**({"variant": variant} if variant else {}), **flat,
                               "epochs": e}, delimiter="/")
        out.append(Member(cid, trial_id, e, params))
    return out


class MemberCallback(tune.Callback):
    """Splits each trial's per-epoch results into its members: `member_epoch` for each epoch a
    member has (a trial's epoch 4 is no epoch of its 3-epoch member), `member_end` once when it
    ends: at its own last epoch, or when the trial ends short of it (ASHA, an error)."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        # By Tune trial id. Set here, not in setup: on a resume Tune restores it (set_state)
        # from its snapshot, and setup must not clear what says which epochs were logged.
        self.members: dict[str, list[Member]] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Tune restores callbacks from the run folder. One pickled before it was given the
        # grid's objective kept its metric and mode, and logged the best epoch's value: a
        # resumed sweep of that age goes on logging what it logged.
        if "objective" not in state:
            state = {**state, "objective": Objective(state.get("metric", "val/acc"),
                                                     state.get("mode", "max"), "best")}
        self.__dict__.update(state)

    def get_state(self) -> dict[str, Any] | None:
        return {"members": self.members}

    def set_state(self, state: dict[str, Any]) -> None:
        self.members = state.get("members", {})

    def member_epoch(self, trial: Any, member: Member, epoch: int,
                     metrics: dict[str, float]) -> None:
        """A member's epoch, once per epoch (also across a resume)."""

    def member_end(self, trial: Any, member: Member) -> None:
        """A member ended; `member.status` says how."""

    def members_of(self, trial: Any) -> list[Member]:
        if trial.trial_id not in self.members:
            self.members[trial.trial_id] = split_trial(trial.trial_id, trial.config)
        return self.members[trial.trial_id]

    def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
        if result.get("epoch") is None:
            return
        epoch = int(result["epoch"])
        metrics = {m: float(result[m]) for m in LOGGED
                   if isinstance(result.get(m), (int, float)) and not isinstance(result[m], bool)}
        for m in self.members_of(trial):
            # Past its last epoch, or seen before (a trial resumed from an earlier checkpoint
            # than its last report repeats epochs).
            if epoch > m.epochs or epoch in m.history:
                continue
            m.history[epoch] = metrics
            m.status = None  # a trial resumed after an error goes on: so does its member
            self.member_epoch(trial, m, epoch, metrics)
            if epoch == m.epochs:
                m.status = "completed"
                self.member_end(trial, m)

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
        self._end_trial(trial, "stopped_early")  # a member not completed by now: ASHA stopped it

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
        self._end_trial(trial, "error")

    def _end_trial(self, trial: Any, status: str) -> None:
        for m in self.members_of(trial):
            if m.status is None:
                m.status = status
                self.member_end(trial, m)

    def summary(self, member: Member) -> dict[str, float]:
        """What a member's row in cells.csv sums it up by: its final metrics, and its judged
        figure (`judged`)."""
        rows = member.rows()
        out = {k: v for k, v in rows[-1].items() if k in METRICS} if rows else {}
        return {**out, **self.judged(member)}

    def judged(self, member: Member) -> dict[str, float]:
        """The figure the grid judges a cell by, under cells.csv's names: the objective at the
        epoch the grid's rule picks (`last/<metric>` at the last epoch by default,
        `best/<metric>` under early stopping: Objective.column), and `judged_epoch`. Empty
        where that epoch has no finite value (a diverged last epoch)."""
        row = self.objective.judged_epoch(member.rows())
        if row is None:
            return {}
        return {self.objective.column: row[self.objective.metric],
                "judged_epoch": float(row["epoch"])}


def tracking_uri(results_root: Path) -> str:
    """MLflow's store: $MLFLOW_TRACKING_URI (a server, Databricks, ...), else a file store
    beside the results, `<results>/mlflow` (`mlflow ui --backend-store-uri` on it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (results_root / "mlflow").as_uri()


class MLflowMembers(MemberCallback):
    """One MLflow run per cell, in one experiment per sweep (the grid's name, or
    $MLFLOW_EXPERIMENT_NAME): its flattened config as parameters, its metrics by epoch
    (`step` = epoch), its status and cells.csv's ids as tags."""

    def __init__(self, uri: str, experiment: str, tags: dict[str, str],
                 objective: Objective) -> None:
        super().__init__(objective)
        self.uri, self.experiment, self.tags = uri, experiment, tags
        # This sweep's id: pickled with the callback in the run folder, so a resume finds the
        # entries it logged; a --fresh start gets a new id and new entries.
        self.sweep = uuid.uuid4().hex

    def connect(self) -> None:
        """The client and the experiment (created if new): called before Tune starts too, so
        a store that cannot be used fails as a bad --logger, not inside Tune."""
        from mlflow import MlflowClient

        if self.uri.startswith("file:"):
            # MLflow 3 keeps its file store "in maintenance mode" and refuses it unless asked.
            # It is the store that needs no server and no database (the skinny client has no
            # SQL store): what a sweep on a laptop wants. A store of your own:
            # MLFLOW_TRACKING_URI.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(self.experiment)
        self.experiment_id = (found.experiment_id if found is not None
                              else self.client.create_experiment(self.experiment))

    def setup(self, **info: Any) -> None:
        self.connect()
        self.run_ids = self._logged_before()
        self.epochs_had: dict[str, int] = {}  # an entry's last epoch logged, once looked up

    def _logged_before(self) -> dict[str, str]:
        """cell id -> MLflow run id of this sweep's entries (some, on a resume)."""
        found, token = {}, None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`raygenre.sweep` = '{self.sweep}'",
                max_results=1000, page_token=token)
            found.update({r.data.tags["raygenre.cell_id"]: r.info.run_id for r in page})
            token = page.token
            if not token:
                return found

    def _run(self, member: Member) -> str:
        from mlflow.entities import Param

        run_id = self.run_ids.get(member.cell_id)
        if run_id is not None:
            if run_id not in self.epochs_had:  # an entry from before a resume
                self.epochs_had[run_id] = max(
                    (m.step for k in LOGGED
                     for m in self.client.get_metric_history(run_id, k)), default=0)
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=member.cell_id, tags={
            **self.tags, "raygenre.sweep": self.sweep, "raygenre.cell_id": member.cell_id,
            "raygenre.trial_id": member.trial_id})
        run_id = self.run_ids[member.cell_id] = run.info.run_id
        self.epochs_had[run_id] = 0
        params = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
                  for k, v in member.params.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 per batch
            self.client.log_batch(run_id, params=params[i:i + 100])
        return run_id

    def member_epoch(self, trial: Any, member: Member, epoch: int,
                     metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        run_id = self._run(member)
        if epoch <= self.epochs_had[run_id]:
            return  # logged before the resume (Tune's snapshot was older than the entry)
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, epoch)
                                               for k, v in metrics.items()])
        self.epochs_had[run_id] = epoch

    def member_end(self, trial: Any, member: Member) -> None:
        from mlflow.entities import Metric

        # A member that reported nothing (its trial failed first) still gets its entry, as it
        # gets its row in cells.csv.
        run_id = self._run(member)
        now = int(time.time() * 1000)
        last = max(member.history, default=0)
        # Its judged figure at its last epoch, so MLflow's table shows it beside the parameters.
        summary = self.judged(member)
        if summary:
            self.client.log_batch(run_id, metrics=[Metric(k, v, now, last)
                                                   for k, v in summary.items()])
        assert member.status is not None
        self.client.set_tag(run_id, "raygenre.status", member.status)
        self.client.set_terminated(run_id, MLFLOW_STATUS[member.status])


class WandbMembers(MemberCallback):
    """One W&B run per cell, in the project named by $WANDB_PROJECT or the grid, grouped
    by sweep: its flattened config, its metrics by epoch (`step` = epoch).

    Several cells train at once, so several W&B runs are open in this one process
    (reinit="create_new"). Each has a stable id (this sweep's and the cell's), so a resume
    continues it; W&B drops steps it already has."""

    def __init__(self, project: str, group: str, folder: str, objective: Objective) -> None:
        super().__init__(objective)
        self.project, self.group, self.folder = project, group, folder
        self.sweep = uuid.uuid4().hex[:8]  # as MLflowMembers.sweep

    def setup(self, **info: Any) -> None:
        import wandb

        self.wandb = wandb
        self.open: dict[str, Any] = {}

    def _run(self, member: Member) -> Any:
        if member.cell_id not in self.open:
            Path(self.folder).mkdir(parents=True, exist_ok=True)
            self.open[member.cell_id] = self.wandb.init(
                project=os.environ.get("WANDB_PROJECT") or self.project, group=self.group,
                name=member.cell_id, config=member.params, dir=self.folder,
                # W&B ids take no ':' (TRIAL:eN).
                id=f"{self.sweep}-{member.cell_id.replace(':', '-')}", resume="allow",
                reinit="create_new")
        return self.open[member.cell_id]

    def member_epoch(self, trial: Any, member: Member, epoch: int,
                     metrics: dict[str, float]) -> None:
        self._run(member).log({**metrics, "epoch": epoch}, step=epoch)

    def member_end(self, trial: Any, member: Member) -> None:
        run = self._run(member)
        run.summary.update({**self.summary(member), "status": member.status})
        run.finish(exit_code=1 if member.status == "error" else 0)
        del self.open[member.cell_id]

    def on_experiment_end(self, trials, **info):  # noqa: ANN001
        # Runs still open: the sweep was interrupted. Finished here; a resume reopens them.
        for run in self.open.values():
            run.finish()
        self.open.clear()


def build(names: Sequence[str], paths: RunPaths, grid_name: str,
          objective: Objective) -> tuple[list[tune.Callback], list[str]]:
    """The callbacks for `--logger`, and a line for each saying where it logs."""
    callbacks: list[tune.Callback] = []
    lines = []
    for name in names:
        if name == "mlflow":
            uri = tracking_uri(paths.results_root)
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or paths.name
            mlflow = MLflowMembers(uri, experiment, {
                "raygenre.grid": grid_name, "raygenre.run_folder": str(paths.experiment)},
                objective)
            try:
                mlflow.connect()
            except Exception as e:  # MlflowException, or the server's connection error
                raise ConfigError(f"--logger mlflow: cannot use the MLflow store {uri} "
                                  f"(experiment {experiment!r}): {str(e).splitlines()[0]}"
                                  ) from e
            del mlflow.client  # Tune pickles the callback with the run; setup() connects
            callbacks.append(mlflow)
            lines.append(f"MLflow: experiment {experiment!r} in {uri}, one run per cell")
        elif name == "wandb":
            check_wandb_login()
            project = os.environ.get("WANDB_PROJECT") or paths.name.replace("/", "-")
            callbacks.append(WandbMembers(project, paths.name, str(paths.results_root),
                                          objective))
            lines.append(f"W&B: project {project!r}, one run per cell")
    return callbacks, lines


# W&B modes that need no account: local files (`wandb sync` uploads them later), or nothing.
WANDB_LOCAL_MODES = ("offline", "dryrun", "disabled")


def check_wandb_login() -> None:
    """W&B online needs an API key. Without one, `wandb.init` fails inside Tune's callback at
    the first epoch, after Ray and the trials have started; found here, before them, it is a
    usage error that says what to do."""
    if os.environ.get("WANDB_MODE", "online") in WANDB_LOCAL_MODES:
        return
    import wandb

    # No prompt: the sweep may run without a terminal; verify=False: no network call.
    if not wandb.login(verify=False, prompt=False):
        raise ConfigError("--logger wandb: no W&B API key found (set WANDB_API_KEY or run "
                          "`wandb login`); or set WANDB_MODE=offline to log to local files "
                          "under the results folder and upload them later with `wandb sync`")


def record(paths: RunPaths, names: Sequence[str], lines: list[str]) -> None:
    """What the run was started with (Tune keeps the callbacks themselves): `check_resume`
    compares a resume's --logger with it."""
    paths.loggers.write_text(json.dumps({"loggers": list(names), "where": lines}, indent=1))


def check_resume(paths: RunPaths, names: Sequence[str]) -> list[str]:
    """A resume logs where the run started: Tune restores its callbacks from the run folder,
    and a tracker changed halfway would hold half a sweep. Without --logger that is what
    happens; a different --logger is refused. Returns where it logs, to print."""
    started = {"loggers": [], "where": []}
    if paths.loggers.exists():  # a run started before --logger existed logged nowhere
        started = json.loads(paths.loggers.read_text())
    if names and sorted(set(names)) != sorted(set(started["loggers"])):
        was = ",".join(started["loggers"]) or "none"
        raise ConfigError(f"--logger {','.join(names)}: this run was started with --logger "
                          f"{was}, and a resume logs where it started (Tune keeps its "
                          f"callbacks with the run). Resume with that --logger (or none), or "
                          f"start over with --fresh.")
    return started["where"]
