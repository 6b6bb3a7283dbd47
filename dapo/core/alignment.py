"""Find step boundaries on the tokenized full text.

Steps are never tokenized one by one: BPE may merge characters across a step boundary, so the tokens of a
prefix are not always a prefix of the tokens of the whole. Instead the full text is tokenized once and every
step's end (a character position) is mapped to a token through the offset mapping.

Rule at a boundary that falls inside a token: the token holding the state's last character is the state's
last token (the critic reads V(s) there, having seen all of s), and any token holding a character of an action
is one of the action's tokens (its log-prob counts towards log pi(a|s)). With newline delimiters and the usual
byte-level pre-tokenization no token straddles a boundary, so both rules coincide with the plain split.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import NamedTuple

from transformers import PreTrainedTokenizerBase

Offsets = Sequence[tuple[int, int]]


class TokenizedTrajectory(NamedTuple):
    input_ids: list[int]
    boundaries: list[int]  # token index of the last token of s_0..s_T (prompt end, then each step's end)


def _text_tokens(offsets: Offsets) -> tuple[list[int], list[int], list[int]]:
    """Indices, starts and ends of the tokens that cover text (special tokens have empty offsets)."""
    kept = [(i, s, e) for i, (s, e) in enumerate(offsets) if e > s]
    return [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]


def last_token_indices(offsets: Offsets, char_ends: Sequence[int]) -> list[int]:
    """For each character position e, the index of the token holding character e - 1."""
    index, starts, _ = _text_tokens(offsets)
    out = []
    for end in char_ends:
        k = bisect.bisect_left(starts, end) - 1  # last text token starting before `end`
        if end <= 0 or k < 0:
            raise ValueError(f"no token ends the text before character {end}")
        out.append(index[k])
    return out


def token_span(offsets: Offsets, char_start: int, char_end: int) -> tuple[int, int]:
    """[first, last + 1) token indices of the tokens holding any character of text[char_start:char_end]."""
    index, starts, ends = _text_tokens(offsets)
    first = bisect.bisect_right(ends, char_start)  # first token ending after char_start
    last = bisect.bisect_left(starts, char_end) - 1  # last token starting before char_end
    if char_end <= char_start or first > last:
        raise ValueError(f"no token covers characters {char_start}..{char_end}")
    return index[first], index[last] + 1


def tokenize_with_offsets(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], Offsets]:
    """Token ids and character offsets of `text` (special tokens included as the tokenizer adds them)."""
    if not tokenizer.is_fast:
        raise TypeError("step alignment needs a fast (Rust) tokenizer: it reads the offset mapping")
    encoded = tokenizer(text, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def tokenize_trajectory(tokenizer: PreTrainedTokenizerBase, prompt: str, steps: Sequence[str]) -> TokenizedTrajectory:
    """Tokenize prompt + steps once; return ids and the last token index of every state s_0..s_T."""
    if not prompt:
        raise ValueError("empty prompt: state s_0 has no token to read a value at")
    if any(not step for step in steps):
        raise ValueError("empty step: every step must hold at least one character")
    ends = [len(prompt)]
    for step in steps:
        ends.append(ends[-1] + len(step))
    input_ids, offsets = tokenize_with_offsets(tokenizer, prompt + "".join(steps))
    return TokenizedTrajectory(input_ids, last_token_indices(offsets, ends))
