"""The sweep: everything that knows about Ray: Tune, Ray Data and (data-parallel trials) Train.
May import every other package of raygenre; it is the only one that imports Ray.

cli (the command) -> pipeline (`all`) -> tuner (one sweep: data, checks, Tuner.fit)
  plan: how many trials at once, each how big, from the nodes Ray reports
  runners: the trial body (the loop in the Tune trial, or under Ray Train) and its seams
  feed: prepared splits into Ray's object store, and back out as each runner's batches
  asha, callbacks: ASHA that survives a resume; progress lines and TensorBoard
  run_state: what a run folder holds and whether to start, resume or refuse
  cluster: starting or joining Ray, and where the run folder may live
  ray_private: the Ray versions the fast paths through Ray's private modules were checked
    against (any other Ray takes the public API)
"""
