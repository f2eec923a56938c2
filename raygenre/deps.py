"""torchaudio, imported only after checking that it was built for the installed torch.

pyproject.toml asks for a range of torch and torchaudio so that a runtime's own pair (Colab's)
is kept. A torchaudio works only with the torch minor it was built against, and from 2.9 on its
wheel's metadata no longer requires that torch, so pip installs a mismatched pair without a word
and the failure comes later as an undefined symbol or a wrong kernel. This refuses it up front.
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
    have = ".".join(map(str, _minor(torch_version)))
    built = ".".join(map(str, _minor(torchaudio_version)))
    return (f"torchaudio {torchaudio_version} is built for torch {built}.x, but torch "
            f"{torch_version} is installed: install the pair of one minor, e.g. "
            f"pip install 'torchaudio=={have}.*' (or 'torch=={built}.*')")


_error = pair_error(version("torch"), version("torchaudio"))
if _error:
    raise ImportError(_error)

import torchaudio  # noqa: E402  (only once the pair is known to match)

__all__ = ["pair_error", "torchaudio"]
