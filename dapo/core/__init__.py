"""The bottom layer: pure functions every other layer builds on, importing nothing else of dapo.

steps (splitting a response into steps), alignment (steps to token positions), padding, packing (a state and its
candidate actions in one row) and batching (token-budgeted batches), losses (DAPO's and the critic's), stats
(intervals, pass@k), distributed (gather and barriers that are no-ops in one process), fingerprint (a model
folder's identity) and errors (the messages a user acts on).
"""
