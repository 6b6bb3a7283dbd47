"""The generation interface every backend implements: n continuations per prompt, as text.

Stage A (solutions and MC rollouts), candidate actions and evaluation all call `Generator.generate`; a test can
pass a scripted generator, and a faster engine can replace the Hugging Face one without touching the stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dapo.core.steps import DEFAULT_DELIMITER


@dataclass
class SamplingParams:
    """How to sample continuations."""

    n: int = 1
    """Continuations per prompt."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    max_new_tokens: int = 256
    """Hard cap on generated tokens per continuation."""
    seed: int = 0
    """Sampling seed: the same prompts, params and seed give the same continuations."""
    one_step: bool = False
    """Stop each continuation after its first step (candidate actions)."""
    delimiter: str = DEFAULT_DELIMITER
    """Step delimiter used by `one_step`."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


class Completion(str):
    """A continuation's text that also says why it ended: `truncated` when `max_new_tokens` cut it off before the
    policy ended it (no end-of-sequence token; with `one_step`, no delimiter either). A truncated response is not a
    finished solution, and a truncated single step is not a whole step. Generators that cannot tell return plain
    strings, read as not truncated (`is_truncated`)."""

    truncated: bool

    def __new__(cls, text: str, truncated: bool) -> Completion:
        completion = super().__new__(cls, text)
        completion.truncated = truncated
        return completion

    def __reduce__(self) -> tuple[type[Completion], tuple[str, bool]]:
        return Completion, (str(self), self.truncated)  # pickled across processes (gathered evaluation results)


def is_truncated(text: str) -> bool:
    return bool(getattr(text, "truncated", False))


class Generator(Protocol):
    """Samples continuations of prompts."""

    tokens_generated: int
    """Running count of generated tokens (for throughput reporting)."""

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        """`params.n` continuations of each prompt: text after the prompt, without end-of-sequence tokens (each a
        `Completion` where the generator knows whether it was cut off)."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes as a continuation (encoded alone, no special tokens): what it spent of a
        `max_new_tokens` budget. Rollout reuse needs it to resume a cut-off continuation with the budget it had left
        (`dapo.stages.state_rollouts`)."""
        ...
