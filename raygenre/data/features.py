"""Input representations, as modules that run on the worker's device after batching.

Segments are stored as waveforms, so one prepared data set serves every representation and the
STFT runs where the model runs (on the GPU when there is one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from raygenre.config import Config
from raygenre.deps import torchaudio


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
        # The channel axis first: on (B, mels, T) AmplitudeToDB takes B for channels of one
        # example and sets its 80 dB floor from the loudest clip in the batch.
        return self.db(self.mel(x).unsqueeze(1))


def semitone_fbanks(sample_rate: int, n_fft: int, low: int, bins: int) -> torch.Tensor:
    """(n_fft // 2 + 1, bins) triangular filters centred on equal-tempered semitones from MIDI
    note `low`, each reaching its neighbours' centres and at least one FFT bin either side (so
    a low band whose semitone is narrower than a bin is never empty)."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    midi = torch.arange(low - 1, low + bins + 1, dtype=torch.float64)
    hz = 440.0 * 2 ** ((midi - 69) / 12)  # below Nyquist: config.check_config
    step = sample_rate / n_fft
    centre = hz[1:-1]
    left = torch.minimum(hz[:-2], centre - step)
    right = torch.maximum(hz[2:], centre + step)
    f = freqs[:, None]
    up = (f - left) / (centre - left)
    down = (right - f) / (right - centre)
    return torch.clamp(torch.minimum(up, down), min=0).float()


class Semitone(nn.Module):
    """Log power (dB) in one band per semitone (B, 1, bins, frames)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.spec = torchaudio.transforms.Spectrogram(n_fft=cfg.semitone_n_fft,
                                                      hop_length=cfg.hop_length)
        self.register_buffer("fb", semitone_fbanks(cfg.sample_rate, cfg.semitone_n_fft,
                                                   cfg.semitone_low, cfg.semitone_bins))
        self.db = torchaudio.transforms.AmplitudeToDB(top_db=80.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = torch.matmul(self.spec(x).transpose(-1, -2), self.fb).transpose(-1, -2)
        return self.db(bands.unsqueeze(1))  # channel axis first, as LogMel explains


class PitchShift(nn.Module):
    """Shift each example along a semitone axis by a random whole number of bands in
    [-max_shift, max_shift]; the bands shifted in are zero (the band mean, after band_norm)."""

    def __init__(self, max_shift: int) -> None:
        super().__init__()
        self.max_shift = max_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifts = torch.randint(-self.max_shift, self.max_shift + 1, (x.shape[0],),
                               device=x.device)
        bins = torch.arange(x.shape[-2], device=x.device)
        src = bins[None, :] - shifts[:, None]  # (B, bins): where each band comes from
        valid = (src >= 0) & (src < x.shape[-2])
        idx = src.clamp(0, x.shape[-2] - 1)[:, None, :, None].expand_as(x)
        return torch.gather(x, -2, idx) * valid[:, None, :, None]


class TimeCrop(nn.Module):
    """Keep a random window of round(fraction * frames) frames of each example, at its own
    offset; the batch's examples stay one length, so they stack."""

    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = fraction  # in (0, 1]: config.check_config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1]
        keep = max(1, round(self.fraction * frames))
        if keep >= frames:
            return x
        starts = torch.randint(0, frames - keep + 1, (x.shape[0],), device=x.device)
        idx = starts[:, None] + torch.arange(keep, device=x.device)[None, :]  # (B, keep)
        return torch.gather(x, -1, idx[:, None, None, :].expand(*x.shape[:-1], keep))


class BandNorm(nn.Module):
    """Standardise each frequency band with statistics of the training split (fixed buffers)."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 1, -1, 1))
        self.register_buffer("std", torch.tensor(std).clamp_min(1e-5).view(1, 1, -1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SpecAugment(nn.Module):
    """Two frequency and two time masks per example, training only (Park et al., 2019)."""

    def __init__(self, freq: int = 8, time: int = 12) -> None:
        super().__init__()
        self.freq = torchaudio.transforms.FrequencyMasking(freq, iid_masks=True)
        self.time = torchaudio.transforms.TimeMasking(time, iid_masks=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.time(self.time(self.freq(self.freq(x))))


def feature_key(cfg: Config) -> str:
    """Names one input representation: trials that share it share band statistics."""
    return (f"{cfg.features}-{cfg.sample_rate}-{cfg.n_fft}-{cfg.mel_n_fft}-{cfg.hop_length}-"
            f"{cfg.n_mels}" + (f"-{cfg.semitone_n_fft}-{cfg.semitone_low}-{cfg.semitone_bins}"
                               if cfg.features == "semitone" else ""))


@torch.no_grad()
def band_stats(cfg: Config, batches: Iterable[torch.Tensor]) -> dict[str, list[float]]:
    """Per-band mean and std of the features over `batches` of waveforms (the train split)."""
    feats = FEATURES[cfg.features](cfg)  # before normalisation, which these stats feed
    total = total_sq = None
    count = 0
    for x in batches:
        f = feats(x).double()  # (B, 1, bands, frames)
        s, sq = f.sum(dim=(0, 1, 3)), (f**2).sum(dim=(0, 1, 3))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += f.shape[0] * f.shape[3]
    if total is None:
        raise ValueError("band_stats: no training data")
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt()
    return {"mean": mean.float().tolist(), "std": std.float().tolist()}


FEATURES: dict[str, Callable[[Config], nn.Module]] = {
    "waveform": lambda cfg: Waveform(),
    "spectrogram": Spectrogram,
    "logmel": LogMel,
    "semitone": Semitone,
}

# Representations that are a fixed function of each segment alone: no random draw, nothing
# that changes with the epoch, and (with AmplitudeToDB's floor per example) nothing read from
# the batch's other examples. A trial computes these once (train.HeldFeatures) and only the
# augmentations run every epoch. A new representation is recomputed per batch until it is
# listed here; the waveform is left out because it is its own input (nothing to save).
PER_SEGMENT = frozenset({"spectrogram", "logmel", "semitone"})


def build_augment(cfg: Config) -> nn.Module | None:
    """The training-only transforms on features this config asks for, or None (which input
    each one needs is a rule of config.check_config)."""
    steps: list[nn.Module] = []
    if cfg.pitch_shift:
        steps.append(PitchShift(cfg.pitch_shift))
    if cfg.time_crop:
        steps.append(TimeCrop(cfg.time_crop))
    if cfg.spec_augment:
        steps.append(SpecAugment())
    return nn.Sequential(*steps) if steps else None


def build_features(cfg: Config, stats: dict[str, list[float]] | None = None) -> nn.Module:
    """The representation for `cfg`; `stats` (from band_stats) when cfg.band_norm."""
    feats = FEATURES[cfg.features](cfg)
    if not cfg.band_norm:
        return feats
    if stats is None:
        raise ValueError(f"band_norm is on but no band statistics were given for "
                         f"{feature_key(cfg)}")
    return nn.Sequential(feats, BandNorm(stats["mean"], stats["std"]))


def feature_shape(cfg: Config, n_samples: int) -> tuple[int, ...]:
    """Shape of one example's features (no batch axis), e.g. (1, 201, 552) for the study."""
    with torch.no_grad():
        return tuple(FEATURES[cfg.features](cfg)(torch.zeros(1, n_samples)).shape[1:])
