"""What a track of the real-music set is, and which tracks are one work or one tune.

A work (a quartet's movements, a mass's sections, the variants of a folk tune) must not sit on
both sides of a split: `work_keys` names it from the corpus path and the score's header, and
`name_works` joins tracks that share a name. The same tune under another name (another
harmonisation, another key) is caught by `melody_fingerprint` and `same_melody`. Used by
`raygenre.data.music`, which renders the set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Unit:
    """One candidate track: a corpus file, and the tune number inside a multi-tune ABC file."""

    style: str
    path: str  # relative to music21/corpus
    number: int | None

    @property
    def source(self) -> str:
        return self.path + (f"#{self.number}" if self.number is not None else "")


def score_header(unit: Unit) -> str:
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
    """Names of the work `unit` belongs to, from its corpus path and `header` (`score_header`); two
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
