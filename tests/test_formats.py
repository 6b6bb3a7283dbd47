"""Converters between `states` records and TRL stepwise / Math-Shepherd / PRM800K rows (dapo.records.formats), the
`dapo convert` command, and a critic trained on converted Math-Shepherd data without Stage A."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from builders import reference_state_rows

from dapo.cli import cli_main
from dapo.core.errors import UserError
from dapo.data_modules import StepDataModule
from dapo.pipeline.convert import convert
from dapo.records import Provenance, RecordError, read_provenance, read_records, write_records
from dapo.records.formats import (
    from_math_shepherd,
    from_prm800k,
    from_trl_stepwise,
    problem_id_of,
    to_math_shepherd,
    to_trl_stepwise,
)
from dapo.training.critic import CriticModule

MATH_SHEPHERD = Path(__file__).parent / "fixtures" / "formats" / "math_shepherd.jsonl"

# A TRL stepwise row: three steps, the last one wrong; the prompt ends without whitespace.
TRL_ROW = {
    "prompt": "Q: 2 + 3 * 4?",
    "completions": ["3 * 4 = 12", "2 + 12 = 14", "Answer: 15"],
    "labels": [True, True, False],
}

# A Math-Shepherd GSM8K row as the dataset has it: question, then "Step k: ... ки" lines; step 2 is wrong, and
# step 3 is labelled + again (a rollout from there still reached 18: the label is a hard MC estimate).
DUCKS = "Janet's ducks lay 16 eggs a day. She eats 3, bakes with 4 and sells the rest at $2 each. What does she make?"
MS_ROW = {
    "input": (
        f"{DUCKS} Step 1: She has 16 - 3 - 4 = <<16-3-4=9>>9 eggs left. ки\n"
        "Step 2: She makes 9 * 3 = <<9*3=27>>27 dollars. ки\n"
        "Step 3: Correcting: 9 * 2 = <<9*2=18>>18. The answer is: 18 ки"
    ),
    "label": (
        f"{DUCKS} Step 1: She has 16 - 3 - 4 = <<16-3-4=9>>9 eggs left. +\n"
        "Step 2: She makes 9 * 3 = <<9*3=27>>27 dollars. -\n"
        "Step 3: Correcting: 9 * 2 = <<9*2=18>>18. The answer is: 18 +"
    ),
    "task": "GSM8K",
}


def _completion(text: str, rating: int | None) -> dict:
    return {"text": text, "rating": rating, "flagged": None}


# A PRM800K phase-2 row: step 0 rated 0 (neutral), step 1 chosen among two (the other rated -1), step 2 not chosen:
# labelling stopped on its first completion, rated -1 (finish_reason "found_error").
PRM_ROW = {
    "question": {"problem": "What is the gcd of 20 and 200000?", "ground_truth_answer": "20"},
    "label": {
        "steps": [
            {"completions": [_completion("I want the gcd.", 0)], "human_completion": None, "chosen_completion": 0},
            {
                "completions": [_completion("200000 = 2^6 * 5^5.", -1), _completion("20 = 2^2 * 5.", 1)],
                "human_completion": None,
                "chosen_completion": 1,
            },
            {
                "completions": [_completion("So the gcd is 2^2 * 5^2 = 100.", -1), _completion("Hmm.", 0)],
                "human_completion": None,
                "chosen_completion": None,
            },
        ],
        "finish_reason": "found_error",
    },
}


def _by_t(states: list[dict]) -> dict[int, float]:
    return {s["t"]: s["mc_value"] for s in states}


def test_trl_row_to_states():
    states = from_trl_stepwise(TRL_ROW, "trl/0")
    assert [s["t"] for s in states] == [1, 2, 3]  # s_0 has no label in the format: no row
    assert states[0]["prompt"] == "Q: 2 + 3 * 4?\n"  # a prompt without trailing whitespace gets the delimiter
    assert states[0]["steps"] == ["3 * 4 = 12\n", "2 + 12 = 14\n", "Answer: 15"]  # delimiter on all but the last
    assert _by_t(states) == {1: 1.0, 2: 1.0, 3: 0.0}
    assert states[2]["state_id"] == "trl/0/t3" and states[0]["n_rollouts"] == 0
    assert states[0]["problem_id"] == problem_id_of("Q: 2 + 3 * 4?")  # from the question: its solutions share it


def test_states_to_trl_thresholds_and_keeps_soft_values_aside():
    states = from_trl_stepwise(TRL_ROW, "trl/0")
    states[1] |= {"mc_value": 0.7}
    states[2] |= {"mc_value": 0.25}
    row = to_trl_stepwise(states, threshold=0.5)
    assert row["prompt"] == "Q: 2 + 3 * 4?\n"
    assert row["completions"] == ["3 * 4 = 12", "2 + 12 = 14", "Answer: 15"]  # the delimiter dropped again
    assert row["labels"] == [True, True, False]  # 1.0, 0.7 >= 0.5, 0.25 < 0.5
    assert row["mc_values"] == [1.0, 0.7, 0.25] and row["prompt_mc_value"] is None
    assert to_trl_stepwise(states, threshold=0.8)["labels"] == [True, False, False]


def test_trl_states_trl_round_trip_keeps_steps_and_hard_labels():
    row = to_trl_stepwise(from_trl_stepwise(TRL_ROW, "trl/0"))
    assert row["completions"] == TRL_ROW["completions"] and row["labels"] == TRL_ROW["labels"]
    assert row["prompt"] == TRL_ROW["prompt"] + "\n"  # the one change: the delimiter after the prompt


def test_states_trl_states_round_trip_keeps_steps_values_and_ids():
    rows = reference_state_rows_literal()
    back = from_trl_stepwise(json.loads(json.dumps(to_trl_stepwise(rows))), "unused")
    assert [(s["state_id"], s["solution_id"], s["problem_id"], s["prompt"], s["steps"]) for s in back] == [
        (s["state_id"], s["solution_id"], s["problem_id"], s["prompt"], s["steps"]) for s in rows
    ]
    assert _by_t(back) == pytest.approx(_by_t(rows))  # soft values came back from the extra column


def reference_state_rows_literal() -> list[dict]:
    """s_0..s_2 of one dapo solution with soft MC values (as Stage A writes them)."""
    steps = ["1 + 2 = 3\n", "Answer: 3"]
    return [
        {
            "state_id": f"p1/s0/t{t}",
            "problem_id": "p1",
            "solution_id": "p1/s0",
            "t": t,
            "prompt": "Question: 1 + 2\nSolution:\n",
            "steps": steps,
            "mc_value": value,
            "n_rollouts": 0,
            "completions": [],
            "completion_rewards": [],
            "completion_truncated": [],
        }
        for t, value in enumerate([0.5, 0.75, 1.0])
    ]


def test_soft_values_that_disagree_with_the_labels_are_an_error():
    row = TRL_ROW | {"mc_values": [0.9, 0.3, 0.0]}  # 0.3 < 0.5 but labels[1] is true: edited after export?
    with pytest.raises(RecordError, match=r"mc_values\[1\] = 0.3 disagrees with label True"):
        from_trl_stepwise(row, "trl/0")


def test_math_shepherd_row_to_states():
    states = from_math_shepherd(MS_ROW, "ms/0")
    assert states[0]["prompt"] == DUCKS + " "  # the text before "Step 1:", kept as it is (ends in a space)
    assert states[0]["steps"] == [
        "Step 1: She has 16 - 3 - 4 = <<16-3-4=9>>9 eggs left.\n",
        "Step 2: She makes 9 * 3 = <<9*3=27>>27 dollars.\n",
        "Step 3: Correcting: 9 * 2 = <<9*2=18>>18. The answer is: 18",
    ]
    assert _by_t(states) == {1: 1.0, 2: 0.0, 3: 1.0}  # a + after a - is kept: labels are state values


def test_math_shepherd_round_trip_is_exact():
    """Math-Shepherd -> states -> Math-Shepherd gives the row back, plus our extra columns."""
    row = to_math_shepherd(from_math_shepherd(MS_ROW, "ms/0"), task="GSM8K")
    assert {k: row[k] for k in ("input", "label", "task")} == MS_ROW
    assert row["mc_values"] == [1.0, 0.0, 1.0] and row["solution_id"] == "ms/0"


def test_states_to_math_shepherd_tags_each_step():
    row = to_math_shepherd(reference_state_rows_literal(), threshold=0.8)
    assert row["input"] == "Question: 1 + 2\nSolution:\n1 + 2 = 3 ки\nAnswer: 3 ки"
    assert row["label"] == "Question: 1 + 2\nSolution:\n1 + 2 = 3 -\nAnswer: 3 +"  # 0.75 < 0.8 <= 1.0
    assert row["prompt_mc_value"] == 0.5


def test_prm800k_row_to_states():
    states = from_prm800k(PRM_ROW, "prm/0")
    assert states[0]["prompt"] == "What is the gcd of 20 and 200000?\n"
    assert states[0]["steps"] == ["I want the gcd.\n", "20 = 2^2 * 5.\n", "So the gcd is 2^2 * 5^2 = 100."]
    assert _by_t(states) == {1: 1.0, 2: 1.0, 3: 0.0}  # neutral -> 1.0; chosen +1; the stopping -1 step -> 0.0
    assert _by_t(from_prm800k(PRM_ROW, "prm/0", neutral=0.5))[1] == 0.5


def test_prm800k_ends_at_the_first_bad_step_and_takes_human_steps():
    steps = [
        # phase 1: every completion rated -1, so the labeler wrote a step of their own
        {"completions": [_completion("x = 3", -1)], "human_completion": {"text": "x = 2"}, "chosen_completion": None},
        {"completions": [_completion("So 2x = 5.", -1)], "human_completion": None, "chosen_completion": 0},
        {"completions": [_completion("The answer is 5.", 1)], "human_completion": None, "chosen_completion": 0},
    ]
    row = {"question": {"problem": "Solve x + 1 = 3."}, "label": {"steps": steps, "finish_reason": "solution"}}
    states = from_prm800k(row, "prm/1")
    assert states[0]["steps"] == ["x = 2\n", "So 2x = 5."]  # nothing after the chosen -1 step
    assert _by_t(states) == {1: 1.0, 2: 0.0}


@pytest.mark.parametrize(
    ("convert_row", "row", "message"),
    [
        (from_trl_stepwise, TRL_ROW | {"labels": [True, False]}, "3 completions but 2 labels"),
        (from_trl_stepwise, TRL_ROW | {"labels": [1, 1, 0]}, r"labels\[0\] should be true or false"),
        (from_trl_stepwise, TRL_ROW | {"completions": ["a", " ", "b"]}, "step 1 is empty"),
        (from_trl_stepwise, {"prompt": "Q"}, "missing field 'completions'"),
        (from_trl_stepwise, TRL_ROW | {"prompt": [{"role": "user"}]}, "'prompt' should be a string, got a list"),
        (from_math_shepherd, MS_ROW | {"label": MS_ROW["label"].replace("dollars. -", "dollars. ?")}, "tag 1 is "),
        (from_math_shepherd, MS_ROW | {"input": "Q? 1 + 1 = 2 ки", "label": "Q? 1 + 1 = 2 +"}, "no 'Step 1:'"),
        (from_math_shepherd, MS_ROW | {"input": "Q? Step 1: x", "label": "Q? Step 1: x"}, "no step tag"),
        (from_math_shepherd, MS_ROW | {"label": "Janet"}, "'label' differs from 'input'"),
        (from_prm800k, {"question": {"problem": "Q"}, "label": {"steps": []}}, "no labelled step"),
        (from_prm800k, PRM_ROW | {"label": PRM_ROW["label"] | {"finish_reason": "bad_problem"}}, "broken"),
        (
            from_prm800k,
            {"question": {"problem": "Q"}, "label": {"steps": [{"completions": [], "chosen_completion": 2}]}},
            "chosen_completion 2 is not one of its completions",
        ),
        (
            from_prm800k,
            {
                "question": {"problem": "Q"},
                "label": {"steps": [{"completions": [_completion("a", 2)], "chosen_completion": 0}]},
            },
            "rating 2, not -1, 0 or 1",
        ),
    ],
)
def test_bad_rows_name_the_problem(convert_row, row, message):
    with pytest.raises(RecordError, match=message):
        convert_row(row, "bad/0")


def test_a_cut_off_solution_loses_its_unlabelled_last_step_and_a_gap_is_an_error():
    rows = reference_state_rows_literal()
    assert to_trl_stepwise(rows[:2])["completions"] == ["1 + 2 = 3"]  # no s_2: step 1 has no label
    with pytest.raises(RecordError, match="no state t=1, so step 0 has no label"):
        to_trl_stepwise([rows[0], rows[2]])


def test_convert_names_file_and_line_or_skips_when_lenient(tmp_path, caplog):
    source = tmp_path / "ms.jsonl"
    bad = MS_ROW | {"label": MS_ROW["label"].replace("+", "*", 1)}
    source.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [MS_ROW, bad, MS_ROW | {}]) + "\n")
    with pytest.raises(RecordError, match=r"ms.jsonl line 2: step tag 0 is labelled '\*'"):
        convert(str(source), str(tmp_path / "states"), "math-shepherd", "states")
    convert(str(source), str(tmp_path / "states"), "math-shepherd", "states", lenient=True)
    assert "skipped 1 of 3 rows" in caplog.text and "malformed row" in caplog.text
    assert read_records(tmp_path / "states", "states").num_rows == 2 * 3  # two rows of three labelled states


def test_stage_a_states_convert_to_trl_rows_whose_labels_are_the_thresholded_values(tmp_path, arith):
    rows = reference_state_rows(arith, 5, lambda t, n: round(t / n * 0.9, 3) if t < n else 1.0)
    states = write_records(rows, tmp_path / "states", "states", Provenance(producer="test"))
    out = tmp_path / "states.trl.jsonl"
    args = ["--source", str(states), "--out", str(out), "--from_format", "states", "--to_format", "trl"]
    cli_main(["convert", *args, "--threshold", "0.4"])
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(exported) == 5
    for row in exported:
        solution = [r for r in rows if r["solution_id"] == row["solution_id"]]
        values = [r["mc_value"] for r in sorted(solution, key=lambda r: r["t"])][1:]  # s_1..s_T
        assert row["labels"] == [v >= 0.4 for v in values]
        assert row["mc_values"] == pytest.approx(values) and row["prompt_mc_value"] == 0.0
        assert "\n".join(row["completions"]) == "".join(solution[0]["steps"])  # one response, delimiter dropped


def test_math_shepherd_to_trl_goes_through_states(tmp_path):
    out = convert(str(MATH_SHEPHERD), str(tmp_path / "trl.jsonl"), "math-shepherd", "trl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    sources = [json.loads(line) for line in MATH_SHEPHERD.read_text().splitlines()]
    assert len(rows) == len(sources) == 8
    assert rows[5]["labels"] == [True, True, False, False]  # the fixture's sixth row is labelled + + - -
    assert rows[5]["completions"][0] == "Step 1: She reads 12 pages a day, so in 2 days she reads 24 pages."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("trl", "trl", "x.jsonl"), "nothing to convert"),
        (("math-shepherd", "trl", "x.parquet"), "should be a .jsonl file"),
    ],
)
def test_convert_refuses_what_it_cannot_do(tmp_path, args, message):
    from_format, to_format, out = args
    with pytest.raises(UserError, match=message):
        convert(str(MATH_SHEPHERD), str(tmp_path / out), from_format, to_format)


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_math_shepherd_file_trains_a_critic_without_stage_a(tmp_path, tiny_model_dir):
    """The fixture file -> `dapo convert` -> states -> a few critic steps: it runs and the loss is finite."""
    out = tmp_path / "ms_states"
    args = ["--source", str(MATH_SHEPHERD), "--out", str(out), "--from_format", "math-shepherd"]
    cli_main(["convert", *args, "--to_format", "states"])
    assert read_provenance(out).config["from_format"] == "math-shepherd"
    data = StepDataModule(mode="critic", train_path=str(out), tokenizer=tiny_model_dir, max_tokens=512)
    module = CriticModule(tiny_model_dir, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    losses = _Losses()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[losses],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    assert len(losses.losses) == 3 and all(math.isfinite(loss) for loss in losses.losses)
