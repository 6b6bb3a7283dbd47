"""Tasks: problem sources with pure scoring functions, and their conversion to `problems` records."""

from .arith import ArithTask
from .base import Example, Task, chat_renderer, problem_rows, write_problems
from .competition import AIMETask, AMCTask
from .gsm8k import GSM8KTask
from .gsm_symbolic import GSMSymbolicTask
from .humaneval import HumanEvalTask
from .math import MathTask
from .mbpp import MBPPTask

TASKS: dict[str, type[Task]] = {
    ArithTask.name: ArithTask,
    MathTask.name: MathTask,
    GSM8KTask.name: GSM8KTask,
    GSMSymbolicTask.name: GSMSymbolicTask,
    HumanEvalTask.name: HumanEvalTask,
    MBPPTask.name: MBPPTask,
    AMCTask.name: AMCTask,
    AIMETask.name: AIMETask,
}
"""Task classes by name, for `dapo evaluate --task NAME`."""
GENERATED = (ArithTask.name, GSMSymbolicTask.name)
"""Tasks that generate their problems (no `data` to load)."""


def task_named(name: str, data: str | None = None) -> Task:
    """The task called `name` with default settings; `data` (a path or hub dataset) replaces its default rows."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    if data is None:
        return TASKS[name]()
    if name in GENERATED:
        raise ValueError(f"task {name!r} generates its problems and takes no data; leave data unset")
    return TASKS[name](data=data)  # type: ignore[call-arg]


__all__ = [
    "TASKS",
    "AIMETask",
    "AMCTask",
    "ArithTask",
    "Example",
    "GSM8KTask",
    "GSMSymbolicTask",
    "HumanEvalTask",
    "MBPPTask",
    "MathTask",
    "Task",
    "chat_renderer",
    "problem_rows",
    "task_named",
    "write_problems",
]
