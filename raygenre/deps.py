"""torchaudio, imported only after checking that it was built for the installed torch.

pyproject.toml asks for a range of torch and torchaudio so that a runtime's own pair (Colab's)
is kept. A torchaudio loads only with the torch it was built against. Up to 2.10 its metadata
requires that torch exactly, so pip refuses a mismatched pair; torchaudio 2.11.0 requires no
torch, so pip installs it beside an older torch without a word, and the failure comes later as
an undefined symbol in libtorchaudio. This refuses a pair of two minors up front, and turns a
library that does not load into an error that names both versions.
"""

from __future__ import annotations

from importlib.metadata import version


def _minor(v: str) -> tuple[int, int]:
    major, minor = v.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def pair_error(torch_version: str, torchaudio_version: str) -> str | None:
    """Why this torch/torchaudio pair cannot run together, or None when it can."""
    if _minor(torch_version) == _minor(torchaudio_version):
        return None
    built = ".".join(map(str, _minor(torchaudio_version)))
    return (f"torchaudio {torchaudio_version} is built for torch {built}.x, but torch "
            f"{torch_version} is installed: install the torchaudio of this torch, "
            f"pip install 'torchaudio=={torch_version.split('+')[0]}'")


_error = pair_error(version("torch"), version("torchaudio"))
if _error:
    raise ImportError(_error)

try:
    import torchaudio  # noqa: E402  (only once the pair is known to match)
except OSError as e:  # libtorchaudio built for another torch build of the same minor
    raise ImportError(
        f"torchaudio {version('torchaudio')} does not load with torch {version('torch')} ({e}): "
        f"install the torchaudio built for this torch, e.g. pip install "
        f"'torchaudio=={version('torch').split('+')[0]}'") from e

__all__ = ["pair_error", "torchaudio"]
