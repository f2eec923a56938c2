from __future__ import annotations

import json

import pytest
import torch

from raygenre.config import Config
from raygenre.train import META_FILE, STATE_FILE, build, load_checkpoint, run_epoch, split_config


def test_split_config_separates_runtime_facts() -> None:
    cfg, rt = split_config({**Config(lr=0.01).to_dict(), "num_classes": 4,
                            "segment_samples": 100, "threads": 1})
    assert cfg.lr == 0.01 and rt == {"num_classes": 4, "segment_samples": 100, "threads": 1}
    with pytest.raises(KeyError, match="num_classes"):
        split_config(Config().to_dict())


def test_run_epoch_learns_and_checkpoint_reloads(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = Config(model="mlp", features="waveform", hidden=(32,), lr=1e-2)
    rt = {"num_classes": 2, "segment_samples": 64}
    feats, model = build(cfg, rt)
    x = torch.randn(64, 64)
    y = (x[:, 0] > 0).long()
    batches = [{"x": x[i:i + 16], "label": y[i:i + 16]} for i in range(0, 64, 16)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first, _ = run_epoch(model, feats, batches, torch.device("cpu"), opt)
    for _ in range(20):
        last, acc = run_epoch(model, feats, batches, torch.device("cpu"), opt)
    assert last < first and acc > 0.9
    torch.save({"model": model.state_dict()}, tmp_path / STATE_FILE)
    (tmp_path / META_FILE).write_text(json.dumps({"config": cfg.to_dict(), "runtime": rt,
                                                  "metrics": {"epoch": 21}}))
    _, again, meta = load_checkpoint(tmp_path)
    assert meta["metrics"]["epoch"] == 21
    model.eval()
    assert torch.equal(again(x), model(x))
