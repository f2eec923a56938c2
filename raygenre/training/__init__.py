"""The model and its loop: model, activation, optimizer and scheduler registries, what a trial
builds (builder: `build_training`, `Runtime`), one epoch loop, checkpoints, their scratch folders,
and track votes.

May import: raygenre.config, .errors, .deps, .storage, raygenre.data. Never grid/, sweep/,
report/ (the loop knows neither runner nor sweep: Ray reaches it only through its `Seam`).
"""
