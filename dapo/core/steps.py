"""Split a response into reasoning steps, and join them back, losslessly.

A step ends with the delimiter (default one newline, as in the paper). A blank line (only whitespace before the
delimiter) is never a step of its own: it joins the step that follows it, or the last step when nothing follows.
`join_steps(split_steps(y)) == y` for every string, so a state's text is always a literal prefix of the response.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_DELIMITER = "\n"


def _pieces(text: str, delimiter: str) -> list[str]:
    """Chunks of `text` that each end with `delimiter`, except possibly the last."""
    pieces, start = [], 0
    while (end := text.find(delimiter, start)) != -1:
        pieces.append(text[start : end + len(delimiter)])
        start = end + len(delimiter)
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _is_blank(piece: str, delimiter: str) -> bool:
    return piece.removesuffix(delimiter).strip() == ""


def split_steps(text: str, delimiter: str = DEFAULT_DELIMITER) -> list[str]:
    """Steps of `text`; none is blank-only unless the whole text is. "" gives []."""
    if not delimiter:
        raise ValueError("the step delimiter must be a non-empty string")
    steps: list[str] = []
    pending = ""  # blank lines waiting for the next real step
    for piece in _pieces(text, delimiter):
        if _is_blank(piece, delimiter):
            pending += piece
        else:
            steps.append(pending + piece)
            pending = ""
    if pending:
        if steps:
            steps[-1] += pending
        else:
            steps.append(pending)
    return steps


def first_step(text: str, delimiter: str = DEFAULT_DELIMITER) -> str | None:
    """The first step of `text` once it is complete (up to and including its delimiter), else None.

    Blank lines before it belong to it, as in `split_steps`; text after it is not included, so
    `split_steps(first_step(t)) == [first_step(t)]` and `t.startswith(first_step(t))`.
    """
    if not delimiter:
        raise ValueError("the step delimiter must be a non-empty string")
    consumed = 0
    for piece in _pieces(text, delimiter):
        consumed += len(piece)
        if piece.endswith(delimiter) and not _is_blank(piece, delimiter):
            return text[:consumed]
    return None


def whole_steps(text: str, delimiter: str = DEFAULT_DELIMITER) -> list[str]:
    """The steps of a text that was cut off mid-way: those its delimiter closed (an unfinished last one is not a
    step)."""
    steps = split_steps(text, delimiter)
    return steps if steps and steps[-1].endswith(delimiter) else steps[:-1]


def join_steps(steps: Sequence[str]) -> str:
    """Inverse of `split_steps`: steps already carry their delimiters."""
    return "".join(steps)


def state_text(prompt: str, steps: Sequence[str], t: int) -> str:
    """Text of state s_t: the prompt followed by the first `t` steps (t = 0 is the prompt alone)."""
    if not 0 <= t <= len(steps):
        raise ValueError(f"state index t={t} is outside 0..{len(steps)} for a solution of {len(steps)} steps")
    return prompt + join_steps(steps[:t])
