"""Input representations, as modules that run on the worker's device after batching.

Segments are stored as waveforms, so one prepared data set serves every representation and the
STFT runs where the model runs (on the GPU when there is one).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchaudio
from torch import nn

from raygenre.config import Config


class Waveform(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Spectrogram(nn.Module):
    """The study's input: torchaudio's power spectrogram, one channel (B, 1, freq, frames)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.spec = torchaudio.transforms.Spectrogram(n_fft=cfg.n_fft, hop_length=cfg.hop_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spec(x).unsqueeze(1)


class LogMel(nn.Module):
    """Log-mel (dB): compresses the power spectrogram's dynamic range onto a perceptual axis."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.mel_n_fft, hop_length=cfg.hop_length,
            n_mels=cfg.n_mels)
        self.db = torchaudio.transforms.AmplitudeToDB(top_db=80.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.db(self.mel(x)).unsqueeze(1)


FEATURES: dict[str, Callable[[Config], nn.Module]] = {
    "waveform": lambda cfg: Waveform(),
    "spectrogram": Spectrogram,
    "logmel": LogMel,
}


def build_features(cfg: Config) -> nn.Module:
    return FEATURES[cfg.features](cfg)


def feature_shape(cfg: Config, n_samples: int) -> tuple[int, ...]:
    """Shape of one example's features (no batch axis), e.g. (1, 201, 552) for the study."""
    with torch.no_grad():
        return tuple(build_features(cfg)(torch.zeros(1, n_samples)).shape[1:])
