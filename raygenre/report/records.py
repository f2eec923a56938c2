"""From Tune's trials to cells: one row per grid cell, each read from the trial that stood for it.

A trial is what Tune ran: one cell, or several that differ only in `epochs` (each shorter one
is the first epochs of the longest). Its record holds its whole metric history and where its
checkpoints are. A member of e epochs reads the trial's first e epochs, is judged at its last
epoch (or, where the grid says `judge_epoch: best`, its best among them), and is tested at that
epoch's checkpoint: the trial's latest or best (both kept by Tune) when the member is the
trial's longest, or the copy the trial kept for it (`members/<trial>/epoch_NNNN`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raygenre.config import METRICS
from raygenre.grid.file import Grid
from raygenre.grid.objective import Objective, best_epoch
from raygenre.paths import epoch_dir
from raygenre.storage import Location
from raygenre.training.checkpoints import META_FILE, STATE_FILE


@dataclass
class TrialRecord:
    """One finished (or failed) Tune trial, as the sweep left it."""

    trial_id: str
    config: dict[str, Any]  # config values of its longest cell
    variant: str | None
    members: list[int]  # the epoch count of each cell it stands for
    history: list[dict[str, Any]]  # per epoch, from its latest checkpoint
    error: str = ""
    wall_s: float | None = None
    best: Location | None = None  # its best checkpoint over all its epochs
    pins: Location | None = None  # where it kept its shorter members' checkpoints
    latest: Location | None = None  # its latest checkpoint: every epoch's val predictions


def whole_checkpoints(folder: Location | Path, max_epoch: int | None = None
                      ) -> list[tuple[Location, dict]]:
    """(folder, meta) of each whole `epoch_NNNN` checkpoint under `folder`, oldest first.

    Used where checkpoints are not Tune's own: a data-parallel trial's Ray Train run (Train
    keeps its checkpoints and Tune only sees their paths) and the copies a shared trial keeps
    for its members. Skips a checkpoint whose state file is not the size its meta recorded (a copy
    cut short when ASHA stopped the trial), and epochs after `max_epoch`, the last one Tune saw:
    a worker may finish an epoch after ASHA's stop, and that epoch is not part of the sweep.
    """
    out = []
    folder = Location.parse(folder, "checkpoint folder")
    for d in (folder / n for n in folder.listdir() if n.startswith("epoch_")):
        try:
            meta = json.loads((d / META_FILE).read_text())
            whole = (d / STATE_FILE).size() == meta.get("state_bytes")
        except (OSError, ValueError):
            continue
        if whole and (max_epoch is None or meta["metrics"]["epoch"] <= max_epoch):
            out.append((d, meta))
    return out


def best_of(found: list[tuple[Location, dict]], objective: Objective) -> Location | None:
    """The checkpoint at the best epoch by the objective (the latest on a tie, as Tune keeps)."""
    metas = {m["metrics"]["epoch"]: d for d, m in found}
    best = best_epoch([m["metrics"] for _, m in found], objective.metric, objective.mode)
    return metas[best["epoch"]] if best else None


def member_ids(trial_id: str, members: list[int]) -> list[str]:
    """The cell ids of a trial's members, as the tables write them: the trial's id for a trial
    of one cell, TRIAL:eN for each of a shared trial's (TRIAL:eN-2, ... for a repeated count)."""
    if len(members) == 1:
        return [trial_id]
    ids, seen = [], {}
    for e in members:
        seen[e] = seen.get(e, 0) + 1
        ids.append(f"{trial_id}:e{e}" + (f"-{seen[e]}" if members.count(e) > 1 else ""))
    return ids


def cell_rows(records: list[TrialRecord], grid: Grid, objective: Objective
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(one row per cell, one row per cell and epoch). Private keys (leading `_`) carry the
    cell's config, its test checkpoint and its trial's record to the report; CSV files leave
    them out."""
    cells, history = [], []
    for r in records:
        last = r.history[-1]["epoch"] if r.history else 0
        for cid, e in zip(member_ids(r.trial_id, r.members), r.members, strict=True):
            config = {**r.config, "epochs": e}
            swept = {k: (r.variant if k == "variant" else config.get(k)) for k in grid.swept}
            upto = min(e, last)
            own = [h for h in r.history if h["epoch"] <= upto]
            for h in own:
                history.append({"cell_id": cid, **swept, "epoch": h["epoch"],
                                **{m: h.get(m) for m in METRICS}})
            final = own[-1] if own else {}
            best = best_epoch(own, objective.metric, objective.mode)
            judged = objective.judged_epoch(own)
            if upto == last:
                checkpoint = r.best if objective.epoch == "best" else r.latest
            else:
                checkpoint = (r.pins / epoch_dir(judged["epoch"]) if judged and r.pins
                              else None)
            status = ("completed" if upto == e and own else "error" if r.error
                      else "stopped_early")
            cells.append({
                "cell_id": cid, "status": status, **swept, "epoch": upto,
                **{m: final.get(m) for m in ("val/acc", "val/loss", "train/loss", "train/acc")},
                "best/val/acc": max((h["val/acc"] for h in own), default=None),
                objective.best_column: best[objective.metric] if best else None,
                "best_epoch": best["epoch"] if best else None,
                # What the cell is judged, compared and tested at (Objective.judged_epoch).
                objective.column: judged[objective.metric] if judged else None,
                "judged_epoch": judged["epoch"] if judged else None,
                "judged_at": objective.words,
                "trial_id": r.trial_id, "wall_s": r.wall_s, "train_s": final.get("train_s"),
                "node": final.get("node", ""),
                "error": r.error if upto < e or not own else "",
                # Where its judged epoch's weights are: what it is tested at, what to load.
                "checkpoint": str(checkpoint) if checkpoint is not None else "",
                "_config": config, "_checkpoint": checkpoint, "_trial": r,
            })
    return cells, history


def pick_best(cells: list[dict[str, Any]], objective: Objective) -> dict[str, Any] | None:
    """The sweep's best cell: the best judged value of the objective; on a tie, the one that
    ran fewer epochs (the same numbers for less compute), then the grid's order."""
    sign = 1 if objective.mode == "max" else -1
    col = objective.column
    ok = [c for c in cells if c[col] is not None and not math.isnan(c[col])]
    if not ok:
        return None
    return max(ok, key=lambda c: (sign * c[col], -c["epoch"]))
