"""Tasks: problem sources with pure scoring functions, and their conversion to `problems` records."""

from .arith import ArithTask
from .base import Example, Task, problem_rows, write_problems

__all__ = ["ArithTask", "Example", "Task", "problem_rows", "write_problems"]
