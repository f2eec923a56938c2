from __future__ import annotations

import math

import pytest
import torch

from raygenre.config import Config
from raygenre.data.features import FEATURES, build_features, feature_shape
from raygenre.training.models import (
    _POOLS,
    ACTIVATIONS,
    CNN1_CONVS,
    CNN2_CONVS,
    MODELS,
    build_model,
    conv_stack_shape,
    n_params,
)
from raygenre.training.optim import (
    OPTIMIZERS,
    SCHEDULERS,
    build_optimizer,
    build_scheduler,
    step_scheduler,
)

N = 22_050  # one second keeps these fast; shapes scale the same way
SMALL = {"n_fft": 126, "hop_length": 512}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("features", list(FEATURES))
def test_every_model_on_every_input_runs_forward_and_backward(model: str, features: str) -> None:
    cfg = Config(model=model, features=features, dropout=0.3, **SMALL)
    shape = feature_shape(cfg, N)
    if model != "mlp" and features == "waveform":
        with pytest.raises(ValueError, match="needs a 2-D input"):
            build_model(cfg, shape, 10)
        return
    net = build_model(cfg, shape, 10)
    x = build_features(cfg)(torch.randn(4, N))
    out = net(x)
    assert out.shape == (4, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


# How many activation layers each model's forward passes through, from its config: one per
# hidden layer or conv block, and the study CNNs' two hidden dense layers.
ACTIVATION_LAYERS = {
    "mlp": lambda c: len(c.hidden),
    "cnn1": lambda c: len(CNN1_CONVS) + 2,
    "cnn2": lambda c: len(CNN2_CONVS) + 2,
    "small_cnn": lambda c: len(c.cnn_channels),
}


@pytest.mark.parametrize("model", list(ACTIVATION_LAYERS))
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_every_activation(model: str, act: str) -> None:
    """`activation` is what every layer computes in the forward pass, in order ('mixed' cycles
    relu, leaky_relu, sigmoid from the first layer), and it changes the output: on the same
    weights, no other activation gives the same one."""
    features = "waveform" if model == "mlp" else "spectrogram"
    shape = feature_shape(Config(features=features, **SMALL), N)

    def build(a: str) -> torch.nn.Module:
        torch.manual_seed(0)  # activations hold no weights: every choice gets the same ones
        return build_model(Config(model=model, features=features, activation=a, **SMALL),
                           shape, 5)

    net = build(act)
    called: list[str] = []
    for m in net.modules():
        if type(m).__module__ == torch.nn.modules.activation.__name__:
            m.register_forward_hook(lambda mod, _i, _o: called.append(type(mod).__name__))
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    out = net(x)
    assert out.shape == (2, 5)
    cycle = {"relu": ["ReLU"], "leaky_relu": ["LeakyReLU"], "sigmoid": ["Sigmoid"],
             "mixed": ["ReLU", "LeakyReLU", "Sigmoid"]}[act]
    n = ACTIVATION_LAYERS[model](Config())
    assert called == [cycle[i % len(cycle)] for i in range(n)]
    for other in ACTIVATIONS:
        if other != act:
            assert not torch.allclose(build(other)(x), out), other


def test_study_shapes() -> None:
    """The study's numbers: 201x552 spectrogram, CNN1 flattens 64x50x138 into 128 units."""
    cfg = Config()
    assert feature_shape(cfg, 5 * 22_050) == (1, 201, 552)
    cnn1 = build_model(cfg, (1, 201, 552), 10)
    assert cnn1.head[1].in_features == 64 * 50 * 138
    assert n_params(cnn1) == 56_563_850
    mlp = build_model(Config(model="mlp", features="waveform"), (110_250,), 10)
    assert [m.out_features for m in mlp.modules() if isinstance(m, torch.nn.Linear)] == [64, 64, 10]


@pytest.mark.parametrize("convs", [CNN1_CONVS, CNN2_CONVS], ids=["cnn1", "cnn2"])
def test_conv_stack_shape_is_what_a_forward_gives(convs) -> None:  # noqa: ANN001
    """The study CNNs size their dense layer by arithmetic (no dry forward): it must agree with
    a real forward on every input size, and refuse exactly the sizes a forward cannot take."""
    blocks, ch = [], 1
    for out, k, pad, pool in convs:
        blocks += [torch.nn.Conv2d(ch, out, k, padding=pad), _POOLS[pool](2)]
        ch = out
    stack = torch.nn.Sequential(*blocks)
    refused = 0
    for h in range(1, 24):
        for w in (1, 3, 8, 9, 108, 553):
            try:
                real = tuple(stack(torch.zeros(1, 1, h, w)).shape[1:])
            except RuntimeError:
                real = None
            try:
                mine = conv_stack_shape((1, h, w), convs)
            except ValueError as e:
                assert "too small" in str(e)
                mine = None
            refused += mine is None
            assert mine == real, (h, w)
    assert 0 < refused < 23 * 6


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("sched", list(SCHEDULERS))
def test_every_optimizer_and_scheduler_steps(opt: str, sched: str) -> None:
    """Each registry entry is the optimizer and schedule it names: the first step of each
    optimizer (with the study's L2 added to the gradient), and the lr after three epochs."""
    cfg = Config(optimizer=opt, scheduler=sched, lr=0.1, weight_decay=1e-3, plateau_patience=0,
                 epochs=5)
    w = torch.nn.Parameter(torch.ones(3))
    o = build_optimizer([w], cfg)
    s = build_scheduler(o, cfg)
    for step in range(3):
        o.zero_grad()
        (w**2).sum().backward()  # gradient 2w, plus 1e-3 w of L2
        o.step()
        if step == 0:
            # SGD: w - lr * g; Adam's first step is lr * sign(g) whatever g's size.
            first = {"sgd": 1 - 0.1 * 2.001, "adam": 1 - 0.1}[opt]
            assert w.detach() == pytest.approx(torch.full((3,), first), abs=1e-6)
        step_scheduler(s, val_loss=1.0)  # flat loss: plateau must cut the lr
    lr = o.param_groups[0]["lr"]
    want = {"none": 0.1, "exponential": 0.1 * 0.95**3,
            "plateau": 0.1 * 0.5**2,  # best set at step 1, then two bad epochs (patience 0)
            "cosine": 0.1 * (1 + math.cos(math.pi * 3 / 5)) / 2}[sched]
    assert lr == pytest.approx(want)


def test_logmel_of_a_clip_does_not_depend_on_its_batch() -> None:
    torch.manual_seed(0)
    cfg = Config(features="logmel", hop_length=1024)
    quiet, loud = torch.randn(1, N) * 1e-4, torch.randn(1, N)
    feats = build_features(cfg)
    assert torch.allclose(feats(quiet), feats(torch.cat([quiet, loud]))[:1])
