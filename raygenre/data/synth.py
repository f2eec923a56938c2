"""The built-in data set: ten procedurally generated genres in GTZAN's folder layout.

The real GTZAN cannot be shipped, but a first command must work without it. Each genre here is
a small set of musical rules (tempo range, drum patterns, scale and chord progression, bass style,
instrument timbre, swing, distortion). Every track draws its own tempo, key, pattern mutations,
timbre and mix from the seed, and is normalised to a random loudness, so no global cue (level,
one frequency) gives the genre away: a waveform MLP stays weak while a spectrogram CNN, which sees
rhythm and timbre, can learn it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from raygenre.data.folders import atomic_folder

SAMPLE_RATE = 22_050
# Bump when the generator changes: the folder name carries it, so an old set is never reused.
GENERATOR_VERSION = 1
# The built-in set: 20 tracks of 30 s per genre cut into 6 segments each, 1 200 segments in all,
# as GTZAN's layout but a fifth of its size, so the default CPU sweep ends in minutes.
BUILTIN_TRACKS_PER_GENRE = 20
BUILTIN_SECONDS = 30.0

SCALES = {
    "major": [0, 2, 4, 5, 7, 9, 11],
    "minor": [0, 2, 3, 5, 7, 8, 10],
    "dorian": [0, 2, 3, 5, 7, 9, 10],
    "mixolydian": [0, 2, 4, 5, 7, 9, 10],
    "harmonic_minor": [0, 2, 3, 5, 7, 8, 11],
    "phrygian": [0, 1, 3, 5, 7, 8, 10],
}


def _steps(s: str) -> np.ndarray:
    """A 16-step pattern written as 'x...x...' (x hit, o accent-less ghost at half level)."""
    return np.array([{"x": 1.0, "o": 0.5}.get(c, 0.0) for c in s], dtype=np.float32)


@dataclass(frozen=True)
class Genre:
    tempo: tuple[float, float]
    scale: str
    progression: tuple[int, ...]  # scale degrees, one per bar
    sevenths: bool
    kick: str
    snare: str
    hat: str
    chord_style: str  # pad | stab_offbeat | arpeggio | strum | power
    bass_style: str  # root | walking | octave | sparse | none | pedal
    harmonics: tuple[float, ...]  # lead/chord timbre: relative partial amplitudes
    decay: float  # seconds, chord/lead envelope decay
    swing: float = 0.0
    distortion: float = 0.0
    vibrato: float = 0.0
    ride: bool = False
    melody_density: float = 0.3


GENRES: dict[str, Genre] = {
    "blues": Genre((70, 100), "mixolydian", (0, 0, 3, 0, 4, 3, 0, 4), True,
                   "x.....x.x.......", "....x.......x...", "x.x.x.x.x.x.x.x.",
                   "strum", "walking", (1, .6, .4, .3, .2, .1), .6, swing=.33, melody_density=.35),
    "classical": Genre((60, 90), "harmonic_minor", (0, 3, 4, 0, 5, 3, 4, 4), False,
                       "................", "................", "................",
                       "arpeggio", "pedal", (1, .3, .1, .05), 1.2, vibrato=.006, melody_density=.5),
    "country": Genre((100, 130), "major", (0, 3, 4, 0, 0, 3, 4, 0), False,
                     "x.......x.......", "....x.......x...", "x.x.x.x.x.x.x.x.",
                     "strum", "octave", (1, .7, .5, .4, .3, .2, .1), .35, melody_density=.4),
    "disco": Genre((110, 130), "dorian", (0, 3, 0, 4), True,
                   "x...x...x...x...", "....x.......x...", "..x...x...x...x.",
                   "stab_offbeat", "octave", (1, .5, .33, .25, .2), .2, melody_density=.25),
    "hiphop": Genre((80, 100), "minor", (0, 0, 5, 4), True,
                    "x......x..x.....", "....x.......x..o", "x.x.x.x.x.x.x.xx",
                    "pad", "sparse", (1, .2, .05), .9, swing=.2, melody_density=.15),
    "jazz": Genre((100, 160), "dorian", (1, 4, 0, 0, 1, 4, 0, 5), True,
                  "x.........o.....", "......o.....o...", "................",
                  "stab_offbeat", "walking", (1, .4, .15, .08), .5, swing=.33, ride=True,
                  melody_density=.45),
    "metal": Genre((140, 190), "phrygian", (0, 0, 1, 0, 5, 4, 1, 0), False,
                   "x.x.x.x.x.x.x.x.", "....x.......x...", "x.x.x.x.x.x.x.x.",
                   "power", "root", (1, .8, .7, .6, .5, .4, .3, .2), .25, distortion=6.0,
                   melody_density=.3),
    "pop": Genre((95, 125), "major", (0, 4, 5, 3), False,
                 "x.......x.x.....", "....x.......x...", "x.x.x.x.x.x.x.x.",
                 "pad", "root", (1, .45, .25, .12), .7, melody_density=.35),
    "reggae": Genre((65, 90), "minor", (0, 3, 0, 4), False,
                    "........x.......", "........x.......", "x.x.x.x.x.x.x.x.",
                    "stab_offbeat", "sparse", (1, .9, .1, .6, .05, .3), .15, swing=.15,
                    melody_density=.2),
    "rock": Genre((110, 150), "mixolydian", (0, 3, 4, 3), False,
                  "x.....x.x.......", "....x.......x...", "x.x.x.x.x.x.x.x.",
                  "power", "root", (1, .7, .5, .4, .3, .2), .3, distortion=2.5, melody_density=.3),
}


def _midi_hz(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


class _Voice:
    """Renders notes of one timbre; caches each (pitch, length) since songs repeat chords."""

    def __init__(self, harmonics: np.ndarray, decay: float, vibrato: float, distortion: float,
                 rng: np.random.Generator) -> None:
        self.harmonics, self.decay, self.vibrato, self.distortion = (
            harmonics, decay, vibrato, distortion)
        self.phase = rng.uniform(0, 2 * np.pi, size=len(harmonics))
        self.cache: dict[tuple[int, int], np.ndarray] = {}

    def note(self, midi: int, n: int) -> np.ndarray:
        key = (midi, n)
        if key not in self.cache:
            t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
            f = _midi_hz(midi)
            if self.vibrato:
                t = t + self.vibrato * np.sin(2 * np.pi * 5.5 * t) / (2 * np.pi * 5.5)
            out = np.zeros(n, dtype=np.float32)
            for k, a in enumerate(self.harmonics, start=1):
                if f * k < SAMPLE_RATE / 2 - 500:
                    out += a * np.sin(2 * np.pi * f * k * t + self.phase[k - 1])
            env = np.exp(-t / self.decay) * np.minimum(1.0, t / 0.008)
            out *= env
            if self.distortion:
                out = np.tanh(self.distortion * out) / np.tanh(self.distortion)
            self.cache[key] = out.astype(np.float32)
        return self.cache[key]


def _drums(rng: np.random.Generator) -> dict[str, np.ndarray]:
    sr = SAMPLE_RATE
    t = np.arange(int(0.35 * sr)) / sr
    f0 = rng.uniform(45, 65)
    kick = np.sin(2 * np.pi * (f0 * t + (rng.uniform(90, 160) - f0) * (1 - np.exp(-t * 30)) / 30))
    kick *= np.exp(-t / rng.uniform(0.08, 0.15))
    n = rng.standard_normal(len(t))
    snare = (0.7 * np.diff(n, prepend=0) + 0.5 * np.sin(2 * np.pi * rng.uniform(170, 220) * t))
    snare *= np.exp(-t / rng.uniform(0.05, 0.1))
    th = t[: int(0.08 * sr)]
    hat = np.diff(np.diff(rng.standard_normal(len(th)), prepend=0), prepend=0) / 4
    hat *= np.exp(-th / rng.uniform(0.01, 0.03))
    tr = t[: int(0.3 * sr)]
    ride = sum(np.sin(2 * np.pi * f * tr) for f in rng.uniform(3000, 7000, size=6)) / 6
    ride = ride * np.exp(-tr / 0.15)
    return {k: v.astype(np.float32) for k, v in
            dict(kick=kick, snare=snare, hat=hat, ride=ride).items()}


def _mutate(pattern: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    flip = rng.random(16) < p
    out = pattern.copy()
    out[flip] = np.where(pattern[flip] > 0, 0.0, 0.5)
    return out


def render_track(genre: str, rng: np.random.Generator, seconds: float = 30.0) -> np.ndarray:
    """One track of `genre`: float32 mono at SAMPLE_RATE, normalised to a random loudness."""
    g = GENRES[genre]
    sr = SAMPLE_RATE
    n_total = int(seconds * sr)
    buf = np.zeros(n_total + sr * 2, dtype=np.float32)
    bpm = rng.uniform(*g.tempo)
    step = 60.0 / bpm / 4  # a 16th note
    key = 48 + int(rng.integers(0, 12))  # random key: no single pitch marks a genre
    scale = SCALES[g.scale]
    harm = np.array(g.harmonics) * rng.uniform(0.7, 1.3, size=len(g.harmonics))
    chords = _Voice(harm, g.decay * rng.uniform(0.8, 1.25), g.vibrato, g.distortion, rng)
    lead = _Voice(np.roll(harm, int(rng.integers(0, 2))), g.decay * 0.8, g.vibrato,
                  g.distortion * 0.5, rng)
    bassv = _Voice(np.array([1.0, 0.5, 0.2]), 0.4, 0.0, g.distortion * 0.3, rng)
    drums = _drums(rng)
    pats = {k: _mutate(_steps(getattr(g, k)), rng, 0.08) for k in ("kick", "snare", "hat")}
    mix = rng.uniform(0.6, 1.4, size=6)
    swing = g.swing * rng.uniform(0.7, 1.0)

    def at(i: int) -> int:
        delay = swing * step if i % 4 == 2 else 0.0  # swung 8th off-beats
        return int((i * step + delay + rng.normal(0, 0.003)) * sr)

    def add(sig: np.ndarray, pos: int, gain: float) -> None:
        if 0 <= pos < n_total:
            end = min(pos + len(sig), len(buf))
            buf[pos:end] += gain * sig[: end - pos]

    def degree(d: int, octave: int = 0) -> int:
        return key + scale[d % 7] + 12 * (d // 7 + octave)

    n_steps = int(seconds / step) + 1
    bar_len = int(16 * step * sr)
    melody_note = int(rng.integers(0, 7))
    for i in range(n_steps):
        bar, pos = divmod(i, 16)
        root_deg = g.progression[bar % len(g.progression)]
        chord = [root_deg, root_deg + 2, root_deg + 4] + ([root_deg + 6] if g.sevenths else [])
        t0 = at(i)
        # drums
        for name in ("kick", "snare", "hat"):
            v = pats[name][pos]
            if v:
                add(drums[name], t0, 0.5 * v * mix[0] * rng.uniform(0.8, 1.0))
        if g.ride and pos % 4 in (0, 2) and (pos % 8 != 2 or rng.random() < 0.6):
            add(drums["ride"], t0, 0.25 * mix[0])
        cg = 0.18 * mix[1]
        for sig, when, gain in _harmony(g.chord_style, chords, chord, pos, step, bar_len,
                                        degree):
            add(sig, t0 + when, cg * gain)  # (x * 1.0 is x: the chord level as it was)
        # bass
        bs, bg = g.bass_style, 0.35 * mix[2]
        bn = int(step * 4 * sr)
        if bs == "root" and pos % 4 == 0:
            add(bassv.note(degree(root_deg, -2), bn), t0, bg)
        elif bs == "walking" and pos % 4 == 0:
            d = root_deg + [0, 2, 4, 5][pos // 4] + int(rng.integers(-1, 2))
            add(bassv.note(degree(d, -2), bn), t0, bg)
        elif bs == "octave" and pos % 2 == 0:
            add(bassv.note(degree(root_deg, -2 + (pos // 2) % 2), bn // 2), t0, bg)
        elif bs == "sparse" and pos in (0, 7, 10):
            add(bassv.note(degree(root_deg, -2), bn), t0, bg * 1.3)
        elif bs == "pedal" and pos == 0:
            add(bassv.note(degree(root_deg, -2), bar_len), t0, bg * 0.6)
        # melody: a random walk on the scale
        if pos % 2 == 0 and rng.random() < g.melody_density:
            melody_note = int(np.clip(melody_note + rng.integers(-2, 3), -3, 10))
            add(lead.note(degree(melody_note, 1), int(step * 2 * sr)), t0, 0.2 * mix[3])

    return _master(buf[:n_total], rng)


def _harmony(style: str, chords: _Voice, chord: list[int], pos: int, step: float,
             bar_len: int, degree: Callable[..., int]) -> list[tuple[np.ndarray, int, float]]:
    """The chord notes a `style` plays at 16th `pos` of a bar: (note, delay, gain relative to
    the chord level). Draws nothing from the track's stream."""
    sr = SAMPLE_RATE
    if style == "pad" and pos == 0:
        return [(chords.note(degree(d), bar_len), 0, 1.0) for d in chord]
    if style == "stab_offbeat" and pos % 4 == 2:
        return [(chords.note(degree(d, 1), int(step * 1.5 * sr)), 0, 1.0) for d in chord]
    if style == "arpeggio" and pos % 2 == 0:
        d = chord[(pos // 2) % len(chord)] + 7 * ((pos // 8) % 2)
        return [(chords.note(degree(d), int(step * 4 * sr)), 0, 1.2)]
    if style == "strum" and pos % 4 == 0:
        return [(chords.note(degree(d), int(step * 4 * sr)), k * int(0.012 * sr), 1.0)
                for k, d in enumerate(chord)]
    if style == "power" and pos % 2 == 0:
        return [(chords.note(degree(d, -1), int(step * 2 * sr)), 0, 1.1)
                for d in (chord[0], chord[0] + 4)]
    return []


def _master(out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noise floor, then a random loudness (the level says nothing of the genre)."""
    out += rng.normal(0, 10 ** rng.uniform(-3.5, -2.5), size=len(out)).astype(np.float32)
    rms = float(np.sqrt(np.mean(out**2))) + 1e-9
    target_db = rng.uniform(-28, -14)
    out *= 10 ** (target_db / 20) / rms
    return np.clip(out, -1, 1).astype(np.float32)


def builtin_root(cache_dir: str | os.PathLike, tracks_per_genre: int, seconds: float,
                 seed: int) -> Path:
    """The folder of the built-in set for these settings (not created)."""
    tag = f"v{GENERATOR_VERSION}-n{tracks_per_genre}-s{seconds:g}-seed{seed}"
    return Path(cache_dir) / "builtin" / tag


def ensure_builtin(cache_dir: str | os.PathLike, tracks_per_genre: int = BUILTIN_TRACKS_PER_GENRE,
                   seconds: float = BUILTIN_SECONDS, seed: int = 0, quiet: bool = False) -> Path:
    """Generate the built-in set once (deterministic in its arguments) and return its root.

    Written to a temporary folder and renamed, so an interrupted generation is never mistaken
    for a finished one.
    """
    root = builtin_root(cache_dir, tracks_per_genre, seconds, seed)
    if (root / "DONE").exists():
        return root
    if not quiet:
        print(f"[data] generating the built-in set ({len(GENRES)} genres x {tracks_per_genre} "
              f"tracks x {seconds:g} s) in {root}", flush=True)
    with atomic_folder(root) as tmp:
        for genre in GENRES:
            (tmp / genre).mkdir(parents=True, exist_ok=True)
            for k in range(tracks_per_genre):
                # Each track has its own stream, so one track does not depend on how many
                # precede it.
                digest = hashlib.sha256(f"{seed}/{genre}/{k}".encode()).digest()
                rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
                audio = render_track(genre, rng, seconds)
                sf.write(tmp / genre / f"{genre}.{k:05d}.wav", audio, SAMPLE_RATE,
                         subtype="PCM_16")
        (tmp / "DONE").write_text(json.dumps({"version": GENERATOR_VERSION, "seed": seed,
                                              "tracks_per_genre": tracks_per_genre,
                                              "seconds": seconds}))
    return root
