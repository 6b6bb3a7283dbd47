"""Value-guided inference: the selection rules by hand, the beam search with a scripted policy and critic, and
`dapo evaluate --critic ... --select ...` end to end with a tiny policy and critic."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from benchmarks.value_guided import main as value_guided_benchmark
from dapo.cli import cli_main
from dapo.core.selection import best_index, response_value, vote_index
from dapo.generation.protocol import Completion, SamplingParams
from dapo.graders.answers import canonical_answer
from dapo.stages.evaluation import EvalResult
from dapo.stages.value_guided import BeamSettings, beam_search, choose_for_all, chosen_result
from dapo.tasks import ArithTask


def test_response_value_reduces_the_values_after_each_step():
    """V = [0.5, 0.9, 0.4, 0.8] (V(s_0) is the prompt's): last 0.8, min 0.4, prod 0.9 * 0.4 * 0.8 = 0.288."""
    values = [0.5, 0.9, 0.4, 0.8]
    assert response_value(values, "last") == 0.8
    assert response_value(values, "min") == 0.4
    assert response_value(values, "prod") == pytest.approx(0.288)
    assert response_value([0.3], "min") == 0.3  # no steps: only the prompt's value
    with pytest.raises(ValueError, match="reduce"):
        response_value(values, "mean")  # type: ignore[arg-type]


def test_best_index_and_votes_by_hand():
    """answers [7, 5, 5, 7, None], weights [0.9, 0.2, 0.3, 0.1, 1.0]: 7 totals 1.0, 5 totals 0.5 -> index 0.
    Unweighted, 7 and 5 tie at two votes; 7 was seen first -> index 0. With weights [0.1, 0.9, 0.9, 0.1, 1]:
    5 totals 1.8 -> its first response, index 1."""
    assert best_index([0.2, 0.9, 0.9]) == 1  # a tie keeps the first
    answers = ["7", "5", "5", "7", None]
    assert vote_index(answers, [0.9, 0.2, 0.3, 0.1, 1.0]) == 0
    assert vote_index(answers) == 0
    assert vote_index(answers, [0.1, 0.9, 0.9, 0.1, 1.0]) == 1
    assert vote_index([None, None]) == 0  # nobody answered: the first response
    with pytest.raises(ValueError, match="2 answers but 1 weights"):
        vote_index(["1", "2"], [1.0])


def test_answer_keys_group_equal_answers():
    assert canonical_answer("so the answer is 1,000.50.") == canonical_answer("\\boxed{1000.5}") == "1000.5"
    assert canonical_answer("The answer is $18") == "18" and canonical_answer("no answer here") is None
    assert canonical_answer("\\boxed{\\frac{1}{2}}") != canonical_answer("\\boxed{0.5}")  # left to a grader
    arith = ArithTask()
    assert arith.answer_key("3 + 4 = 7\nAnswer: 07") == "7" and arith.answer_key("3 + 4 = 7") is None


class ScriptedSteps:
    """One-step policy for the beam tests: from a prompt with fewer than two steps it offers "bad" then "good"
    (repeated up to n); after two steps, two final answers without a delimiter ("Answer: 1", then "Answer: 2")."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], SamplingParams]] = []

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        assert params.one_step
        self.calls.append((list(prompts), params))
        out = []
        for prompt in prompts:
            depth = prompt.count("\n") - 1  # the prompt "P:\n" ends with a newline of its own
            offers = ["bad\n", "good\n"] if depth < 2 else ["Answer: 1", "Answer: 2"]
            out.append([offers[i % 2] for i in range(params.n)])
        return out


def scripted_values(trajectories: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
    """V after each step: the share of "good" steps so far; a final "Answer: 1" after only good steps is worth 1.0,
    after any bad one 0.2; "Answer: 2" is worth 0.1."""
    out = []
    for _, steps in trajectories:
        values = [0.5]
        for t in range(1, len(steps) + 1):
            last = steps[t - 1]
            if last.startswith("Answer"):
                values.append((1.0 if all(s == "good\n" for s in steps[: t - 1]) else 0.2) if "1" in last else 0.1)
            else:
                values.append(sum(s == "good\n" for s in steps[:t]) / t)
        out.append(values)
    return out


def test_beam_search_follows_the_critic_to_the_best_finished_solution():
    """beams 2, expand 2. Round 1 from the prompt: [bad] 0, [good] 1, both kept. Round 2: [bad, bad] 0,
    [bad, good] 0.5, [good, bad] 0.5, [good, good] 1 -> keep [good, good] and [good, bad] (kept beams are in value
    order, so [good] grew first, and a tie keeps the first grown). Round 3: the answers end both beams: [g, g, A1]
    1.0 and [g, b, A1] 0.2 kept, so no beam is live and the search stops early; the best finished one is chosen."""
    policy = ScriptedSteps()
    settings = BeamSettings(beams=2, expand=2, max_steps=10, step_tokens=8)
    rounds: list[tuple[int, int]] = []
    (choice,) = beam_search(policy, scripted_values, ["P:\n"], settings, seed=3, on_round=lambda *r: rounds.append(r))
    assert choice.response == "good\ngood\nAnswer: 1"
    assert choice.candidates == ["good\ngood\nAnswer: 1", "good\nbad\nAnswer: 1"] and choice.values == [1.0, 0.2]
    assert rounds == [(1, 1), (2, 2), (3, 2)]  # (round, live beams expanded in it)
    assert [len(prompts) for prompts, _ in policy.calls] == [1, 2, 2]
    assert [params.seed for _, params in policy.calls] == [3, 3 + 7919, 3 + 2 * 7919]  # a new seed every round
    assert all(params.n == 2 and params.max_new_tokens == 8 for _, params in policy.calls)


def test_beam_search_stops_at_max_steps_and_treats_empty_and_cut_steps_as_ends():
    policy = ScriptedSteps()
    (unfinished,) = beam_search(policy, scripted_values, ["P:\n"], BeamSettings(beams=2, expand=2, max_steps=1))
    assert unfinished.response == "good\n" and unfinished.values == [1.0, 0.0]  # best unfinished, when none ended

    class Stops:
        def generate(self, prompts, params):
            return [["", Completion("goo", truncated=True)] for _ in prompts]

    (ended,) = beam_search(Stops(), scripted_values, ["P:\n"], BeamSettings(beams=2, expand=2, max_steps=5))
    assert sorted(ended.candidates) == ["", "goo"]  # both ended in round 1: nothing was expanded again


def _sampled(responses: list[list[str]], scores: list[list[float]]) -> EvalResult:
    return EvalResult("arith", "test", scores, 1.0, ["a", "b"], responses, ["P1:\n", "P2:\n"])


def test_choose_for_all_and_the_chosen_result():
    """Problem a answers 7, 5, 5 with values 0.9, 0.2, 0.3; problem b answers 3, 3, 4 with 0.1, 0.2, 0.95.
    Majority: a's 5 (index 1), b's 3 (index 0). Best of n: a 0 (0.9), b 2 (0.95). Weighted: a's 7 has 0.9 against
    5's 0.5 -> 0; b's 3 has 0.3 against 4's 0.95 -> 2."""
    responses = [
        ["Answer: 7", "Answer: 5", "2 + 3 = 5\nAnswer: 5"],
        ["Answer: 3", "1 + 2 = 3\nAnswer: 3", "Answer: 4"],
    ]
    sampled = _sampled(responses, [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    final_value = dict(zip([r for rs in responses for r in rs], [0.9, 0.2, 0.3, 0.1, 0.2, 0.95], strict=True))

    def values_of(trajectories):
        return [[0.5] * len(steps) + [final_value["".join(steps)]] for _, steps in trajectories]

    arith = ArithTask()
    majority = choose_for_all("majority_vote", sampled, arith, None)
    assert [c.chosen for c in majority] == [1, 0] and majority[0].values == []
    best = choose_for_all("best_of_n", sampled, arith, values_of)
    assert [c.chosen for c in best] == [0, 2] and best[0].values == pytest.approx([0.9, 0.2, 0.3])
    weighted = choose_for_all("weighted_vote", sampled, arith, values_of)
    assert [c.chosen for c in weighted] == [0, 2]
    chosen = chosen_result(sampled, weighted)
    assert chosen.sample_scores == [[1.0], [1.0]] and chosen.responses == [["Answer: 7"], ["Answer: 4"]]
    assert chosen.accuracy == 1.0 and sampled.accuracy == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="needs a critic"):
        choose_for_all("best_of_n", sampled, arith, None)


def _evaluate(policy: str, out: Path, *extra: str) -> tuple[dict, list[dict]]:
    cli_main(["evaluate", "--model", policy, "--task", "arith", "--limit", "6", "--max_new_tokens", "40",
              "--out", str(out), *extra])  # fmt: skip
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    return json.loads((out / "summary.json").read_text()), rows


def test_evaluate_best_of_n_and_votes_choose_among_the_same_samples(policy_dir, critic_dir, tmp_path):
    sampling = ["--n", "4", "--temperature", "1.0", "--critic", critic_dir]
    plain, _ = _evaluate(policy_dir, tmp_path / "plain", "--n", "4", "--temperature", "1.0")
    best, rows = _evaluate(policy_dir, tmp_path / "best", *sampling, "--select", "best_of_n", "--reduce", "min")
    arith = ArithTask()
    for row, example in zip(rows, arith.load("test")[:6], strict=True):
        assert len(row["candidates"]) == 4 == len(row["values"])
        assert row["chosen"] == best_index(row["values"]) and row["responses"] == [row["candidates"][row["chosen"]]]
        assert row["scores"] == [arith.score(example, row["responses"][0])]
    assert best["samples"]["accuracy"] == plain["accuracy"]  # the same samples, then a choice among them
    assert best["accuracy"] == pytest.approx(sum(r["scores"][0] for r in rows) / 6)
    assert best["tokens_generated"] == plain["tokens_generated"] and best["select"] == "best_of_n"
    votes, vote_rows = _evaluate(policy_dir, tmp_path / "vote", "--n", "4", "--temperature", "1.0",
                                 "--select", "majority_vote")  # fmt: skip
    for row in vote_rows:
        keys = [arith.answer_key(c) for c in row["candidates"]]
        assert row["chosen"] == vote_index(keys) and votes["critic"] is None


def test_evaluate_beam_search_runs_and_counts_its_tokens(policy_dir, critic_dir, tmp_path):
    summary, rows = _evaluate(policy_dir, tmp_path / "beam", "--critic", critic_dir, "--select", "beam",
                              "--temperature", "1.0", "--beams", "2", "--expand", "2", "--max_steps", "6")  # fmt: skip
    assert summary["select"] == "beam" and summary["beams"] == 2 and summary["expand"] == 2
    assert summary["tokens_generated"] > 0 and summary["problems"] == 6
    arith = ArithTask()
    for row, example in zip(rows, arith.load("test")[:6], strict=True):
        assert 1 <= len(row["candidates"]) <= 2 and row["responses"] == [row["candidates"][row["chosen"]]]
        assert row["scores"] == [arith.score(example, row["responses"][0])]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--select", "best_of_n", "--n", "4", "--temperature", "1"], "needs a trained critic"),
        (["--select", "weighted_vote", "--n", "1", "--critic", "CRITIC"], "set --n > 1"),
        (["--critic", "CRITIC"], "set one"),
        (["--select", "beam", "--critic", "CRITIC"], "greedy next steps"),
    ],
)
def test_evaluate_refuses_selections_that_cannot_run(policy_dir, critic_dir, tmp_path, extra, message):
    extra = [critic_dir if x == "CRITIC" else x for x in extra]
    with pytest.raises(ValueError, match=message):
        _evaluate(policy_dir, tmp_path / "x", *extra)
    assert not (tmp_path / "x").exists()


def test_votes_need_a_task_with_final_answers(policy_dir, tmp_path):
    with pytest.raises(ValueError, match="task 'humaneval' has none"):
        cli_main(["evaluate", "--model", policy_dir, "--task", "humaneval", "--n", "2", "--temperature", "1",
                  "--select", "majority_vote", "--out", str(tmp_path / "h")])  # fmt: skip


def test_the_inference_benchmark_runs_on_a_demo_shaped_folder(policy_dir, critic_dir, tmp_path, capsys):
    """benchmarks/value_guided.py on a folder laid out as `dapo demo` leaves it (tiny policy and critic)."""
    demo = tmp_path / "demo"
    (demo / "iterate" / "iter-01" / "critic").mkdir(parents=True)
    (demo / "policy").symlink_to(policy_dir)
    (demo / "iterate" / "iter-01" / "critic" / "hf").symlink_to(critic_dir)
    out = tmp_path / "rows.json"
    sizes = ["--limit", "3", "--n", "2", "--beam-shapes", "1x2", "--max-steps", "4", "--max-new-tokens", "24"]
    value_guided_benchmark(["--demo", str(demo), "--seeds", "0", "1", *sizes, "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.count("| greedy |") == 3  # seeds 0, 1 and pooled
    seeds = json.loads(out.read_text())["seeds"]
    methods = [row["method"] for row in seeds["0"]]
    assert methods[0] == "greedy" and "majority vote, n=2" in methods and methods[-1] == "beam 1x2"
    sampled = {r["method"]: r for r in seeds["0"]}
    assert (
        sampled["majority vote, n=2"]["tokens_per_problem"] == sampled["one sample of 2 (mean)"]["tokens_per_problem"]
    )
    assert all(len(row["scores"]) == 3 for row in seeds["1"])


def test_the_inference_benchmark_names_a_malformed_beam_shape(capsys):
    with pytest.raises(SystemExit):
        value_guided_benchmark(["--beam-shapes", "2by4"])
    assert "beam shape '2by4': expected BxE" in capsys.readouterr().err
