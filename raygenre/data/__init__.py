"""Audio and data sets: decoding, generated and music sets, splits, features, the test ledger.

May import: raygenre.config, .errors, .deps, .storage, .paths. Never training/, grid/, sweep/,
report/ (the data must not know who trains on it, so a set prepared once serves every sweep).
"""
