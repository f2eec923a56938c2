"""The built-in set of real music: scores from the corpus inside the music21 wheel, rendered to
audio with a General MIDI soundfont, in GTZAN's layout (`<root>/<class>/<class>.NNNNN.wav`).

What it is: composed music (Bach chorales, Palestrina masses, fiddle reels, Han folk songs, ...)
in eight classes of period, school and region. What it is not: recordings. Every track is a
score played by one soundfont (the General MIDI set that ships inside the pretty_midi wheel), so
there is no singing, no room, no production; the classes are styles, not commercial genres.

So that the sound of the soundfont says nothing of the class, every track draws its instruments
from one pool shared by all classes (one for the whole ensemble or one per part), its tempo
(x0.85-1.15), a transposition (+-2 semitones) and its loudness. What is left to learn is the
music: scales, harmony, texture, rhythm. Pieces shorter than a clip are repeated, as folk tunes
are played.

Generated on first use, deterministic for a seed and independent of the number of workers;
exact duplicate scores are removed, and so are near-duplicates (the same tune in another key or
with other harmony, by `melody_fingerprint`); `manifest.csv` beside the audio names each
track's source and work, and `groups.csv` names each track's work for the data preparation, so
that movements of one quartet, sections of one mass and variants of one folk tune are never
split between training and test (`work_keys` says how a work is recognised in each class).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from raygenre.data.folders import atomic_folder
from raygenre.data.music_works import MELODY_INTERVALS as MELODY_INTERVALS  # (re-exported)
from raygenre.data.music_works import (
    Unit,
    melody_fingerprint,
    name_works,
    same_melody,
    score_header,
    work_keys,
)

SAMPLE_RATE = 22_050
# 2: near-duplicate melodies dropped (another set), works named in manifest.csv and groups.csv.
GENERATOR_VERSION = 2
TRACKS_PER_CLASS = 48  # the smallest class (string quartets) has 46 movements in the corpus
MIN_TRACKS_PER_CLASS = 40
CLIP_SECONDS = 30.0  # GTZAN's clip length

INSTALL_HINT = ("pip install 'raygenre[music]' && pip install --no-deps tinysoundfont==0.3.7 "
                "(tinysoundfont's one dependency, PyAudio, is only for live playback and has no "
                "Linux wheel)")

# General MIDI programs (0-based) every class draws from: keyboards, plucked, bowed, voices,
# winds. Drawn per track, so an instrument is no clue to the class.
PROGRAMS = (0, 6, 19, 24, 40, 42, 46, 48, 52, 68, 71, 73)


@dataclass(frozen=True)
class Style:
    description: str
    prefixes: tuple[str, ...]  # corpus paths (relative to music21/corpus) that start so


CLASSES: dict[str, Style] = {
    "chorale": Style("J. S. Bach's four-part chorale harmonisations (Baroque)", ("bach/",)),
    "mass": Style("Palestrina's mass movements (Roman Renaissance polyphony)", ("palestrina/",)),
    "madrigal": Style("Monteverdi's five-voice madrigals (late Renaissance)", ("monteverdi/",)),
    "trecento": Style("14th-century Italian ballate, madrigals and cacce (Ars nova)",
                      ("trecento/",)),
    "string_quartet": Style("Haydn, Mozart and Beethoven string-quartet movements (Classical)",
                            ("haydn/", "mozart/k155", "mozart/k156", "mozart/k458",
                             "mozart/k80", "beethoven/")),
    "fiddle_tune": Style("reels, jigs, hornpipes and strathspeys from Ryan's Mammoth "
                         "Collection (1883, Scottish, Irish and American dance tunes)",
                         ("ryansMammoth/",)),
    "german_folk": Style("German folk songs of the Essen collection",
                         tuple(f"essenFolksong/{f}" for f in (
                             "altdeu", "ballad", "boehme", "dva", "erk", "fink", "kinder",
                             "zuccal"))),
    "chinese_folk": Style("Han Chinese folk songs of the Essen collection",
                          ("essenFolksong/han",)),
}

_SCORE_SUFFIXES = (".mxl", ".xml", ".krn", ".abc")  # not .rntxt: analyses, not music


class MusicUnavailable(ImportError):
    """The optional packages of the real-music set are missing."""


def _require() -> None:
    missing = []
    for mod in ("music21", "pretty_midi", "tinysoundfont"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise MusicUnavailable(f"the built-in real-music set needs {', '.join(missing)}; "
                               f"install it with: {INSTALL_HINT}")


def candidates(style: str) -> list[Unit]:
    """Every score of `style` in the corpus, in a fixed order."""
    from music21 import corpus

    root = Path(corpus.__file__).parent
    rel = sorted(str(Path(p).relative_to(root)).replace(os.sep, "/")
                 for p in corpus.getCorePaths())
    # A movement stored both as Humdrum and MusicXML (Beethoven op. 18/1) counts once.
    stems = {r.rsplit(".", 1)[0] for r in rel if r.endswith((".mxl", ".xml"))}
    units = []
    for r in rel:
        if not r.startswith(CLASSES[style].prefixes) or not r.endswith(_SCORE_SUFFIXES):
            continue
        if r.endswith(".krn") and r.rsplit(".", 1)[0] in stems:
            continue
        if r.endswith(".abc"):
            text = (root / r).read_text(encoding="latin-1")
            numbers = [int(n) for n in re.findall(r"^X:\s*(\d+)", text, re.M)]
            if len(numbers) > 1:
                units += [Unit(style, r, n) for n in dict.fromkeys(numbers)]
                continue
        units.append(Unit(style, r, None))
    return units


def _stream(seed: int, *key: Any) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, (seed, *key))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def soundfont_path() -> Path:
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def _score_notes(unit: Unit, max_measures: int = 80) -> tuple[list[tuple], str, int]:
    """(start_s, end_s, part, pitch, velocity) of every note, the title, the number of parts."""
    import pretty_midi
    from music21 import bar, corpus, midi, repeat

    # forceSource: music21 otherwise keeps pickled parses in a temp folder shared by every
    # process and run; two workers parsing one score raced on its pickle ("Error -5 while
    # decompressing"), and a pickle cut short by a killed run would drop that score from
    # every later set. Parsing from the source each time is what keeps the set a function of
    # the seed.
    score = corpus.parse(unit.path, number=unit.number, forceSource=True)
    if hasattr(score, "scores"):  # an opus: its first piece
        score = score.scores[0]
    title = (score.metadata.title or "") if score.metadata else ""
    # Only the first bars can reach a 30-s clip; converting a whole quartet to MIDI takes seconds.
    parts = list(score.parts) if hasattr(score, "parts") else []
    if parts and len(parts[0].getElementsByClass("Measure")) > max_measures:
        score = score.measures(0, max_measures)
    try:
        data = midi.translate.streamToMidiFile(score).writestr()
    except repeat.ExpanderException:
        # Repeats music21 cannot unfold (often cut by the truncation above): play it through.
        for b in list(score.recurse().getElementsByClass(bar.Repeat)):
            b.activeSite.remove(b)
        for r in list(score.recurse().getElementsByClass(repeat.RepeatExpression)):
            r.activeSite.remove(r)
        data = midi.translate.streamToMidiFile(score).writestr()
    pretty_midi.pretty_midi.MAX_TICK = 1e10  # long scores at high resolution are not corrupt
    pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    notes = [(n.start, n.end, i, n.pitch, n.velocity)
             for i, inst in enumerate(pm.instruments) if not inst.is_drum for n in inst.notes]
    return sorted(notes), title, len(pm.instruments)


def render_unit(unit: Unit, seed: int, seconds: float = CLIP_SECONDS) -> dict[str, Any]:
    """Render one candidate. Returns its audio (or the reason it has none) and provenance."""
    warnings.simplefilter("ignore")  # music21 warns about ABC details it repairs
    out: dict[str, Any] = {"unit": unit, "audio": None, "error": ""}
    try:
        notes, title, n_parts = _score_notes(unit)
    except Exception as e:  # noqa: BLE001 - a score music21 cannot read is skipped and recorded
        # Without the object addresses music21 quotes, so skipped.csv is the same every time.
        reason = re.sub(r"(id\(\)=\d+|0x[0-9a-f]+)", "…", f"{type(e).__name__}: {e}")
        out["error"] = reason[:200]
        return out
    if not notes:
        out["error"] = "no notes"
        return out
    # The same score under two names (a reprint, a variant file) is one piece.
    out["fingerprint"] = hashlib.sha256(
        repr([(round(s, 4), p) for s, _, _, p, _ in notes]).encode()).hexdigest()
    out["melody"] = melody_fingerprint(notes)
    out["work_keys"] = work_keys(unit, score_header(unit))
    rng = _stream(seed, unit.style, unit.source)
    tempo = float(rng.uniform(0.85, 1.15))
    transpose = int(rng.integers(-2, 3))
    if rng.random() < 0.5:  # the whole ensemble on one instrument, or one per part
        programs = [int(rng.choice(PROGRAMS))] * n_parts
    else:
        programs = [int(rng.choice(PROGRAMS)) for _ in range(n_parts)]
    level_db = float(rng.uniform(-28, -14))
    audio, looped, length = _synthesize(notes, programs, tempo, transpose, seconds)
    rms = float(np.sqrt(np.mean(audio**2)))
    if rms < 1e-5:
        out["error"] = "silent rendering"
        return out
    audio *= 10 ** (level_db / 20) / rms
    peak = float(np.abs(audio).max())
    if peak > 0.99:  # louder draws give way to clipping: the level is no clue anyway
        audio *= 0.99 / peak
    out.update(audio=audio.astype(np.float32), title=title, parts=n_parts,
               programs=" ".join(map(str, sorted(set(programs)))), tempo=round(tempo, 3),
               transpose=transpose, score_seconds=round(length, 2), looped=looped)
    return out


def _synthesize(notes: list[tuple], programs: list[int], tempo: float, transpose: int,
                seconds: float) -> tuple[np.ndarray, bool, float]:
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE)
    sfid = synth.sfload(str(soundfont_path()))
    channels = [c for c in range(16) if c != 9]  # channel 10 is percussion in General MIDI
    for part, prog in enumerate(programs):
        synth.program_select(channels[part % len(channels)], sfid, 0, prog)
    length = max(end for _, end, *_ in notes) / tempo
    events = []
    offset = 0.0
    while True:  # a piece shorter than the clip is played again, as a folk tune would be
        for start, end, part, pitch, vel in notes:
            ch = channels[part % len(channels)]
            key = min(127, max(0, pitch + transpose))
            events.append((offset + start / tempo, 1, ch, key, vel))
            events.append((offset + end / tempo, 0, ch, key, 0))
        offset += length
        if offset >= seconds or length <= 0:
            break
    events.sort(key=lambda e: (e[0], e[1]))  # note-offs before note-ons at the same instant
    total = int(seconds * SAMPLE_RATE)
    audio = np.zeros(total, np.float32)
    pos = 0
    for t, on, ch, key, vel in events:
        at = min(int(t * SAMPLE_RATE), total)
        if at > pos:
            audio[pos:at] = np.frombuffer(synth.generate(at - pos), np.float32)[0::2]
            pos = at
        if pos >= total:
            break
        if on:
            synth.noteon(ch, key, vel)
        else:
            synth.noteoff(ch, key)
    if pos < total:
        audio[pos:] = np.frombuffer(synth.generate(total - pos), np.float32)[0::2]
    return audio, length < seconds, length


def music21_version() -> str:
    from music21 import VERSION_STR

    return VERSION_STR


def builtin_root(cache_dir: str | os.PathLike, tracks_per_class: int, seconds: float,
                 seed: int) -> Path:
    # Another music21 version has another corpus, so it renders another set.
    tag = (f"music-v{GENERATOR_VERSION}-m21_{music21_version()}-n{tracks_per_class}-s{seconds:g}-"
           f"seed{seed}")
    return Path(cache_dir) / "builtin" / tag


def ensure_builtin(cache_dir: str | os.PathLike, tracks_per_class: int = TRACKS_PER_CLASS,
                   seconds: float = CLIP_SECONDS, seed: int = 0, workers: int | None = None,
                   classes: tuple[str, ...] | None = None,
                   min_tracks: int = MIN_TRACKS_PER_CLASS, quiet: bool = False) -> Path:
    """Render the real-music set once (deterministic in its arguments) and return its root.

    Written to a temporary folder and renamed (`atomic_folder`), so an interrupted generation
    is never mistaken for a finished one.
    """
    _require()
    classes = tuple(classes or CLASSES)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown real-music classes {unknown}; known: {', '.join(CLASSES)}")
    root = builtin_root(cache_dir, tracks_per_class, seconds, seed)
    if len(classes) != len(CLASSES):
        root = root.with_name(root.name + "-" + "+".join(classes))
    if (root / "DONE").exists():
        return root
    workers = workers or len(os.sched_getaffinity(0))
    say = (lambda *a: None) if quiet else (lambda msg: print(msg, flush=True))
    say(f"[data] rendering the real-music set ({len(classes)} classes x {tracks_per_class} "
        f"tracks x {seconds:g} s, {workers} processes) in {root}")
    t0 = time.perf_counter()
    kept, skipped = _render_set(classes, tracks_per_class, seconds, seed, workers, say, t0)
    short = {c: len(v) for c, v in kept.items() if len(v) < min_tracks}
    if short:  # nothing is kept but the list of what was skipped, beside the set's folder
        report = root.with_name(root.name + ".skipped.csv")
        root.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(report, ["source", "class", "reason"], skipped)
        raise RuntimeError(f"the corpus gave too few tracks for {short} (at least {min_tracks} "
                           f"each); what was skipped and why: {report}")
    with atomic_folder(root) as tmp:
        _write_csv(tmp / "skipped.csv", ["source", "class", "reason"], skipped)
        rows = _write_tracks(tmp, classes, kept)
        near = sum(r["near_duplicates"] for r in rows)
        n_works = {c: len({r["work"] for r in rows if r["class"] == c}) for c in classes}
        (tmp / "DONE").write_text(json.dumps({
            "version": GENERATOR_VERSION, "seed": seed, "tracks_per_class": tracks_per_class,
            "seconds": seconds, "classes": {c: CLASSES[c].description for c in classes},
            "soundfont": soundfont_path().name, "music21": music21_version(),
            "works": n_works, "near_duplicates_dropped": near,
            "render_seconds": round(time.perf_counter() - t0, 1),
        }, indent=1))
    say(f"[data] real music: {len(rows)} tracks of {sum(n_works.values())} works in "
        f"{time.perf_counter() - t0:.0f} s ({len(skipped)} candidates skipped, {near} of them "
        f"near-duplicates of a kept tune; see skipped.csv)")
    return root


def _render_set(classes: tuple[str, ...], tracks_per_class: int, seconds: float, seed: int,
                workers: int, say: Callable[[str], None], t0: float
                ) -> tuple[dict[str, list[dict]], list[dict]]:
    """Render candidates until each class has `tracks_per_class` (or runs out): the kept
    renderings per class, and what was skipped and why."""
    # Each class's candidates in a seeded order; rounds top up classes whose picks failed or
    # were duplicates, and results are taken in candidate order, so the set does not depend on
    # how many processes rendered it.
    queues = {}
    for c in classes:
        units = candidates(c)
        queues[c] = [units[i] for i in _stream(seed, "order", c).permutation(len(units))]
    kept: dict[str, list[dict]] = {c: [] for c in classes}
    seen: set[str] = set()
    # Across classes too: a hymn tune among the folk songs would be one tune under two labels.
    melodies: list[dict] = []
    skipped: list[dict] = []
    done = 0
    ctx = get_context("spawn")  # the caller may hold threads (Ray); forking them is unsafe
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        while True:
            batch = []
            for c in classes:
                need = tracks_per_class - len(kept[c])
                batch += queues[c][:need]
                queues[c] = queues[c][need:]
            if not batch:
                break
            futures = [pool.submit(render_unit, u, seed, seconds) for u in batch]
            for f in futures:
                r = f.result()
                done += 1
                reason = _judge(r, seen, melodies)
                if reason:
                    skipped.append({"source": r["unit"].source, "class": r["unit"].style,
                                    "reason": reason})
                else:
                    kept[r["unit"].style].append(r)
                if done % 25 == 0:
                    n = sum(map(len, kept.values()))
                    say(f"[data] real music: {n}/{tracks_per_class * len(classes)} tracks "
                        f"({time.perf_counter() - t0:.0f} s)")
    return kept, skipped


def _judge(r: dict, seen: set[str], melodies: list[dict]) -> str:
    """Why rendering `r` is skipped (no audio, a score or a tune already kept), or "" when it
    is kept: then `seen` and `melodies` take it in."""
    if r["audio"] is None or r["fingerprint"] in seen:
        return r["error"] or "duplicate score"
    twin = next((k for k in melodies if same_melody(k["melody"], r["melody"])), None)
    if twin is not None:
        # Dropped, not kept beside its twin in one work: a tune twice in a class weighs
        # double in training and is one answer counted twice in a test, and the classes with
        # near-duplicates have candidates to spare.
        twin["near_duplicates"] += 1
        return f"same melody as {twin['unit'].source}"
    seen.add(r["fingerprint"])
    melodies.append(r)
    r["near_duplicates"] = 0
    return ""


def _write_tracks(folder: Path, classes: tuple[str, ...], kept: dict[str, list[dict]]
                  ) -> list[dict[str, Any]]:
    """The audio files, manifest.csv and groups.csv; the manifest's rows."""
    rows: list[dict[str, Any]] = []
    ordered = [r for c in classes for r in kept[c]]
    works = name_works([r["work_keys"] for r in ordered])
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for k, r in enumerate(kept[c]):
            name = f"{c}/{c}.{k:05d}.wav"
            sf.write(folder / name, r["audio"], SAMPLE_RATE, subtype="PCM_16")
            rows.append({"file": name, "class": c, "source": r["unit"].source,
                         "title": r["title"], "work": works[len(rows)], **{k2: r[k2] for k2 in (
                             "parts", "programs", "tempo", "transpose", "score_seconds",
                             "looped", "melody", "near_duplicates")}})
    _write_csv(folder / "manifest.csv", list(rows[0]), rows)
    # What the data preparation reads (raygenre.data.splits.GROUPS_FILE): one work, one split.
    with open(folder / "groups.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "group"])
        w.writerows((r["file"], r["work"]) for r in rows)
    return rows


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    """`python -m raygenre.data.music [--cache DIR] [--workers N]`: render the set ahead of time."""
    import argparse

    from raygenre.paths import default_cache

    p = argparse.ArgumentParser(prog="python -m raygenre.data.music", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--cache", default=str(default_cache()))
    p.add_argument("--workers", type=int, help="processes (default: this machine's cores)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        print(ensure_builtin(args.cache, seed=args.seed, workers=args.workers))
    except MusicUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
