"""The grid and how it is run: grid files as deltas over `Config`, their cells and objective,
and the run options shared by the command line and `raygenre.run`.

May import: raygenre.config, .errors, .storage, .paths, raygenre.data, raygenre.training
(their registries check a grid's values at load). Never sweep/ or report/, and never Ray.
"""
