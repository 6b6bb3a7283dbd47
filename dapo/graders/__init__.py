"""Graders: decide whether a response is right. `math` compares final answers for equivalence; `code` runs
generated programs against their tests in a sandbox. Tasks' pure `score` functions call these."""
