"""Models and activations by name. Variants are constructor arguments, never copied classes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from raygenre.config import Config

# "mixed" (study exercise 4) cycles through the three across layers, in this order.
_MIXED = ("relu", "leaky_relu", "sigmoid")
_PLAIN: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid,
}
ACTIVATIONS: dict[str, Callable[[int], nn.Module]] = {
    **{name: (lambda i, f=f: f()) for name, f in _PLAIN.items()},
    "mixed": lambda i: _PLAIN[_MIXED[i % len(_MIXED)]](),
}


def activation(name: str, layer: int) -> nn.Module:
    """The activation module for `layer` (the index matters only for 'mixed')."""
    return ACTIVATIONS[name](layer)


class MLP(nn.Module):
    """Dense layers on a flat input (the study's waveform baseline and random MLPs)."""

    def __init__(self, in_shape: Sequence[int], n_classes: int, hidden: Sequence[int],
                 act: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for i, h in enumerate(hidden):
            layers += [nn.Linear(width, h), activation(act, i)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# (out_channels, kernel, padding, pool) per conv block, as the study describes them.
CNN1_CONVS = ((32, 9, 4, "max"), (64, 3, 1, "max"))
CNN2_CONVS = ((32, 9, 4, "max"), (64, 3, 1, "max"), (64, 3, 1, "avg"))
_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def conv_stack_shape(in_shape: Sequence[int], convs: Sequence[tuple[int, int, int, str]]
                     ) -> tuple[int, int, int]:
    """(channels, height, width) after the conv blocks (stride-1 convs, 2x2 pools), by
    arithmetic: a dry forward on the meta device, as the sweep's pre-flight check builds
    models, makes torch import ~900 modules (1.4 s of every sweep's start, bench/overhead.py)."""
    ch, h, w = in_shape
    for out, k, pad, _pool in convs:
        h, w = (h + 2 * pad - k + 1) // 2, (w + 2 * pad - k + 1) // 2
        if h < 1 or w < 1:
            raise ValueError(f"input {tuple(in_shape)} is too small for the conv blocks "
                             f"{[c[:3] for c in convs]}: nothing left after block "
                             f"{out}x{k}x{k}")
        ch = out
    return ch, h, w


class StudyCNN(nn.Module):
    """Conv blocks (conv, activation, 2x2 pool), flatten, dense 128 -> 128 -> classes.

    At the study's 201x552 input CNN1 flattens 64x50x138 values into its first dense layer.
    """

    def __init__(self, in_shape: Sequence[int], n_classes: int,
                 convs: Sequence[tuple[int, int, int, str]], act: str = "relu",
                 dropout: float = 0.0, fc_width: int = 128) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        ch = in_shape[0]
        for i, (out, k, pad, pool) in enumerate(convs):
            blocks += [nn.Conv2d(ch, out, k, padding=pad), activation(act, i), _POOLS[pool](2)]
            ch = out
        self.features = nn.Sequential(*blocks)
        flat = math.prod(conv_stack_shape(in_shape, convs))
        n = len(convs)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(flat, fc_width), activation(act, n)]
        if dropout:
            head.append(nn.Dropout(dropout))
        head += [nn.Linear(fc_width, fc_width), activation(act, n + 1)]
        if dropout:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(fc_width, n_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCNN(nn.Module):
    """Conv 3x3 + batch norm + activation + 2x2 max pool per block, global average pooling,
    one linear layer. Few weights, and any input size (no flatten of a fixed map)."""

    def __init__(self, in_shape: Sequence[int], n_classes: int, channels: Sequence[int],
                 act: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        ch = in_shape[0]
        for i, out in enumerate(channels):
            blocks += [nn.Conv2d(ch, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       activation(act, i), nn.MaxPool2d(2)]
            ch = out
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(ch, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BandStatsLinear(nn.Module):
    """A linear classifier on each band's mean and standard deviation over time: the classic
    "bag of frames" baseline. What it cannot see (order in time, joint patterns across bands)
    is what a deeper model has to earn its keep on."""

    def __init__(self, in_shape: Sequence[int], n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * in_shape[0] * in_shape[1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = torch.cat([x.mean(dim=-1), x.std(dim=-1)], dim=-1)  # (B, C, 2 * bands)
        return self.linear(stats.flatten(1))


ModelFn = Callable[[Config, Sequence[int], int], nn.Module]
MODELS: dict[str, ModelFn] = {
    "mlp": lambda c, shape, n: MLP(shape, n, c.hidden, c.activation, c.dropout),
    "cnn1": lambda c, shape, n: StudyCNN(shape, n, CNN1_CONVS, c.activation, c.dropout,
                                         c.fc_width),
    "cnn2": lambda c, shape, n: StudyCNN(shape, n, CNN2_CONVS, c.activation, c.dropout,
                                         c.fc_width),
    "small_cnn": lambda c, shape, n: SmallCNN(shape, n, c.cnn_channels, c.activation, c.dropout),
    "band_linear": lambda c, shape, n: BandStatsLinear(shape, n),
}


def build_model(cfg: Config, in_shape: Sequence[int], n_classes: int) -> nn.Module:
    if len(in_shape) < 3 and cfg.model != "mlp":
        raise ValueError(f"model {cfg.model!r} needs a 2-D input (features: spectrogram or "
                         f"logmel), got features {cfg.features!r} of shape {tuple(in_shape)}")
    return MODELS[cfg.model](cfg, in_shape, n_classes)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
