"""The sweep: everything that knows about Ray Tune (and, for data-parallel trials, Ray Train).

cli (the command) -> pipeline (`all`) -> tuner (one sweep: data, checks, Tuner.fit)
  plan: how many trials at once, each how big, from the nodes Ray reports
  runners: the trial body (the loop in the Tune trial, or under Ray Train) and its seams
  asha, callbacks: ASHA that survives a resume; progress lines and TensorBoard
  run_state: what a run folder holds and whether to start, resume or refuse
  cluster: starting or joining Ray, and where the run folder may live
"""
