"""Audio files: which a folder holds (`<root>/<genre>/<file>`), and their samples.

Decoded by soundfile (.au .wav .flac .ogg .mp3); torchaudio only resamples. What cannot be
read is a DataError naming the file, so a preparation can set it aside with the reason.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from raygenre.data.splits import Track
from raygenre.deps import torchaudio
from raygenre.errors import DataError

AUDIO_EXTS = (".au", ".wav", ".flac", ".ogg", ".mp3")
# What soundfile raises for a file it cannot decode (LibsndfileError is a RuntimeError; a
# cut-off header can surface as a ValueError or EOFError). Anything else, such as a TypeError,
# is a bug in raygenre and is raised as such, not reported as a bad file.
DECODE_ERRORS = (RuntimeError, ValueError, EOFError, OSError)


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise DataError(f"cannot read folder {folder} ({e.strerror or e}); check its "
                        f"permissions") from e


def _kind(p: Path) -> str:
    """'dir', 'file', 'loop' (a symbolic link that never resolves) or 'other'."""
    try:
        if p.is_symlink():
            p.resolve(strict=True)
        return "dir" if p.is_dir() else "file" if p.is_file() else "other"
    except RuntimeError:  # Path.resolve raises this on a symlink loop
        return "loop"
    except OSError:
        return "loop" if p.is_symlink() else "other"


def discover(root: str | os.PathLike) -> tuple[list[Track], list[tuple[str, str]]]:
    """Audio tracks under `root`, sorted, and (path, reason) for what was set aside.

    Hidden entries and files without an audio extension are ignored without a word (GTZAN
    copies carry .DS_Store, README files and the like); broken links are reported.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder (expected <root>/<genre>/<file>)")
    skipped: list[tuple[str, str]] = []
    tracks: list[Track] = []
    loose = 0
    for entry in _entries(root):
        if entry.name.startswith("."):
            continue
        kind = _kind(entry)
        if kind == "loop":
            skipped.append((str(entry), "symbolic link loop or broken link; ignored"))
        elif kind == "file" and entry.suffix.lower() in AUDIO_EXTS:
            loose += 1
        elif kind == "dir":
            files = []
            for f in _entries(entry):
                if f.name.startswith(".") or f.suffix.lower() not in AUDIO_EXTS:
                    continue
                fk = _kind(f)
                if fk == "file":
                    files.append(f)
                elif fk == "loop":
                    skipped.append((str(f), "symbolic link loop or broken link; ignored"))
            if not files:
                skipped.append((str(entry), "genre folder holds no audio files; genre left out"))
            tracks += [Track(entry.name, f, f"{entry.name}/{f.name}") for f in files]
    genres = sorted({t.genre for t in tracks})
    if len(genres) < 2:
        if loose and not genres:
            found = (f"{loose} audio file(s) lie directly in it but no genre folder holds any; "
                     f"put each genre's files in <root>/<genre>/")
        else:
            found = (f"only genre {genres[0]!r} has audio files" if genres
                     else "no genre folder with audio files")
        raise DataError(f"data path {root}: {found}; expected at least two "
                        f"<root>/<genre>/ folders holding {', '.join(AUDIO_EXTS)} files")
    return tracks, skipped


def load_audio(path: str | os.PathLike, sample_rate: int, raw: bytes | None = None
               ) -> np.ndarray:
    """Mono float32 at `sample_rate`, from the file or from its bytes `raw` when the caller has
    read them already. Raises DataError naming the file if it cannot be decoded."""
    if (len(raw) if raw is not None else os.path.getsize(path)) == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        source = io.BytesIO(raw) if raw is not None else str(path)
        data, sr = sf.read(source, dtype="float32", always_2d=True)
    except DECODE_ERRORS as e:  # what libsndfile says of a file it cannot read
        raise DataError(f"{path}: cannot decode audio ({type(e).__name__}: {e})") from e
    if not np.isfinite(data).all():
        raise DataError(f"{path}: holds NaN or infinite samples")
    mono = data.mean(axis=1)
    if sr != sample_rate:
        mono = torchaudio.functional.resample(torch.from_numpy(mono), sr, sample_rate).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def segment(wave: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping segments of `length` samples; the remainder is dropped."""
    k = len(wave) // length
    return wave[: k * length].reshape(k, length)


def unusable(path: Path, raw: bytes, sample_rate: int, seg_len: int,
              seconds: float) -> str | None:
    """Why a file cannot give a segment, or None. Decodes it whole: a file corrupt halfway
    through must be caught here, not while writing."""
    try:
        wave = load_audio(path, sample_rate, raw)
    except DataError as e:
        return str(e).split(": ", 1)[-1]
    if len(wave) < seg_len:
        return f"shorter than one {seconds:g}-s segment ({len(wave) / sample_rate:.2f} s)"
    return None
