"""Bad records, wherever a stage reads them: each case raises a RecordError naming the file, row and field, or
with strict=False is skipped, counted and reported. The table in docs/reliability.md lists these cases; each
test here is one of its rows (the task-data rows are in test_bad_task_data.py)."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
from builders import candidate_state_rows, reference_action_rows, reference_state_rows
from datasets import Dataset
from transformers import AutoTokenizer

from dapo.core.padding import pad_id_of
from dapo.data_modules import StepDataModule
from dapo.records import SCHEMAS, Provenance, RecordError, read_records, write_records
from dapo.stages.candidate_advantages import AdvantageConfig, run_advantages
from dapo.stages.mc_rollouts import RolloutConfig, load_problems
from dapo.tasks import ArithTask


def _states(arith, n: int = 6) -> list[dict]:
    return reference_state_rows(arith, n, lambda t, T: (t + 1) / (T + 2))


def _save_arrow(rows: list[dict], path: Path, kind: str) -> Path:
    """Rows saved as another tool would: straight to Arrow, without write_records' checks."""
    Dataset.from_list(rows, features=SCHEMAS[kind]).save_to_disk(str(path))
    return path


def _jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def _critic_data(path: Path, tokenizer: str, **kwargs) -> StepDataModule:
    dm = StepDataModule(mode="critic", train_path=str(path), tokenizer=tokenizer, **kwargs)
    dm.load_items()
    return dm


# -- records files from other tools: missing fields, wrong types ------------------------------------------------


def test_a_states_jsonl_file_is_read_and_checked_like_a_dataset(tmp_path, arith, tiny_model_dir):
    rows = _states(arith)
    dm = _critic_data(_jsonl(rows, tmp_path / "states.jsonl"), tiny_model_dir)
    assert len(dm.train_items) == 6


def test_a_missing_field_names_file_row_and_field(tmp_path, arith, caplog):
    rows = _states(arith)
    del rows[3]["mc_value"]
    path = _jsonl(rows, tmp_path / "states.jsonl")
    with pytest.raises(RecordError, match=r"states\.jsonl row 3: missing field\(s\) \['mc_value'\]"):
        read_records(path, "states")
    with caplog.at_level(logging.WARNING):
        assert read_records(path, "states", strict=False).num_rows == len(rows) - 1
    assert "skipped 1 states records" in caplog.text and "missing field or wrong type" in caplog.text


def test_a_wrong_type_names_file_row_and_field(tmp_path, arith):
    rows = _states(arith)
    rows[2]["mc_value"] = "0.5"
    rows[4]["steps"] = "1 + 1 = 2\n"  # a string where a list of steps belongs
    path = _jsonl(rows, tmp_path / "states.jsonl")
    with pytest.raises(RecordError, match=r"row 2, field 'mc_value': expected a number, got str"):
        read_records(path, "states")
    assert read_records(path, "states", strict=False).num_rows == len(rows) - 2


def test_a_column_of_the_wrong_type_names_file_and_column(tmp_path, arith):
    rows = [row | {"mc_value": str(row["mc_value"])} for row in _states(arith)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "states"))
    with pytest.raises(RecordError, match=r"states: column 'mc_value' holds Value\('string'\), expected"):
        read_records(tmp_path / "states", "states")


def test_non_utf8_bytes_in_a_records_file_name_the_file_and_line(tmp_path, arith):
    path = _jsonl(_states(arith), tmp_path / "states.jsonl")
    path.write_bytes(path.read_bytes().replace(b"Solution", b"Sol\xffution", 1))
    with pytest.raises(ValueError, match=r"states\.jsonl.*line 1"):
        read_records(path, "states")


# -- values: NaN / inf, ranges, empty text, nulls, duplicate ids -------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1.5])
def test_a_bad_mc_value_in_a_dataset_names_row_and_field(tmp_path, arith, tiny_model_dir, bad, caplog):
    rows = _states(arith)
    rows[5]["mc_value"] = bad
    path = _save_arrow(rows, tmp_path / "states", "states")
    reason = "outside \\[0, 1\\]" if bad == 1.5 else "not a finite number"
    with pytest.raises(RecordError, match=rf"states: row 5, field 'mc_value': {reason}"):
        _critic_data(path, tiny_model_dir)
    with caplog.at_level(logging.WARNING):
        dm = _critic_data(path, tiny_model_dir, strict=False)
    assert len(dm.train_items) == 6  # the solution keeps its other states; the bad target is not trained on
    assert "skipped 1 states records" in caplog.text


def test_nan_advantages_and_positive_log_probs_are_refused(tmp_path, arith):
    rows = reference_action_rows(arith, 3, repeat_first=False)
    rows[1]["advantage"] = math.nan
    rows[2]["ref_logprob"] = 0.5
    path = _save_arrow(rows, tmp_path / "actions", "actions")
    with pytest.raises(RecordError, match=r"row 1, field 'advantage': not a finite number"):
        read_records(path, "actions")
    kept = read_records(path, "actions", strict=False)
    assert kept.num_rows == len(rows) - 2


def test_an_empty_prompt_is_refused(tmp_path, arith):
    rows = _states(arith)
    for row in rows[:4]:  # the whole first solution
        row["prompt"] = "  "
    path = _save_arrow(rows, tmp_path / "states", "states")
    with pytest.raises(RecordError, match=r"row 0, field 'prompt': empty text"):
        read_records(path, "states")
    assert read_records(path, "states", strict=False).num_rows == len(rows) - 4


def test_a_null_cell_is_refused(tmp_path, arith):
    rows = _states(arith)
    rows[1]["prompt"] = None
    path = _save_arrow(rows, tmp_path / "states", "states")
    with pytest.raises(RecordError, match=r"row 1, field 'prompt': missing \(null\)"):
        read_records(path, "states")


def test_duplicate_ids_name_both_rows(tmp_path, arith):
    rows = _states(arith)
    rows.append(dict(rows[2]))
    path = _save_arrow(rows, tmp_path / "states", "states")
    with pytest.raises(RecordError, match=r"duplicate state_id '.*' at rows 2 and 24"):
        read_records(path, "states")
    assert read_records(path, "states", strict=False).num_rows == len(rows) - 1


def test_duplicate_problem_ids_and_bad_example_json_in_stage_a(tmp_path, arith, caplog):
    rows = [
        {"id": f"p{i}", "task": "arith", "prompt": f"Question {i}\nSolution:\n", "answer": "1", "example": "{}"}
        for i in range(4)
    ]
    rows[3]["id"] = "p0"
    rows[2]["example"] = "{not json"
    path = _save_arrow(rows, tmp_path / "problems", "problems")
    with pytest.raises(RecordError, match=r"duplicate id 'p0' at rows 0 and 3"):
        load_problems(RolloutConfig(problems_path=str(path)), ArithTask())
    with caplog.at_level(logging.WARNING):
        problems = load_problems(RolloutConfig(problems_path=str(path), strict=False), ArithTask())
    assert [p.id for p in problems] == ["p0", "p1"]
    assert "duplicate id" in caplog.text and "bad example JSON" in caplog.text


# -- steps: empty responses, missing delimiters, overlong ------------------------------------------------------


def test_an_empty_response_is_refused(tmp_path, arith, tiny_model_dir):
    rows = _states(arith)
    # a finished response with no steps: its only state is terminal, so no rollouts (a sample cut off inside its
    # first step has them, and is not empty: tests/test_step_data.py)
    empty = dict(rows[0], state_id="empty/t0", solution_id="empty", steps=[], t=0, n_rollouts=0)
    empty |= {"completions": [], "completion_rewards": [], "completion_truncated": []}
    path = write_records([*rows, empty], tmp_path / "states", "states", Provenance(producer="test"))
    with pytest.raises(RecordError, match=r"solution 'empty'.*an empty response"):
        _critic_data(path, tiny_model_dir)
    assert len(_critic_data(path, tiny_model_dir, strict=False).train_items) == 6


def test_a_step_without_its_delimiter_is_refused(tmp_path, arith, tiny_model_dir):
    rows = _states(arith)
    for row in rows[:4]:  # every state of the first solution: its first step lost its newline
        row["steps"] = [row["steps"][0].rstrip("\n"), *row["steps"][1:]]
    path = write_records(rows, tmp_path / "states", "states", Provenance(producer="test"))
    with pytest.raises(RecordError, match=r"step 0 does not end with the step delimiter '\\n'"):
        _critic_data(path, tiny_model_dir)
    assert len(_critic_data(path, tiny_model_dir, strict=False).train_items) == 5


def test_an_overlong_solution_is_refused(tmp_path, arith, tiny_model_dir):
    path = write_records(_states(arith), tmp_path / "states", "states", Provenance(producer="test"))
    with pytest.raises(RecordError, match=r"tokens, over max_length=20"):
        _critic_data(path, tiny_model_dir, max_length=20)
    with pytest.raises(ValueError, match="no usable train items out of"):
        _critic_data(path, tiny_model_dir, max_length=20, strict=False)


def test_stage_b_refuses_a_state_with_bad_completion_rewards(tmp_path, arith, tiny_model_dir, critic_dir):
    rows = candidate_state_rows(arith, 3)
    rows[1]["completion_rewards"] = [1.0, math.nan, 0.0, 0.0, 1.0]  # write_records itself would refuse this
    states = _save_arrow(rows, tmp_path / "states", "states")
    (states / "provenance.json").write_text(json.dumps({"producer": "another tool"}))
    config = AdvantageConfig(
        states_path=str(states), critic_path=critic_dir, policy_path=tiny_model_dir, out_dir=str(tmp_path / "b")
    )
    with pytest.raises(RecordError, match=r"state '.*/t1' \(row 1\): completion_rewards .* not all finite"):
        run_advantages(config)
    config.strict = False
    assert run_advantages(config).states == 2


# -- tokenizer and configs -----------------------------------------------------------------------------------------


def test_a_tokenizer_without_pad_pads_with_eos_and_without_either_is_an_error(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    assert pad_id_of(tokenizer) == tokenizer.eos_token_id
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match=r"tokenizer '.*' has neither a pad nor an eos token"):
        pad_id_of(tokenizer)


def _dapo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dapo.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_a_config_naming_a_missing_file_says_which(tmp_path, tiny_model_dir):
    missing = _dapo("fit", "--config", "no/such.yaml", cwd=tmp_path)
    assert missing.returncode != 0 and "no/such.yaml" in missing.stderr
    config = tmp_path / "critic.yaml"
    config.write_text(
        "model:\n  class_path: dapo.training.critic.CriticModule\n  init_args:\n"
        f"    model_path: {tiny_model_dir}\n"
        "data:\n  mode: critic\n  train_path: runs/none/states\ntrainer:\n  accelerator: cpu\n  logger: false\n"
    )
    done = _dapo("fit", "--config", str(config), cwd=tmp_path)
    assert done.returncode != 0 and "no states records at runs/none/states" in done.stderr
    rollout = _dapo("rollout", "--stage_a.policy_path", str(tmp_path / "no_policy"), cwd=tmp_path)
    assert rollout.returncode != 0 and "no_policy" in rollout.stderr.splitlines()[-1]


def test_a_weight_that_is_not_positive_is_refused(tmp_path, arith):
    rows = reference_action_rows(arith, 3, repeat_first=False)
    rows[3]["weight"] = 0.0
    rows[4]["weight"] = math.inf
    path = _save_arrow(rows, tmp_path / "actions", "actions")
    with pytest.raises(RecordError, match=r"row 3, field 'weight': not above 0"):
        read_records(path, "actions")
    assert read_records(path, "actions", strict=False).num_rows == len(rows) - 2
