"""raygenre: Ray Tune experiment grids for music-genre classification.

From Python (docs/api.md):

    import raygenre
    res = raygenre.run("batch_epoch", smoke=True)
    res.best["verdict"], res.cells, res.load_model()

The command line, `python -m raygenre.grid`, runs the same engine.
"""

# First: the command's quick exit must be the first exit hook registered, so it runs last.
from raygenre.sweep import quick_exit  # noqa: F401

# isort: split
from raygenre.api import Results, RunOptions, load, run, run_options
from raygenre.config import ConfigError
from raygenre.errors import DataError, Interrupted, NoResults

__all__ = ["ConfigError", "DataError", "Interrupted", "NoResults", "Results", "RunOptions",
           "load", "run", "run_options"]
