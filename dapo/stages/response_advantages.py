"""The response-level baseline's data, in DAPO's own loss family: whole responses as the actions of the prompt.

An outcome-only learner on the same Stage A samples, so the demo can ask whether step-level credit teaches more
than the outcome alone with everything else equal (the loss, beta, the reference log-probs, the tuning grid, the
training tokens, the action weighting). For each problem the group is every rollout Stage A drew from the prompt
itself: the completions of the kept solutions' first states (t = 0), n_keep x n_rollouts plain draws of the
policy, the ones the token limit cut off included (reward 0, as DAPO's values count them). Then

    A(prompt, y_i) = r(y_i) - mean_j r(y_j)      (GRPO's group baseline, offline; mean over the whole group)

with r the task's reward. As in Stage B, only unique responses are kept (with the advantage of their text, weighted
by `action_weight` as Stage B weighs its actions) and a problem whose gap max A - min A is under `min_gap` is
dropped: all its responses right, or all wrong, teach nothing. Each kept response is an action of the state
"prompt" with log pi_ref(y | x), scored with Stage B's `load_in` and attention kernel: a finished response is a
terminal action (eos appended), a cut-off one a non-terminal action (no eos: it is pushed down as the text it is,
never taught as an ending). The records are ordinary `actions`, so `ActorModule` trains on them unchanged.

Left out on purpose:
1. The kept `solutions`: Stage A chose them to balance right and wrong, so in the group they would bias the mean
   toward 1/2 (and their truncated ones were already dropped from the sample).
2. Prefix completions of later states (t > 0): they are not samples of the policy from the prompt.
3. Length normalisation and clipping (GRPO's online ratio clipping has no role offline with a squared loss).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from dapo.core.fingerprint import policy_fingerprint
from dapo.models.adapters import LoadIn
from dapo.models.memory import AttnImplementation, check_attention
from dapo.records import Provenance, read_provenance, read_records, write_json, write_records
from dapo.stages.action_selection import ActionWeighting, Candidate, ScoredAction, select_actions
from dapo.stages.candidate_advantages import reference_logprobs, scoring_device

PRODUCER = "dapo response advantages"


@dataclass
class ResponseAdvantageConfig:
    """Response-level actions from a Stage A run: which samples, which reference policy, which problems to keep."""

    stage_a_dir: str
    """Stage A output folder (its `solutions` and `states`)."""
    policy_path: str
    """Reference policy: the one that sampled the responses and that the actor starts from."""
    out_dir: str
    """Output folder: `actions/` records and `summary.json`."""
    min_gap: float = 0.1
    """Drop problems whose advantage gap max A - min A is below this (as Stage B drops states)."""
    max_tokens: int = 8192
    """Packed tokens per forward pass for the reference log-probs."""
    device: str | None = None
    """Where the reference policy scores; None: the first GPU if there is one, else CPU."""
    action_weight: ActionWeighting = "uniform"
    """Each unique response's share of its problem's loss, as Stage B's `action_weight` ("count": how many samples
    were that response)."""
    load_in: LoadIn | None = None
    """Load the reference policy in "8bit" or "4bit" through bitsandbytes: Stage B's `load_in`, so the actor's
    log-ratios start at 0 under QLoRA as they do on DAPO's actions."""
    attn_implementation: AttnImplementation = "sdpa"
    """The reference policy's attention kernel: Stage B's `attn_implementation`, for the same reason."""

    def __post_init__(self) -> None:
        check_attention(self.attn_implementation)


class Sample(NamedTuple):
    problem_id: str
    prompt: str
    response: str
    reward: float
    truncated: bool = False  # the token limit cut it off: reward 0, and not an ending to learn


@dataclass
class ResponseSummary:
    """What a response-level scoring run did; also written to `out_dir/summary.json`."""

    problems: int
    samples: int
    problems_kept: int
    actions: int
    tokens_reference: int
    seconds: float


def prompt_samples(stage_a_dir: str | Path) -> list[Sample]:
    """Every response Stage A drew from a problem's prompt without choosing it: the rollouts of the t = 0 states,
    cut-off ones included (reward 0, `truncated`)."""
    samples = []
    for row in read_records(Path(stage_a_dir) / "states", "states"):
        if row["t"] == 0:
            rollouts = zip(row["completions"], row["completion_rewards"], row["completion_truncated"], strict=True)
            samples += [Sample(row["problem_id"], row["prompt"], c, float(r), cut) for c, r, cut in rollouts]
    return samples


def group_by_problem(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.problem_id, []).append(sample)
    return groups


def response_actions(
    group: Sequence[Sample], min_gap: float, weighting: ActionWeighting = "uniform"
) -> list[ScoredAction]:
    """A = r - mean r over the whole group, then the unique responses in first-seen order; [] when the gap
    max A - min A is under `min_gap` (e.g. every response right, or every one wrong). Stage B's `select_actions`
    with each whole response as a candidate valued at its reward, terminal unless the token limit cut it off."""
    cands = [Candidate(s.response, not s.truncated, s.reward) for s in group]
    return select_actions(cands, [s.reward for s in group], min_gap, weighting)


def run_response_advantages(config: ResponseAdvantageConfig) -> ResponseSummary:
    """Write `out_dir/actions` (response-level actions with reference log-probs) and `out_dir/summary.json`."""
    start = time.perf_counter()
    samples = prompt_samples(config.stage_a_dir)
    if not samples:
        raise ValueError(f"{config.stage_a_dir}: Stage A holds no sampled responses")
    groups = group_by_problem(samples)
    chosen = {problem: response_actions(g, config.min_gap, config.action_weight) for problem, g in groups.items()}
    kept = [(groups[problem][0], acts) for problem, acts in chosen.items() if acts]
    device = scoring_device(config.device)
    logprobs, tokens = (
        reference_logprobs(
            [(s.prompt, acts) for s, acts in kept],
            config.policy_path,
            config.load_in,
            device,
            config.max_tokens,
            config.attn_implementation,
        )
        if kept
        else ([], 0)
    )
    rows = [
        _action_row(first, scored, ref)
        for (first, acts), refs in zip(kept, logprobs, strict=True)
        for scored, ref in zip(acts, refs, strict=True)
    ]
    provenance = Provenance(
        PRODUCER,
        config=asdict(config) | {"samples_made": _stage_a_made(config.stage_a_dir)},
        policy_path=config.policy_path,
        policy_hash=policy_fingerprint(config.policy_path),
    )
    out = Path(config.out_dir)
    write_records(rows, out / "actions", "actions", provenance)
    summary = ResponseSummary(len(groups), len(samples), len(kept), len(rows), tokens, time.perf_counter() - start)
    write_json(out / "summary.json", asdict(summary))
    print(f"response advantages: {json.dumps(asdict(summary))}")
    return summary


def _stage_a_made(stage_a_dir: str) -> dict[str, Any]:
    """Which Stage A run the samples came from (its policy's weights and when it ran)."""
    made = read_provenance(Path(stage_a_dir) / "solutions")
    return {"policy_hash": made.policy_hash, "created": made.created}


def _action_row(first: Sample, scored: ScoredAction, ref_logprob: float) -> dict[str, Any]:
    return {
        "state_id": f"{first.problem_id}/prompt",
        "problem_id": first.problem_id,
        "prompt": first.prompt,
        "state_steps": [],
        "action": scored.candidate.action,
        "value": scored.value,
        "advantage": scored.advantage,
        "is_terminal": scored.candidate.is_terminal,
        "ref_logprob": ref_logprob,
        "weight": scored.weight,
    }
