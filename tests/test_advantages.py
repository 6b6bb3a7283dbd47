"""Stage B: candidates, advantages against the mean of all candidates, de-duplication, gap filter, scoring."""

from __future__ import annotations

import pytest
import torch
from builders import candidate_state_rows
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo.core.steps import join_steps
from dapo.models.value import StepScorer
from dapo.records import Provenance, read_records, write_records
from dapo.stages.candidate_advantages import AdvantageConfig, Candidate, candidates, run_advantages, select_actions
from dapo.stages.stage_b import advantages_status, ensure_actions


def test_candidates_are_first_steps_and_single_steps_are_terminal():
    completions = ["3 + 4 = 7\nAnswer: 7", "Answer: 7", "Answer: 7\n\n", "", "3 + 4 = 8\n\nAnswer: 8"]
    assert candidates(completions, [1.0, 1.0, 0.0, 0.0, 0.0], "\n") == [
        Candidate("3 + 4 = 7\n", False, 1.0),  # more steps follow
        Candidate("Answer: 7", True, 1.0),  # the completion is this one step: it ends the solution
        Candidate("Answer: 7\n\n", True, 0.0),  # trailing blank lines belong to the last step (as in Stage A)
        Candidate("", True, 0.0),  # the policy stopped at once
        Candidate("3 + 4 = 8\n", False, 0.0),  # the blank line joins the next step, not this one
    ]


def test_select_actions_literal_example():
    """Values [0.9, 0.5, 0.9, 0.1] for actions a, b, a, c: the baseline is their mean 0.6 (the repeated a counts
    twice), so A = [0.3, -0.1, 0.3, -0.5]; unique actions a, b, c keep A = 0.3, -0.1, -0.5 (gap 0.8)."""
    a, b, c = (Candidate(text, False, 0.0) for text in ("a\n", "b\n", "c\n"))
    kept = select_actions([a, b, a, c], [0.9, 0.5, 0.9, 0.1], min_gap=0.1)
    assert [s.candidate for s in kept] == [a, b, c]
    assert [s.value for s in kept] == [0.9, 0.5, 0.1]
    assert [s.advantage for s in kept] == pytest.approx([0.3, -0.1, -0.5])


def test_select_actions_count_weighting():
    """Candidates a, b, a, c: by count a weighs 2, b and c 1 each, scaled to average 1 over the 3 unique actions
    (x 3/4): [1.5, 0.75, 0.75]; uniform weighs each 1. The advantages do not depend on the weighting."""
    a, b, c = (Candidate(text, False, 0.0) for text in ("a\n", "b\n", "c\n"))
    values = [0.9, 0.5, 0.9, 0.1]
    by_count = select_actions([a, b, a, c], values, min_gap=0.1, weighting="count")
    uniform = select_actions([a, b, a, c], values, min_gap=0.1)
    assert [s.weight for s in by_count] == pytest.approx([1.5, 0.75, 0.75])
    assert [s.weight for s in uniform] == [1.0, 1.0, 1.0]
    assert [s.advantage for s in by_count] == [s.advantage for s in uniform]
    with pytest.raises(ValueError, match="'uniform' or 'count'"):
        select_actions([a, b], [0.9, 0.1], min_gap=0.1, weighting="pi_ref")  # type: ignore[arg-type]


def test_select_actions_gap_filter():
    """Values [0.50, 0.55, 0.45]: A = [0, 0.05, -0.05], gap 0.1 is kept at min_gap 0.1 and dropped at 0.11."""
    cands = [Candidate(text, False, 0.0) for text in ("x\n", "y\n", "z\n")]
    assert len(select_actions(cands, [0.50, 0.55, 0.45], min_gap=0.1 - 1e-9)) == 3
    assert select_actions(cands, [0.50, 0.55, 0.45], min_gap=0.11) == []
    same = [Candidate("x\n", False, 0.0)] * 3  # one unique action: no preference at all
    assert select_actions(same, [0.5, 0.5, 0.5], min_gap=0.1) == []
    assert len(select_actions(same, [0.5, 0.5, 0.5], min_gap=0.0)) == 1


@pytest.fixture
def stage_b(tmp_path, arith, tiny_model_dir, critic_dir):
    states = write_records(candidate_state_rows(arith, 6), tmp_path / "states", "states", Provenance(producer="test"))
    return AdvantageConfig(
        states_path=str(states),
        critic_path=critic_dir,
        policy_path=tiny_model_dir,
        out_dir=str(tmp_path / "stage_b"),
        min_gap=0.0,
        max_tokens=256,  # several packed batches
    )


def test_run_advantages_scores_every_candidate_like_a_plain_forward(stage_b):
    summary = run_advantages(stage_b)
    actions = read_records(f"{stage_b.out_dir}/actions", "actions").to_list()
    assert (summary.states, summary.candidates, summary.states_kept) == (6, 30, 6)
    assert summary.critic_scored == 6 * 2  # right and wrong first steps; terminal ones take their reward
    assert summary.actions == len(actions) == 6 * 4  # the repeated completion gives no new action
    scorer = StepScorer.from_pretrained(stage_b.critic_path)
    tokenizer = AutoTokenizer.from_pretrained(stage_b.policy_path)
    policy = AutoModelForCausalLM.from_pretrained(stage_b.policy_path).eval()
    for state_id in {row["state_id"] for row in actions}:
        group = [row for row in actions if row["state_id"] == state_id]
        for row in group:
            if row["is_terminal"]:
                assert row["value"] == (1.0 if row["action"] else 0.0)  # "Answer: N" is right, "" is wrong
            else:
                plain = scorer.values([(row["prompt"], [*row["state_steps"], row["action"]])])[0][-1]
                assert row["value"] == pytest.approx(plain, abs=1e-5)
            prefix = row["prompt"] + join_steps(row["state_steps"])
            assert row["ref_logprob"] == pytest.approx(_plain_logprob(policy, tokenizer, prefix, row), abs=1e-4)
        assert [row["action"] for row in group][1:] == ["1 + 1 = 3\n", group[2]["action"], ""]  # first-seen order
        values = [row["value"] for row in group]
        baseline = (sum(values) + values[0]) / 5  # the right completion came twice: 5 candidates, 4 unique actions
        assert [row["advantage"] for row in group] == pytest.approx([v - baseline for v in values], abs=1e-6)


def _plain_logprob(model, tokenizer, prefix: str, row: dict) -> float:
    """log p(action (+ eos if terminal) | prefix) from one unpadded forward over prefix + action."""
    prefix_ids = tokenizer(prefix)["input_ids"]
    ids = tokenizer(prefix + row["action"])["input_ids"] + ([tokenizer.eos_token_id] if row["is_terminal"] else [])
    assert ids[: len(prefix_ids)] == prefix_ids  # newline-delimited steps never merge across the boundary
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), dim=-1)
    targets = torch.tensor(ids[1:])
    return float(logp.gather(1, targets[:, None]).squeeze(1)[len(prefix_ids) - 1 :].sum())


def test_count_weighting_is_written_with_the_actions(stage_b):
    stage_b.action_weight = "count"
    run_advantages(stage_b)
    actions = read_records(f"{stage_b.out_dir}/actions", "actions").to_list()
    for state_id in {row["state_id"] for row in actions}:
        group = [row for row in actions if row["state_id"] == state_id]
        # 5 candidates, 4 unique: the right completion came twice (2 x 4/5), the other three once (4/5)
        assert [row["weight"] for row in group] == pytest.approx([1.6, 0.8, 0.8, 0.8])
    with pytest.raises(ValueError, match="action_weight"):
        AdvantageConfig(action_weight="often")  # type: ignore[arg-type]


def test_terminal_reward_switch_uses_the_critic(stage_b):
    stage_b.terminal_reward = False
    summary = run_advantages(stage_b)
    assert summary.critic_scored == 6 * 4  # every unique action, terminal ones too
    terminal = [r for r in read_records(f"{stage_b.out_dir}/actions", "actions").to_list() if r["is_terminal"]]
    assert terminal and all(0.0 < r["value"] < 1.0 for r in terminal)


def test_gap_filter_drops_states_without_preference(stage_b):
    stage_b.min_gap = 2.0  # no gap can reach it
    summary = run_advantages(stage_b)
    assert (summary.states, summary.states_kept, summary.actions) == (6, 0, 0)
    assert read_records(f"{stage_b.out_dir}/actions", "actions").num_rows == 0


def test_ensure_actions_skips_up_to_date_and_redoes_stale(stage_b, tmp_path):
    assert advantages_status(stage_b) == "missing"
    ensure_actions(stage_b)
    summary = tmp_path / "stage_b" / "summary.json"
    made = summary.stat().st_mtime_ns
    ensure_actions(stage_b)
    assert advantages_status(stage_b) == "done" and summary.stat().st_mtime_ns == made
    stage_b.min_gap = 0.2
    assert advantages_status(stage_b) == "stale"
    ensure_actions(stage_b)
    assert list(tmp_path.glob("stage_b.stale-*")) and advantages_status(stage_b) == "done"
