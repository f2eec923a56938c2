"""Tools run on a sweep's results or beside it: `fresh_splits` (a grid's recipes on test splits
no search has read, its sweeps started as `python -m raygenre.grid` commands) and `screen` (a
grid's variants over seeds without Ray), each a console entry and a `python -m` module.

May import: raygenre.config, .errors, .storage, .paths, .api, raygenre.data, raygenre.training,
raygenre.grid, raygenre.report, raygenre.sweep. Never Ray itself (a sweep is started through
the sweep package or its command), and nothing from bench/ (which the wheel does not ship).
"""
