"""First-error detection: ProcessBench's metric on hand-worked examples, champ's annotations read from the installed
package, and `dapo first-error` end to end with a tiny random critic."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from dapo.cli import cli_main
from dapo.core.errors import MissingExtra
from dapo.core.first_error import best_threshold, first_error_f1, first_error_from_values, score_at
from dapo.tasks import champ
from dapo.tasks.champ import champ_solutions, first_wrong_step, step_holding
from dapo.tasks.processbench import read_labelled_solutions, with_newlines

# -- the metric ------------------------------------------------------------------------------------------------


def test_the_first_state_below_the_threshold_names_the_step_that_led_to_it():
    """values are V(s_0..s_T); step t leads to s_{t+1}:
    [0.8, 0.7, 0.4, 0.9]: V(s_2) = 0.4 < 0.5 first            -> step 1
    [0.2, 0.6, 0.7]:      V(s_0) = 0.2 is the prompt's, unread -> -1
    [0.9, 0.5]:           0.5 is not below 0.5                 -> -1
    [0.9, 0.4]:           V(s_1) = 0.4 after step 0            -> 0
    [0.3]:                no steps                             -> -1"""
    assert first_error_from_values([0.8, 0.7, 0.4, 0.9], 0.5) == 1
    assert first_error_from_values([0.2, 0.6, 0.7], 0.5) == -1
    assert first_error_from_values([0.9, 0.5], 0.5) == -1
    assert first_error_from_values([0.9, 0.4], 0.5) == 0
    assert first_error_from_values([0.3], 0.5) == -1
    with pytest.raises(ValueError, match="no values"):
        first_error_from_values([], 0.5)


def test_f1_is_the_harmonic_mean_of_the_two_accuracies():
    """predictions [1, 0, -1, -1, 2], labels [1, 2, -1, -1, -1]:
    flawed (labels 1, 2):   1 == 1 right, 0 != 2 wrong (a flag at the wrong step counts wrong) -> 1/2
    correct (three -1s):    -1, -1 right, 2 wrong                                               -> 2/3
    F1 = 2 * 1/2 * 2/3 / (1/2 + 2/3) = (2/3) / (7/6) = 4/7"""
    score = first_error_f1([1, 0, -1, -1, 2], [1, 2, -1, -1, -1])
    assert score.error_accuracy == pytest.approx(1 / 2)
    assert score.correct_accuracy == pytest.approx(2 / 3)
    assert score.f1 == pytest.approx(4 / 7)
    assert (score.n_error, score.n_correct) == (2, 3)


def test_f1_edge_cases():
    """Never flagging: flawed 0/1 right, correct 1/1 right -> F1 = 0 (not NaN: 2*0*1/(0+1) = 0).
    Both accuracies 0 -> F1 = 0 (0/0 defined as 0). No correct solutions -> that accuracy and F1 are NaN."""
    assert first_error_f1([-1, -1], [0, -1]).f1 == 0.0
    assert first_error_f1([-1, 1], [0, -1]).f1 == 0.0
    only_flawed = first_error_f1([0], [0])
    assert only_flawed.error_accuracy == 1.0
    assert math.isnan(only_flawed.correct_accuracy) and math.isnan(only_flawed.f1)
    with pytest.raises(ValueError, match="2 predictions for 1 labels"):
        first_error_f1([0, 1], [0])


def test_the_sweep_picks_the_lowest_threshold_with_the_best_f1():
    """values [[0.9, 0.6, 0.2], [0.9, 0.7, 0.8]], labels [1, -1] (V(s_0) = 0.9 unread):
    t <= 0.20:        predictions [-1, -1] -> flawed 0/1            -> F1 0
    0.21 <= t <= 0.6: predictions [ 1, -1] -> both right            -> F1 1  (first of these: 0.21)
    0.61 <= t <= 0.7: predictions [ 0, -1] -> flawed one flagged early -> F1 0"""
    values, labels = [[0.9, 0.6, 0.2], [0.9, 0.7, 0.8]], [1, -1]
    best = best_threshold(values, labels)
    assert best.threshold == pytest.approx(0.21)
    assert best.score.f1 == 1.0
    assert score_at(values, labels, 0.2).f1 == 0.0
    assert score_at(values, labels, 0.65).f1 == 0.0


# -- champ's annotations ---------------------------------------------------------------------------------------

CHAMP_JSON = Path(__import__("champ_dataset").__file__).parent / "dataset_files" / "v0.json"


@pytest.fixture(scope="module")
def champ_items():
    return champ_solutions()


def test_every_champ_annotation_is_read(champ_items):
    """v0: 270 problems x 2 annotated solutions = 540; 96 marked "No mistake"; none skipped (the 6 cut-off
    solutions all have a marked mistake). Every label names a step or is -1; the steps rejoin to the model's text."""
    items, skipped = champ_items
    assert len(items) == 540 and skipped == {}
    assert sum(item.label == -1 for item in items) == 96
    assert all(-1 <= item.label < len(item.steps) for item in items)
    assert len({item.id for item in items}) == 540
    raw = json.loads(CHAMP_JSON.read_text())["problems"]
    for item in items:
        problem, key = item.id.split("|", 1)
        assert "".join(item.steps) == raw[problem]["fws_annotations"][key]["text"]
        assert item.problem == raw[problem]["_text"]


def test_champ_labels_match_the_raw_annotations(champ_items):
    """P_Combinatorics_1, GPT-3.5, "No C w/o H": start_idx 319 is the start of the 5th line that is not blank,
    "If the last digit is 1, ..." -> label 4 (steps 1-4 start with the blank line before them).
    P_Combinatorics_3, PaLM 2 Medium, "No C w/o H": the mark starts mid-line, after "* Case 2: $n=2$. " -> the
    step holding that line, 3."""
    items = {item.id: item for item in champ_items.items}
    raw = json.loads(CHAMP_JSON.read_text())["problems"]
    first = items["P_Combinatorics_1|GPT-3.5|No C w/o H"]
    note = raw["P_Combinatorics_1"]["fws_annotations"]["GPT-3.5|No C w/o H"]
    assert note["start_idx"] == 319 and first.label == 4
    assert first.steps[4].lstrip().startswith(note["text"][319:469])
    mid_line = items["P_Combinatorics_3|PaLM 2 Medium|No C w/o H"]
    note = raw["P_Combinatorics_3"]["fws_annotations"]["PaLM 2 Medium|No C w/o H"]
    assert mid_line.label == 3
    assert mid_line.steps[3].startswith("* Case 2: $n=2$. ")
    assert note["text"][note["start_idx"] : note["end_idx"]] in mid_line.steps[3]


def test_the_step_rule_on_literal_text():
    """text "a\\n\\nbc\\nd" splits as ["a\\n", "\\nbc\\n", "d"] (the blank line joins the next step):
    position 0 (a) -> 0; 2 (the blank line) -> 1; 4 (c) -> 1; 6 (d) -> 2.
    A mark " bc" starting on a space counts from its first non-blank character; no mark -> -1."""
    steps = ["a\n", "\nbc\n", "d"]
    assert [step_holding(steps, p) for p in (0, 2, 4, 6)] == [0, 1, 1, 2]
    assert first_wrong_step("a\n\nbc\nd", 2, 5) == (1, "")
    assert first_wrong_step("a\n\nbc\nd", None, None) == (-1, "")
    assert first_wrong_step("a\n\nbc\nd", 5, 99) == (None, "span outside the text")
    assert first_wrong_step("a\n\nbc\nd", 1, 3) == (None, "blank span")


def test_a_cut_off_solution_without_a_marked_mistake_is_skipped_and_counted(monkeypatch):
    """Two annotations of one problem: a cut-off one marked "No mistake" (unfinished, so not a correct
    solution: skipped) and a cut-off one with a marked mistake (kept)."""

    def annotation(start):
        return SimpleNamespace(text="step one\nstep two\n", start_idx=start, end_idx=None if start is None else 12)

    cut = SimpleNamespace(messages=[SimpleNamespace(role="Model.GPT-4", error="LENGTH_CURRENT")])
    problem = SimpleNamespace(
        text="P?",
        fws_annotations={"GPT-4|a": annotation(None), "GPT-4|b": annotation(9)},
        conversations={"GPT-4|a": cut, "GPT-4|b": cut},
    )
    monkeypatch.setattr(champ, "load_champ", lambda: SimpleNamespace(problems={"P_X_1": problem}))
    items, skipped = champ_solutions()
    assert skipped == {"cut off, no mistake marked": 1}
    assert [(item.id, item.label) for item in items] == [("P_X_1|GPT-4|b", 1)]


def test_a_missing_champ_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "champ_dataset", None)  # import champ_dataset now raises ImportError
    with pytest.raises(MissingExtra, match="champ-dataset"):
        champ_solutions()


# -- ProcessBench rows -----------------------------------------------------------------------------------------

ROWS = [
    {
        "id": "pb-0",
        "generator": "tiny",
        "problem": "What is 2 + 3 * 4?",
        "steps": ["3 * 4 = 12.", "2 + 12 = 15.", "The answer is \\boxed{15}."],
        "final_answer_correct": False,  # ProcessBench's own field: ignored
        "label": 1,
    },
    {"id": "pb-1", "problem": "What is 1 + 1?", "steps": ["1 + 1 = 2.", "\\boxed{2}"], "label": -1},
    {"problem": "What is 6 / 2?", "steps": ["6 / 2 = 3.\n", "\\boxed{3}"], "label": -1},
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_processbench_rows_are_read_with_dapo_step_delimiters(tmp_path):
    """Each step but the last gets its "\\n" unless it has one; a row without an id gets <file stem>-<row>."""
    items = read_labelled_solutions(write_rows(tmp_path / "pb.jsonl", ROWS))
    assert [item.id for item in items] == ["pb-0", "pb-1", "pb-2"]
    assert items[0].steps == ["3 * 4 = 12.\n", "2 + 12 = 15.\n", "The answer is \\boxed{15}."]
    assert items[2].steps == ["6 / 2 = 3.\n", "\\boxed{3}"]
    assert [item.label for item in items] == [1, -1, -1]
    assert with_newlines(["a", "b"]) == ["a\n", "b"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"problem": "Q", "label": 0}, r"row 1 has no field 'steps'.*line 2"),
        ({"problem": "Q", "steps": ["a", "b", "c"], "label": 3}, r"row 1: label 3 is outside -1..2.*line 2"),
        ({"problem": "Q", "steps": [], "label": -1}, r"row 1 has an empty field 'steps'"),
        ({"problem": "Q", "steps": ["a"], "label": "0"}, r"row 1 has field 'label' of type str"),
    ],
)
def test_bad_rows_are_named_by_file_and_row(tmp_path, bad, message):
    path = write_rows(tmp_path / "bad.jsonl", [ROWS[0], bad])
    with pytest.raises(ValueError, match=f"bad.jsonl: {message}"):
        read_labelled_solutions(path)


# -- the command -----------------------------------------------------------------------------------------------


def check_outputs(out: Path, n: int) -> tuple[dict, list[dict]]:
    """summary.json's fields and items.jsonl's rows agree with each other and with the threshold."""
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert summary["solutions"] == len(rows) == n
    assert summary["n_error"] + summary["n_correct"] == n
    assert summary["best_threshold_on_same_data"]["optimistic"] is True
    assert 0 < summary["best_threshold_on_same_data"]["threshold"] < 1
    assert summary["seconds"] > 0
    predictions = [first_error_from_values(row["values"], summary["threshold"]) for row in rows]
    assert [row["prediction"] for row in rows] == predictions
    score = first_error_f1(predictions, [row["label"] for row in rows])
    assert summary["error_accuracy"] == score.error_accuracy and summary["f1"] == score.f1
    assert all(0 < v < 1 for row in rows for v in row["values"])
    return summary, rows


def test_the_command_on_a_file_of_rows(tmp_path, critic_dir):
    data = write_rows(tmp_path / "pb.jsonl", ROWS)
    cli_main(["first-error", "--critic", critic_dir, "--data", str(data), "--out", str(tmp_path / "out")])
    summary, rows = check_outputs(tmp_path / "out", 3)
    assert (summary["n_error"], summary["n_correct"], summary["threshold"]) == (1, 2, 0.5)
    assert summary["data"] == str(data) and summary["skipped"] == {}
    assert [len(row["values"]) for row in rows] == [len(r["steps"]) + 1 for r in ROWS]  # V(s_0..s_T)
    assert [row["id"] for row in rows] == ["pb-0", "pb-1", "pb-2"]


def test_the_command_on_champ(tmp_path, critic_dir):
    """The first 4 annotated solutions: P_Combinatorics_1 and _2, two models each."""
    out = tmp_path / "champ"
    cli_main(["first-error", "--critic", critic_dir, "--limit", "4", "--threshold", "0.45", "--out", str(out)])
    summary, rows = check_outputs(out, 4)
    assert summary["data"] == "champ" and summary["threshold"] == 0.45
    expected = {item.id: item for item in champ_solutions(4).items}
    assert [row["id"] for row in rows] == list(expected)
    assert [len(row["values"]) for row in rows] == [len(item.steps) + 1 for item in expected.values()]
    assert [row["label"] for row in rows] == [item.label for item in expected.values()]


def test_the_command_refuses_a_threshold_that_is_not_a_probability(tmp_path, critic_dir):
    with pytest.raises(ValueError, match="threshold must be in"):
        cli_main(["first-error", "--critic", critic_dir, "--threshold", "1.5", "--out", str(tmp_path / "x")])
