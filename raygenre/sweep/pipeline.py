"""`all`: the study's seven stages in order, each from the winners of those before it.

A stage is reused only when everything that shaped its numbers is what this command would use
now (grid file content, config, prepared data, seed, carried keys, per-trial arithmetic); an
interrupted stage is resumed under the same condition; otherwise the stage runs again and the
command says why.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ray import tune

from raygenre.config import ConfigError
from raygenre.grid.file import load_grid
from raygenre.grid.options import RunOptions
from raygenre.paths import RunPaths, default_storage
from raygenre.report import write_pipeline
from raygenre.storage import Location, StorageError, check_places
from raygenre.sweep import run_state
from raygenre.sweep.cluster import check_storage, cluster_nodes, joined_address, start_ray
from raygenre.sweep.tuner import resolve_before_start, run_sweep, set_up

# The study's order: each stage starts from the winners of the stages before it.
STAGES = ("baseline", "random_mlp", "cnn", "activations", "optimizers", "batch_epoch",
          "regularization")


def run_pipeline(opts: RunOptions) -> Path:
    """Run (or continue) the pipeline; returns pipeline.md's path."""
    stages = list(opts.stages or STAGES)
    # All checked first, before Ray: each stage resolved under the presets it can get, as it
    # runs when nothing is carried to it (what is carried is known only once its stages ran).
    grids = [load_grid(s, opts.seed, opts.grids, opts.replicates) for s in stages]
    if opts.smoke:
        grids = [g.smoke() for g in grids]
    resolved = [resolve_before_start(g, opts) for g in grids]
    top = "all" + ("-smoke" if opts.smoke else "")
    storage = Location.parse(opts.storage or default_storage())
    check_places(storage, opts.cache)
    results_root = opts.results_root
    source = run_state.data_source(opts.data)
    # The pipeline resumes and reuses stages by itself, and redoes one whose data changed: a
    # stage on another data set would be replaced without a word, so it is refused as a
    # single sweep is (without the --resume allowance: the pipeline cannot tell a moved
    # folder from another data set before it reads it).
    for grid in grids:
        run_state.refuse_other_data(RunPaths(storage=storage, name=f"{top}/{grid.name}",
                                             results_root=results_root),
                                    source, resume=False, fresh=opts.fresh)
    if opts.fresh:
        (storage / top).rmtree()
        try:
            shutil.rmtree(results_root / top)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"--fresh: cannot delete the old results {results_root / top} "
                               f"({e}); delete it by hand or choose another --results") from e
    start_ray(opts.address)
    joined = bool(joined_address(opts.address))
    check_storage(storage, joined)
    nodes = cluster_nodes(joined)
    carried: dict[str, Any] = {}
    rows = []
    for grid, uncarried in zip(grids, resolved, strict=True):
        paths = RunPaths(storage=storage, name=f"{top}/{grid.name}", results_root=results_root)
        setup = set_up(resolve_before_start(grid, opts, carried) if carried else uncarried,
                       opts, nodes)
        done = paths.results / "best.json"
        best = json.loads(done.read_text()) if done.exists() else None
        stored = (best or {}).get("shaped_by")
        if best is not None and not run_state.differences(stored or {}, setup.fingerprint):
            print(f"[all] {grid.name}: finished earlier with the same grid, data, seed and "
                  f"options ({grid.metric} {best[grid.metric]:.3f}); skipped")
        else:
            if best is not None:
                why = "; ".join(run_state.differences(stored or {}, setup.fingerprint))
                print(f"[all] {grid.name}: the results in {done.parent} were made otherwise "
                      f"({why}); running the stage again")
            best = run_sweep(setup, opts, paths, _restorable(paths, setup.fingerprint))
        rows.append(best)
        # A winner tied with others carries the configuration best.json's `carry` chose by
        # its rule (report.verdict.CARRY_RULE); a stage written before that carries its winner.
        source = (best.get("carry") or {}).get("config", best["config"])
        carried = {**carried, **{k: source[k] for k in grid.next_stage_keys}}
    return write_pipeline(rows, results_root, top)


def _restorable(paths: RunPaths, fingerprint: dict[str, Any]) -> bool:
    """An interrupted stage resumes if it was started as this command would start it; any
    other run in its folder is cleared (the stage starts over) and the reason printed."""
    if not paths.experiment.exists():
        return False
    why = None
    if not tune.Tuner.can_restore(str(paths.experiment)):
        why = "it holds no restorable run"
    else:
        try:
            run_state.check_manifest(paths, fingerprint)
        except ConfigError as e:
            why = str(e)
    if why is None:
        return True
    print(f"[all] {paths.name}: not resuming the stored run ({why}); starting it over")
    paths.experiment.rmtree()
    return False
