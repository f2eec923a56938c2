"""bench/ measures the library, so it builds what it times through the library: a trial's
model, optimizer, schedule and augmentation through `builder.build_training`, its passes through
the loop's own `run_epoch` (`loop.train_epoch`). A bench that rebuilds any of them, copies the
loss or mixup, or reaches a private name of raygenre drifts from the loop unnoticed (issue 39:
bench/epoch_cost.py once trained with label smoothing fixed at 0.1 whatever the config said)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
# What build_training (and nothing else) puts together, and what run_epoch computes.
BUILDERS = {"build", "build_model", "build_optimizer", "build_scheduler", "build_augment",
            "make_deterministic", "WeightAverage", "cross_entropy", "Beta"}
# torch.nn constructors a bench may call: no weights, nothing a trial would build differently.
HARMLESS_NN = {"Identity", "Module"}


def _raygenre_names(tree: ast.Module) -> set[str]:
    """Local names bound to raygenre modules (`import raygenre.x as y`, `from raygenre import
    x`, `from raygenre.training import loop as train`)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names
                      if a.name.startswith("raygenre")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("raygenre"):
            names |= {a.asname or a.name for a in node.names}
    return names


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def violations(source: str, name: str = "<bench>") -> list[str]:
    """Each place in a bench's source that builds or computes what the loop does, or reads a
    private name of raygenre, as 'line: what'."""
    tree = ast.parse(source, name)
    ours = _raygenre_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("raygenre"):
            found += [f"{node.lineno}: imports {node.module}.{a.name} (private)"
                      for a in node.names if a.name.startswith("_")]
        elif (isinstance(node, ast.Attribute) and node.attr.startswith("_")
              and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
              and node.value.id in ours):
            found.append(f"{node.lineno}: reads {node.value.id}.{node.attr} (private)")
        elif isinstance(node, ast.Call):
            dotted = _dotted(node.func)
            last = dotted.rsplit(".", 1)[-1]
            if last in BUILDERS:
                found.append(f"{node.lineno}: calls {dotted}")
            elif ".optim." in f".{dotted}." and last[:1].isupper():
                found.append(f"{node.lineno}: builds an optimizer ({dotted})")
            elif (dotted.startswith(("nn.", "torch.nn.")) and last[:1].isupper()
                  and last not in HARMLESS_NN):
                found.append(f"{node.lineno}: builds a layer ({dotted})")
    return found


def test_the_scan_finds_what_a_bench_must_not_do() -> None:
    """What bench/epoch_cost.py did before issue 39 (its set-up and its copy of run_epoch)."""
    before = '''
from raygenre.training import loop as train
from raygenre.training.loop import build, make_deterministic
from raygenre.training.optim import build_optimizer
from raygenre.data.sets import _BlockWriter

def phases(cfg, runtime):
    make_deterministic(cfg)
    feats, model = build(cfg, runtime)
    opt = build_optimizer(model.parameters(), cfg)
    beta = torch.distributions.Beta(cfg.mixup, cfg.mixup)
    loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
    adam = torch.optim.Adam(model.parameters())
    head = torch.nn.Linear(4, 2)
    train._rng_state("cpu")
'''
    found = " | ".join(violations(before))
    for what in ("make_deterministic", "calls build", "build_optimizer", "Beta",
                 "cross_entropy", "torch.optim.Adam", "torch.nn.Linear", "_BlockWriter",
                 "train._rng_state"):
        assert what in found, what
    assert violations("from raygenre.training.builder import build_training\n"
                      "t = build_training(cfg, rt, 'cpu')\nf = torch.nn.Identity()\n") == []


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_a_bench_builds_and_trains_only_through_the_loop(path: Path) -> None:
    assert violations(path.read_text(), str(path)) == [], (
        f"{path.name} builds or computes what a trial does outside build_training / "
        f"train_epoch, or reads a private name of raygenre")
