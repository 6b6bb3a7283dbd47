"""Stage B data: step-level advantages of candidate actions, and their reference log-probs.

For every state s of Stage A with rollouts, the candidates a_1..a_n are the first steps of its stored
completions (split exactly as Stage A splits solutions, so s + a_i is the state the policy would reach). A
candidate that is the whole completion ends the solution: it is terminal, and by default its value is its true
reward rather than the critic's estimate (`terminal_reward`). Then

    A(s, a_i) = V(s + a_i) - mean_j V(s + a_j)      (mean over all n candidates, duplicates included)

only unique actions are kept, and states whose gap max A - min A is under `min_gap` are dropped (they carry
no preference). Each kept action gets log pi_ref(a | s), summed over its tokens (a terminal action's eos
included), computed once with the reference policy, so actor training needs no reference model in memory.
Critic values and reference log-probs come from packed batches: a state's tokens once, all its candidates after.

Left out: value-model ensembles, length normalisation, re-sampling candidates (the completions are reused).

    dapo advantages --config configs/advantages.yaml
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo.core.distributed import world
from dapo.core.fingerprint import policy_fingerprint
from dapo.core.packing import packed_length
from dapo.core.padding import pad_id_of
from dapo.core.steps import DEFAULT_DELIMITER, join_steps
from dapo.data_modules.featurize import check_steps, state_group
from dapo.models.adapters import LoadIn, frozen
from dapo.models.memory import AttnImplementation, check_attention
from dapo.models.outputs import critic_values, policy_logprobs, score_with_model
from dapo.models.value import ValueModel
from dapo.records import Provenance, RecordError, SkipCounter, read_provenance, read_records, write_json, write_records
from dapo.stages.action_selection import (
    ACTION_WEIGHTINGS,
    ActionWeighting,
    Candidate,
    ScoredAction,
    blend_with_rollouts,
    candidates,
    select_actions,
)

PRODUCER = "dapo advantages"
__all__ = [  # the selection math lives in action_selection; these names stay importable from here
    "ActionWeighting",
    "AdvantageConfig",
    "Candidate",
    "ScoredAction",
    "blend_with_rollouts",
    "candidates",
    "run_advantages",
    "select_actions",
]


@dataclass
class AdvantageConfig:
    """Stage B scoring: which states, critic and reference policy, and how actions are selected."""

    states_path: str = ""
    """Stage A `states` records (their completions are the candidate actions)."""
    critic_path: str | None = None
    """Hugging Face folder of the trained critic (`dapo export`); None leaves the stage off in a fit config."""
    policy_path: str = ""
    """Reference policy: the one that sampled the completions and that the actor starts from."""
    out_dir: str = ""
    """Output folder: `actions/` records and `summary.json`."""
    min_gap: float = 0.1
    """Drop states whose advantage gap max A - min A is below this."""
    terminal_reward: bool = True
    """A candidate that ends the solution takes its true reward as V(s + a) instead of the critic's value."""
    delimiter: str = DEFAULT_DELIMITER
    """Step delimiter (the one Stage A split solutions with)."""
    max_tokens: int = 8192
    """Packed tokens per forward pass when scoring."""
    device: str | None = None
    """Where the critic and the policy score ("cuda", "cpu", ...); None: the first GPU if there is one, else CPU."""
    load_in: LoadIn | None = None
    """Load the critic and the reference policy in "8bit" or "4bit" (nf4) through bitsandbytes; match the actor's
    `load_in` (QLoRA) so its log-ratios start at 0."""
    attn_implementation: AttnImplementation = "sdpa"
    """Attention kernel of the critic and the reference policy: "sdpa", "eager" or "flash_attention_2" (needs
    `flash-attn`, a GPU); match the actor's so that its log-ratios start at 0."""
    strict: bool = True
    """Raise on a malformed state (see docs/reliability.md); False: skip it, count it, report the counts."""
    critic_weight: float | None = None
    """None: V(s + a) is the critic's value (the paper). A number k: V(s + a) also averages the rewards of the
    state's rollouts that began with a, the critic's value counting as k of them (0: the rollouts alone), as
    `blend_with_rollouts` computes. On the demo's arith (seed 0), against exact step labels the critic's advantage
    had the right sign for 69% of kept actions (the rollouts' 91% was over every sampled first step, another
    population; docs/demo.md)."""
    action_weight: ActionWeighting = "uniform"
    """Each unique action's share of its state's loss (the exploratory distribution nu): "uniform" (the paper) or
    "count" (how many of the state's candidates were that action; see `select_actions`)."""

    def __post_init__(self) -> None:
        check_attention(self.attn_implementation)
        if self.critic_weight is not None and self.critic_weight < 0:
            raise ValueError(f"critic_weight must be >= 0 or None, got {self.critic_weight}")
        if self.action_weight not in ACTION_WEIGHTINGS:
            raise ValueError(f"action_weight must be 'uniform' or 'count', got {self.action_weight!r}")
        if self.min_gap < 0:
            raise ValueError(f"min_gap must be >= 0, got {self.min_gap}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not self.delimiter:
            raise ValueError("delimiter must be a non-empty string")


class ScoringWork(NamedTuple):
    """How much scoring a run did: (state, candidate) pairs the critic scored, and the tokens of both models."""

    critic_scored: int
    tokens_critic: int
    tokens_reference: int


class Clock(NamedTuple):
    """perf_counter readings: at the start, when the critic finished, at the end."""

    start: float
    critic_done: float
    end: float


@dataclass
class AdvantageSummary:
    """What a Stage B scoring run did; also written to `out_dir/summary.json`."""

    states: int
    """States with candidates (terminal states have none)."""
    candidates: int
    """Candidate actions, duplicates included."""
    critic_scored: int
    """Unique non-terminal (state, action) pairs the critic scored."""
    states_kept: int
    """States whose advantage gap reached `min_gap`."""
    actions: int
    """Unique actions written (of kept states)."""
    terminal_actions: int
    """Of which end the solution."""
    tokens_critic: int
    """Tokens the critic ran over: each scored state once plus its unique non-terminal candidates (packed)."""
    tokens_reference: int
    """Tokens the reference policy ran over: each kept state once plus its actions (packed)."""
    seconds_critic: float
    seconds_reference: float
    seconds: float


class _State(NamedTuple):
    row: Mapping[str, Any]
    prefix: str
    cands: list[Candidate]


def _needs_critic(cand: Candidate, config: AdvantageConfig) -> bool:
    return not (cand.is_terminal and config.terminal_reward)


def scoring_device(device: str | None) -> torch.device:
    """`device`, or the first GPU if there is one, else CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _critic_values(states: Sequence[_State], config: AdvantageConfig) -> tuple[list[list[float]], int, int]:
    """V(s + a) of every candidate (true reward where terminal and `terminal_reward`), unique pairs scored once;
    with the number of pairs scored and the packed tokens they took."""
    assert config.critic_path is not None
    device = scoring_device(config.device)
    critic = frozen(ValueModel.from_pretrained, config.critic_path, config.load_in, device, config.attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(config.critic_path)
    to_score = [sorted({c.action for c in s.cands if _needs_critic(c, config)}) for s in states]
    groups = [
        state_group(tokenizer, s.prefix, actions, [False] * len(actions))
        for s, actions in zip(states, to_score, strict=True)
        if actions
    ]
    scored = iter(
        score_with_model(
            critic,
            lambda batch, packed: critic_values(critic, batch, packed),
            groups,
            vocab_size=critic.backbone.config.vocab_size,
            pad_id=pad_id_of(tokenizer),
            max_tokens=config.max_tokens,
            desc="critic values",
        )
    )
    values = []
    for state, actions in zip(states, to_score, strict=True):
        by_action = dict(zip(actions, next(scored), strict=True)) if actions else {}
        values.append([by_action[c.action] if _needs_critic(c, config) else c.reward for c in state.cands])
    return values, sum(len(a) for a in to_score), sum(packed_length(g) for g in groups)


def reference_logprobs(
    groups: Sequence[tuple[str, list[ScoredAction]]],
    policy_path: str,
    load_in: LoadIn | None,
    device: torch.device,
    max_tokens: int,
    attn_implementation: AttnImplementation = "sdpa",
) -> tuple[list[list[float]], int]:
    """log pi_ref(a | s) of every kept action, tokenized exactly as the actor's data module will, and the packed
    tokens they took."""
    policy = frozen(AutoModelForCausalLM.from_pretrained, policy_path, load_in, device, attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    token_groups = [
        state_group(tokenizer, prefix, [a.candidate.action for a in acts], [a.candidate.is_terminal for a in acts])
        for prefix, acts in groups
    ]
    logprobs = score_with_model(
        policy,
        lambda batch, packed: policy_logprobs(policy, batch, packed),
        token_groups,
        vocab_size=policy.config.vocab_size,
        pad_id=pad_id_of(tokenizer),
        max_tokens=max_tokens,
        desc="reference log-probs",
    )
    return logprobs, sum(packed_length(g) for g in token_groups)


def _action_row(state: _State, scored: ScoredAction, ref_logprob: float) -> dict[str, Any]:
    row = state.row
    return {
        "state_id": row["state_id"],
        "problem_id": row["problem_id"],
        "prompt": row["prompt"],
        "state_steps": list(row["steps"][: row["t"]]),
        "action": scored.candidate.action,
        "value": scored.value,
        "advantage": scored.advantage,
        "is_terminal": scored.candidate.is_terminal,
        "ref_logprob": ref_logprob,
        "weight": scored.weight,
    }


def provenance_config(config: AdvantageConfig) -> dict[str, Any]:
    """What the actions depend on: the settings, the Stage A run that made the states (by its provenance), and
    the weights of the critic and the reference policy. `device` and `attn_implementation` only change where and
    with which kernel the work runs (the kernels agree to about 1e-6)."""
    assert config.critic_path is not None
    states = read_provenance(config.states_path)
    return {k: v for k, v in asdict(config).items() if k not in ("device", "attn_implementation")} | {
        "states_made": {"policy_hash": states.policy_hash, "created": states.created},
        "critic_hash": policy_fingerprint(config.critic_path),
        "policy_hash": policy_fingerprint(config.policy_path),
    }


def check_state(row: Mapping[str, Any], delimiter: str) -> None:
    """A state Stage B can score: whole steps before it, one reward per completion, each finite and in [0, 1]."""
    terminal = row["t"] == len(row["steps"])  # the whole solution, whose last step may end without a delimiter
    check_steps(row["steps"][: row["t"]], delimiter, last_may_end=terminal)
    rewards = row["completion_rewards"]
    if len(rewards) != len(row["completions"]):
        raise RecordError(f"{len(row['completions'])} completions but {len(rewards)} completion_rewards")
    if len(row["completion_truncated"]) != len(row["completions"]):
        raise RecordError(f"{len(row['completions'])} completions but {len(row['completion_truncated'])} flags")
    if any(not (math.isfinite(r) and 0.0 <= r <= 1.0) for r in rewards):
        raise RecordError(f"completion_rewards {rewards} are not all finite numbers in [0, 1]")


def _states_with_candidates(config: AdvantageConfig) -> list[_State]:
    """The states of `config.states_path` that have completions, checked (`check_state`)."""
    states, skipped = [], SkipCounter()
    for i, row in enumerate(read_records(config.states_path, "states", config.strict)):
        try:
            check_state(row, config.delimiter)
        except RecordError as error:
            message = f"{config.states_path}: state {row['state_id']!r} (row {i}): {error}"
            skipped.skip_or_raise(config.strict, message, "malformed state")
            continue
        cut = row["completion_truncated"]
        if cands := candidates(row["completions"], row["completion_rewards"], config.delimiter, cut):
            states.append(_State(row, row["prompt"] + join_steps(row["steps"][: row["t"]]), cands))
    skipped.report(f"states of {config.states_path}")
    return states


def run_advantages(config: AdvantageConfig) -> AdvantageSummary:
    """Score every candidate, select actions, add reference log-probs; write `out_dir/actions` + summary.json."""
    for name in ("states_path", "critic_path", "policy_path", "out_dir"):
        if not getattr(config, name):
            raise ValueError(f"advantages.{name} is required")
    start = time.perf_counter()
    states = _states_with_candidates(config)
    if not states:
        raise ValueError(f"{config.states_path}: no state has completions to take candidate actions from")
    values, n_scored, tokens_critic = _critic_values(states, config)
    if config.critic_weight is not None:
        values = [blend_with_rollouts(s.cands, v, config.critic_weight) for s, v in zip(states, values, strict=True)]
    critic_done = time.perf_counter()
    weighting = config.action_weight
    selected = [select_actions(s.cands, v, config.min_gap, weighting) for s, v in zip(states, values, strict=True)]
    kept = [(s, acts) for s, acts in zip(states, selected, strict=True) if acts]
    logprobs, tokens_reference = (
        reference_logprobs(
            [(s.prefix, acts) for s, acts in kept],
            config.policy_path,
            config.load_in,
            scoring_device(config.device),
            config.max_tokens,
            config.attn_implementation,
        )
        if kept
        else ([], 0)
    )
    work = ScoringWork(n_scored, tokens_critic, tokens_reference)
    rows = [
        _action_row(state, scored, ref)
        for (state, acts), refs in zip(kept, logprobs, strict=True)
        for scored, ref in zip(acts, refs, strict=True)
    ]
    if world()[0] > 0:  # every rank scored its share; rank 0 writes
        return _summary(states, kept, rows, work, Clock(start, critic_done, time.perf_counter()))
    out = Path(config.out_dir)
    write_records(
        rows,
        out / "actions",
        "actions",
        Provenance(
            PRODUCER,
            config=provenance_config(config),
            policy_path=config.policy_path,
            policy_hash=policy_fingerprint(config.policy_path),
        ),
    )
    summary = _summary(states, kept, rows, work, Clock(start, critic_done, time.perf_counter()))
    write_json(out / "summary.json", asdict(summary))
    print(f"advantages: {json.dumps(asdict(summary))}")
    return summary


def _summary(
    states: Sequence[_State],
    kept: Sequence[tuple[_State, list[ScoredAction]]],
    rows: Sequence[Mapping[str, Any]],
    work: ScoringWork,
    clock: Clock,
) -> AdvantageSummary:
    return AdvantageSummary(
        states=len(states),
        candidates=sum(len(s.cands) for s in states),
        critic_scored=work.critic_scored,
        tokens_critic=work.tokens_critic,
        tokens_reference=work.tokens_reference,
        states_kept=len(kept),
        actions=len(rows),
        terminal_actions=sum(row["is_terminal"] for row in rows),
        seconds_critic=clock.critic_done - clock.start,
        seconds_reference=clock.end - clock.critic_done,
        seconds=clock.end - clock.start,
    )
