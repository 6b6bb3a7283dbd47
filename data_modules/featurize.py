"""Records -> token items for the two training modes, tokenizing each text exactly once.

critic: the states of one solution form a trajectory; its full text is tokenized once and every state's
        MC value sits at that state's last token (dapo.core.alignment).
actor:  the actions of one state form a shared-prefix group (dapo.core.packing); each state + action is tokenized
        as one text and the action's tokens are found by offsets. A terminal action ends with the
        end-of-sequence token, because ending the solution is part of what that action does.
Overlong or malformed groups raise a RecordError naming the record, or are skipped and counted when
`strict` is False.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from dapo.core.alignment import last_token_indices, token_span, tokenize_trajectory, tokenize_with_offsets
from dapo.core.packing import TokenGroup, common_prefix_length, group_rows, unpacked_length
from dapo.core.steps import DEFAULT_DELIMITER, join_steps
from dapo.records import RecordError, SkipCounter

from .collate import ActorItem, CriticItem, CriticTree


def check_steps(steps: Sequence[str], delimiter: str, last_may_end: bool = True) -> None:
    """Every step is non-empty and ends with the delimiter, except that the last may stop without one (a response's
    final line): a step missing its delimiter would run into the next one and put a state boundary mid-step."""
    for k, step in enumerate(steps):
        if not step.strip():
            raise RecordError(f"step {k} is empty")
        if not step.endswith(delimiter) and not (last_may_end and k == len(steps) - 1):
            raise RecordError(f"step {k} does not end with the step delimiter {delimiter!r}: {step[-40:]!r}")


def _group(rows: Iterable[Mapping[str, Any]], key: str) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    return groups


def _trajectory_targets(sid: str, states: list[Mapping[str, Any]]) -> tuple[list[float], list[bool]]:
    """Per-boundary targets and mask of one solution; raises on inconsistent or duplicate states."""
    first = states[0]
    n_states = len(first["steps"]) + 1
    targets, mask = [0.0] * n_states, [False] * n_states
    for state in states:
        t = state["t"]
        if state["prompt"] != first["prompt"] or list(state["steps"]) != list(first["steps"]):
            raise RecordError(f"solution {sid!r}: state t={t} disagrees with t={first['t']} on prompt or steps")
        if not 0 <= t < n_states or mask[t]:
            raise RecordError(f"solution {sid!r}: state t={t} is out of range 0..{n_states - 1} or repeated")
        targets[t], mask[t] = float(state["mc_value"]), True
    return targets, mask


def critic_items(
    states: Iterable[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    strict: bool = True,
    delimiter: str = DEFAULT_DELIMITER,
) -> tuple[list[CriticItem], SkipCounter]:
    """One item per solution: token ids, the last token of every state, MC targets and their mask."""
    items, skipped = [], SkipCounter()
    for sid, group in _group(states, "solution_id").items():
        try:
            if not group[0]["steps"] and not any(state.get("n_rollouts") for state in group):  # vs. cut-off ones
                raise RecordError("an empty response: the solution has no steps")
            check_steps(group[0]["steps"], delimiter)
            targets, mask = _trajectory_targets(sid, group)
            ids, boundaries = tokenize_trajectory(tokenizer, group[0]["prompt"], group[0]["steps"])
        except (RecordError, ValueError) as error:
            skipped.skip_or_raise(strict, f"states of solution {sid!r}: {error}", "malformed")
            continue
        if len(ids) > max_length:
            skipped.skip_or_raise(
                strict, f"solution {sid!r} has {len(ids)} tokens, over max_length={max_length}", "too long"
            )
            continue
        items.append(CriticItem(key=sid, input_ids=ids, boundaries=boundaries, targets=targets, target_mask=mask))
    return items, skipped


def critic_trees(items: Sequence[CriticItem], problem_of: Mapping[str, str]) -> list[CriticTree]:
    """The trajectories of each problem (`problem_of`: solution id -> problem id) as one shared-prefix tree: the
    tokens all its trajectories start with (the prompt, at least) once, then each trajectory's rest. Values are
    unchanged, because a causal model gives a shared token the same hidden state whichever row it sits in."""
    by_problem: dict[str, list[CriticItem]] = {}
    for item in items:
        by_problem.setdefault(problem_of[item["key"]], []).append(item)
    trees = []
    for problem, group in by_problem.items():
        rows = [item["input_ids"] for item in group]
        shared = min(common_prefix_length(rows[0], row) for row in rows)
        prefix, suffixes = list(rows[0][:shared]), [list(row[shared:]) for row in rows]
        tokens = TokenGroup(prefix=prefix, suffixes=suffixes, starts=[len(row) for row in rows])
        trees.append(CriticTree(key=problem, trajectories=list(group), group=tokens))
    return trees


def action_row(tokenizer: PreTrainedTokenizerBase, prefix: str, action: str, append_eos: bool) -> tuple[list[int], int]:
    """Token ids of prefix + action (+ eos) and the index of the action's first token (its tokens run to the end).

    A terminal action appends eos, because ending the solution is part of what it does; an empty terminal action
    is the eos alone. Without eos an empty action has no tokens (start == len(ids)).
    """
    ids, offsets = tokenize_with_offsets(tokenizer, prefix + action)
    if action:
        start, end = token_span(offsets, len(prefix), len(prefix) + len(action))
    else:
        end = last_token_indices(offsets, [len(prefix)])[0] + 1
        start = end
    ids = ids[:end]  # drop special tokens a tokenizer may append
    if append_eos:
        if tokenizer.eos_token_id is None:
            raise ValueError("terminal actions end with eos, but the tokenizer has no eos token")
        ids.append(tokenizer.eos_token_id)
    return ids, start


def state_group(
    tokenizer: PreTrainedTokenizerBase, prefix: str, actions: Sequence[str], append_eos: Sequence[bool]
) -> TokenGroup:
    """The candidate actions of the state `prefix` as one shared-prefix group (dapo.core.packing)."""
    rows = [action_row(tokenizer, prefix, a, eos) for a, eos in zip(actions, append_eos, strict=True)]
    return group_rows([ids for ids, _ in rows], [start for _, start in rows])


def actor_items(
    actions: Iterable[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    strict: bool = True,
    delimiter: str = DEFAULT_DELIMITER,
) -> tuple[list[ActorItem], SkipCounter]:
    """One item per state: its candidate actions as a shared-prefix group, with advantages and reference
    log-probs. `max_length` bounds the longest single state + action row (the largest position id)."""
    items, skipped = [], SkipCounter()
    for state_id, group in _group(actions, "state_id").items():
        prefix = group[0]["prompt"] + join_steps(group[0]["state_steps"])
        try:
            if any(a["prompt"] + join_steps(a["state_steps"]) != prefix for a in group):
                raise RecordError("its actions disagree on the state's text")
            check_steps(group[0]["state_steps"], delimiter, last_may_end=False)
            for a in group:  # a non-terminal action is one whole step; a terminal one may be empty or end unfinished
                if not a["is_terminal"]:
                    check_steps([a["action"]], delimiter, last_may_end=False)
            tokens = state_group(tokenizer, prefix, [a["action"] for a in group], [a["is_terminal"] for a in group])
        except (RecordError, ValueError) as error:
            skipped.skip_or_raise(strict, f"actions of state {state_id!r}: {error}", "malformed")
            continue
        longest = unpacked_length(tokens)
        if longest > max_length:
            message = f"state {state_id!r} has an action row of {longest} tokens, over max_length={max_length}"
            skipped.skip_or_raise(strict, message, "too long")
            continue
        items.append(
            ActorItem(
                **tokens,
                key=state_id,
                advantages=[float(a["advantage"]) for a in group],
                ref_logprobs=[float(a["ref_logprob"]) for a in group],
                weights=[float(a["weight"]) for a in group],
            )
        )
    return items, skipped
