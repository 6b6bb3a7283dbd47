"""The grading pool Stage A and evaluation share: every response scored by its task's pure `score`, in threads.

Code tasks spend their grading time waiting on sandbox processes, and the math grader on its worker process, so
threads overlap them well; the pool lives as long as the process because graders may keep per-thread helpers.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from dapo.graders.code import default_workers
from dapo.tasks.base import Example, Task


def score_responses(task: Task, examples: Sequence[Example], responses: Sequence[Sequence[str]]) -> list[list[float]]:
    """`task.score` of every response, (problems, samples), computed in a long-lived pool of two threads per core
    (as many as sandboxed code checks use well; long-lived, because graders may keep per-thread helpers: the math
    grader's process, for instance)."""
    pairs = [(ex, r) for ex, rs in zip(examples, responses, strict=True) for r in rs]
    flat = list(_scoring_pool().map(lambda pair: float(task.score(*pair)), pairs))
    scores, position = [], 0
    for rs in responses:
        scores.append(flat[position : position + len(rs)])
        position += len(rs)
    return scores


@functools.cache
def _scoring_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=default_workers(), thread_name_prefix="dapo-score")


os.register_at_fork(after_in_child=_scoring_pool.cache_clear)  # a forked child has none of the pool's threads
