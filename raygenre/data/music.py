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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

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


@dataclass(frozen=True)
class Unit:
    """One candidate track: a corpus file, and the tune number inside a multi-tune ABC file."""

    style: str
    path: str  # relative to music21/corpus
    number: int | None

    @property
    def source(self) -> str:
        return self.path + (f"#{self.number}" if self.number is not None else "")


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


def _header(unit: Unit) -> str:
    """The text that describes `unit`'s piece: its tune's block in a multi-tune ABC file, the
    whole file for Humdrum and one-tune ABC files, nothing for MusicXML (whose metadata names
    no work the paths do not)."""
    from music21 import corpus

    if not unit.path.endswith((".krn", ".abc")):
        return ""
    text = (Path(corpus.__file__).parent / unit.path).read_text(encoding="latin-1")
    if unit.number is None:
        return text
    for block in re.split(r"(?m)^(?=X:)", text):
        m = re.match(r"X:\s*(\d+)", block)
        if m and int(m.group(1)) == unit.number:
            return block  # the first tune of that number, as candidates() lists it
    return ""


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def work_keys(unit: Unit, header: str = "") -> list[str]:
    """Names of the work `unit` belongs to, from its corpus path and `header` (`_header`); two
    tracks that share any name are one work (`name_works`). The first name is the work's own.

    A work is what must not sit on both sides of a split because its parts share material:
    - chorale: the BWV number (a cantata's chorales; `bwv18.5-lz`/`-w`, two versions of one);
    - mass: the Palestrina mass (Humdrum `!!!OPR`), its number in brackets dropped, so the two
      "Missa De beata virgine" (1567, 1570) on one chant are one work; the file names' numbers
      index each movement type, not the mass;
    - madrigal: the madrigal (`madrigal.3.1_old` is an older edition of `madrigal.3.1`);
    - trecento: the PMFC piece, its `a`/`b` halves and `_bak`/.mxl copies as one;
    - string_quartet: the quartet (a folder of movements, or a file that is one);
    - fiddle_tune: the tune (`CampMeetingJigNo2` is a second setting of `CampMeetingJig`);
    - german_folk, chinese_folk: the Essen tune family (codes A0004A, A0004B, ... are variants
      of one tune) and the title (the collections' many "Graf und Nonne" are one ballad).
    The same tune elsewhere (another chorale on its melody, a variant under another title) is
    caught by `melody_fingerprint` instead.
    """
    name = unit.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]

    def field(tag: str) -> str:
        m = re.search(rf"(?m)^{re.escape(tag)}\s*(.*?)\s*$", header)
        return m.group(1) if m else ""

    keys: list[str] = []
    if unit.style == "chorale":
        m = re.match(r"bwv(\d+)", name)
        keys.append(f"bwv{m.group(1)}" if m else name)
    elif unit.style == "mass":
        keys.append(_words(re.sub(r"\([^)]*\)", "", field("!!!OPR:"))) or name)
    elif unit.style == "madrigal":
        keys.append(re.sub(r"_old$", "", name))
    elif unit.style == "trecento":
        piece = re.sub(r"_bak$", "", name)
        piece = re.sub(r"\s+[ab]$", "", piece)  # "Kyrie Humano Generi a" and "... b"
        keys.append(re.sub(r"(\d)[a-z](?=[-_ .]|$)", r"\1", piece))  # 03a-/03b-, 10a/10b
    elif unit.style == "string_quartet":
        parts = unit.path.split("/")
        keys.append("/".join(parts[:2]) if len(parts) > 2 else f"{parts[0]}/{name}")
    elif unit.style == "fiddle_tune":
        keys.append(re.sub(r"(No)?\d+$", "", name))
    else:
        code = re.search(r"(?m)^N:\s*([A-Z]+\d+)[A-Z]?\s*$", header)
        title = _words(field("T:"))
        keys += [f"essen {code.group(1)}"] if code else []
        keys += [f"title {title}"] if title else []
        keys = keys or [unit.source]
    return [f"{unit.style}:{k}" for k in keys]


def name_works(keys: list[list[str]]) -> list[str]:
    """Each track's work, given each track's `work_keys`: tracks that share a key, directly or
    through others, are one work, named by the first key of its first track (so the names
    follow the tracks' order, which is the set's own)."""
    parent: dict[str, str] = {}

    def root(k: str) -> str:
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for ks in keys:
        for k in ks[1:]:
            a, b = root(ks[0]), root(k)
            if a != b:
                parent[b] = a
    name: dict[str, str] = {}
    for ks in keys:
        name.setdefault(root(ks[0]), ks[0])
    return [name[root(ks[0])] for ks in keys]


# Intervals of the top voice that make a melody's fingerprint: about two phrases of a chorale
# or a folk tune, long enough that two different tunes rarely share them. One may differ:
# Bach's settings of one tune vary a note here and there (BWV 244.62 and 271, "Herzlich tut
# mich verlangen", differ in the 10th interval). Over the corpus's 410 chorales, 12 intervals
# with one mismatch pair 198 settings, 164 exactly; every pair whose titles the corpus's
# chorale list gives is one hymn tune, though the texts may differ ("O Welt, sieh hier dein
# Leben" and "Nun ruhen alle Wälder" are both sung to "Innsbruck, ich muss dich lassen").
MELODY_INTERVALS = 12
MELODY_MISMATCHES = 1


def melody_fingerprint(notes: list[tuple], intervals: int = MELODY_INTERVALS) -> str:
    """The opening of the top voice as a transposition-free string, or "" when it has fewer
    than `intervals` steps (too short to tell tunes apart).

    The top voice is the part with the highest mean pitch (the soprano, cantus, first violin or
    the tune itself), its highest note at each onset; repeated notes are merged, since versions
    of one tune tie or split notes differently. Intervals, not pitches, so another key is the
    same melody; the top voice alone, so another harmonisation is too.
    """
    by_part: dict[int, list[tuple[float, int]]] = {}
    for start, _, part, pitch, _ in notes:
        by_part.setdefault(part, []).append((round(start, 4), pitch))
    if not by_part:
        return ""
    top = max(sorted(by_part), key=lambda p: np.mean([q for _, q in by_part[p]]))
    highest: dict[float, int] = {}
    for t, pitch in by_part[top]:
        highest[t] = max(highest.get(t, pitch), pitch)
    line = np.array([highest[t] for t in sorted(highest)])
    steps = [int(s) for s in np.diff(line) if s][:intervals]
    return " ".join(f"{s:+d}" for s in steps) if len(steps) == intervals else ""


def same_melody(a: str, b: str) -> bool:
    """Whether two `melody_fingerprint`s are one tune: both long enough, and at most
    MELODY_MISMATCHES of their intervals differ."""
    x, y = a.split(), b.split()
    return len(x) == len(y) == MELODY_INTERVALS and \
        sum(i != j for i, j in zip(x, y, strict=True)) <= MELODY_MISMATCHES


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
    out["work_keys"] = work_keys(unit, _header(unit))
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

    Written to a temporary folder and renamed, so an interrupted generation is never mistaken
    for a finished one.
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
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    say = (lambda *a: None) if quiet else (lambda msg: print(msg, flush=True))
    say(f"[data] rendering the real-music set ({len(classes)} classes x {tracks_per_class} "
        f"tracks x {seconds:g} s, {workers} processes) in {root}")
    t0 = time.perf_counter()
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
                u = r["unit"]
                done += 1
                if r["audio"] is None or r["fingerprint"] in seen:
                    skipped.append({"source": u.source, "class": u.style,
                                    "reason": r["error"] or "duplicate score"})
                elif twin := next((k for k in melodies
                                   if same_melody(k["melody"], r["melody"])), None):
                    # Dropped, not kept beside its twin in one work: a tune twice in a class
                    # weighs double in training and is one answer counted twice in a test,
                    # and the classes with near-duplicates have candidates to spare.
                    twin["near_duplicates"] += 1
                    skipped.append({"source": u.source, "class": u.style,
                                    "reason": f"same melody as {twin['unit'].source}"})
                else:
                    seen.add(r["fingerprint"])
                    melodies.append(r)
                    r["near_duplicates"] = 0
                    kept[u.style].append(r)
                if done % 25 == 0:
                    n = sum(map(len, kept.values()))
                    say(f"[data] real music: {n}/{tracks_per_class * len(classes)} tracks "
                        f"({time.perf_counter() - t0:.0f} s)")
    tmp.mkdir(parents=True, exist_ok=True)
    with open(tmp / "skipped.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["source", "class", "reason"])
        w.writeheader()
        w.writerows(skipped)
    short = {c: len(v) for c, v in kept.items() if len(v) < min_tracks}
    if short:
        raise RuntimeError(f"the corpus gave too few tracks for {short} (at least {min_tracks} "
                           f"each); what was skipped and why: {tmp / 'skipped.csv'}")
    rows = []
    ordered = [r for c in classes for r in kept[c]]
    works = name_works([r["work_keys"] for r in ordered])
    for c in classes:
        (tmp / c).mkdir(parents=True, exist_ok=True)
        for k, r in enumerate(kept[c]):
            name = f"{c}/{c}.{k:05d}.wav"
            sf.write(tmp / name, r["audio"], SAMPLE_RATE, subtype="PCM_16")
            rows.append({"file": name, "class": c, "source": r["unit"].source,
                         "title": r["title"], "work": works[len(rows)], **{k2: r[k2] for k2 in (
                             "parts", "programs", "tempo", "transpose", "score_seconds",
                             "looped", "melody", "near_duplicates")}})
    with open(tmp / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    # What the data preparation reads (raygenre.data.splits.GROUPS_FILE): one work, one split.
    with open(tmp / "groups.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "group"])
        w.writerows((r["file"], r["work"]) for r in rows)
    near = sum(r["near_duplicates"] for r in rows)
    n_works = {c: len({r["work"] for r in rows if r["class"] == c}) for c in classes}
    (tmp / "DONE").write_text(json.dumps({
        "version": GENERATOR_VERSION, "seed": seed, "tracks_per_class": tracks_per_class,
        "seconds": seconds, "classes": {c: CLASSES[c].description for c in classes},
        "soundfont": soundfont_path().name, "music21": music21_version(),
        "works": n_works, "near_duplicates_dropped": near,
        "render_seconds": round(time.perf_counter() - t0, 1),
    }, indent=1))
    try:
        tmp.rename(root)
    except OSError:  # another process finished first: theirs is identical
        if not (root / "DONE").exists():
            raise
    say(f"[data] real music: {len(rows)} tracks of {sum(n_works.values())} works in "
        f"{time.perf_counter() - t0:.0f} s ({len(skipped)} candidates skipped, {near} of them "
        f"near-duplicates of a kept tune; see skipped.csv)")
    return root


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
