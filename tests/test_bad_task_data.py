"""Bad rows in problem files: each is an error naming the file, the row (line / item / row index) and the field,
or with `strict=False` a skipped row, counted by reason and reported in one warning (`dapo.tasks.sources`).

Rows are the real fixture rows (`tests/fixtures/tasks/`) with one of them broken, written in tmp_path in the
format under test (JSON lines, a JSON list, JSON lines under .json, gzip, parquet)."""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dapo.cli import cli_main
from dapo.records import read_records
from dapo.tasks import GSM8KTask, HumanEvalTask, MathTask, MBPPTask
from dapo.tasks.sources import load_rows

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
BAD_BYTES = "@@not-utf8@@"  # replaced by a byte that is not UTF-8 once the rows are serialized


def fixture_rows(name: str, count: int = 3) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()][:count]


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    """`rows` in the format `path`'s suffix names: .jsonl, .jsonl.gz, .json (a list), .lines.json, .parquet."""
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    if path.name.endswith(".json") and not path.name.endswith(".lines.json"):
        text = json.dumps(rows, indent=1)
    else:
        text = "\n".join(json.dumps(row) for row in rows) + "\n"
    data = text.encode().replace(BAD_BYTES.encode(), b"\xff\xfe")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def without_ids(rows: Any) -> list[dict[str, Any]]:
    """Loaded rows without the "id" a task adds where a row has none."""
    return [{k: v for k, v in row.items() if k != "id"} for row in rows]


def check_strict_and_lenient(
    caplog: pytest.LogCaptureFixture,
    make: Callable[..., Any],
    path: Path,
    message: str,
    good: list[dict[str, Any]],
    skipped: dict[str, int],
    total: int = 3,
) -> None:
    """Strict: a ValueError matching `message` (a regex), which must name the file. Lenient: exactly the `good`
    rows, and one warning counting the `skipped` ones by reason."""
    assert message.startswith(re.escape(str(path))), "the message must name the file"
    with pytest.raises(ValueError, match=message):
        make(data=str(path)).load("test")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dapo.tasks"):
        rows = make(data=str(path), strict=False).load("test")
    assert without_ids(rows) == without_ids(good)
    report = f"skipped {sum(skipped.values())} of {total} rows of {path}: {skipped}"
    assert [r.getMessage() for r in caplog.records if r.name.startswith("dapo.tasks")] == [report]


def at(path: Path) -> str:
    return re.escape(str(path))


# -- 1. missing field ----------------------------------------------------------------------------------------------


def test_missing_field_gsm8k_jsonl(tmp_path, caplog):
    rows = fixture_rows("gsm8k.jsonl")
    del rows[1]["question"]
    path = write(tmp_path / "gsm8k.jsonl", rows)
    message = rf"{at(path)}: row 1 has no field 'question' \(it has: answer\), at line 2$"
    check_strict_and_lenient(caplog, GSM8KTask, path, message, [rows[0], rows[2]], {"missing field": 1})


def test_missing_field_mbpp_json_list(tmp_path, caplog):
    rows = fixture_rows("mbpp.jsonl")
    del rows[1]["test_list"]
    path = write(tmp_path / "mbpp.json", rows)
    message = rf"{at(path)}: row 1 has no field 'test_list' \(it has: .*\), at item 1$"
    check_strict_and_lenient(caplog, MBPPTask, path, message, [rows[0], rows[2]], {"missing field": 1})


def test_missing_description_mbpp(tmp_path, caplog):
    rows = fixture_rows("mbpp.jsonl")
    del rows[0]["text"]
    path = write(tmp_path / "mbpp.jsonl", rows)
    message = rf"{at(path)}: row 0 has no description field \('text' or 'prompt'\), at line 1$"
    check_strict_and_lenient(caplog, MBPPTask, path, message, rows[1:], {"missing field": 1})


# -- 2. wrong type -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, found", [(5, "int"), (["What is 2 + 2?"], "list"), (None, "null"), (True, "bool")], ids=str
)
def test_wrong_type_gsm8k_jsonl(tmp_path, caplog, value, found):
    rows = fixture_rows("gsm8k.jsonl")
    rows[1]["question"] = value
    path = write(tmp_path / "gsm8k.jsonl", rows)
    message = rf"{at(path)}: row 1 has field 'question' of type {found} \(expected str\), at line 2$"
    check_strict_and_lenient(caplog, GSM8KTask, path, message, [rows[0], rows[2]], {"wrong type": 1})


@pytest.mark.parametrize(
    "field, value, label, expected",
    [
        ("test_list", "assert f() == 1", "'test_list'", "list of str"),
        ("test_list", ["assert f() == 1", 7], r"'test_list'\[1\]", "str"),
        ("task_id", 1.5, "'task_id'", "int or str"),
        ("code", {"python": "def f(): pass"}, "'code'", "str"),
        ("test_setup_code", 3, "'test_setup_code'", "str"),
    ],
    ids=["test_list-str", "test_list-item", "task_id", "code", "setup"],
)
def test_wrong_type_mbpp_json_list(tmp_path, caplog, field, value, label, expected):
    rows = fixture_rows("mbpp.jsonl")
    rows[2][field] = value
    path = write(tmp_path / "mbpp.json", rows)
    message = rf"{at(path)}: row 2 has field {label} of type \w+ \(expected {expected}\), at item 2$"
    check_strict_and_lenient(caplog, MBPPTask, path, message, rows[:2], {"wrong type": 1})


def test_wrong_type_math500_answer(tmp_path, caplog):
    rows = fixture_rows("math500.jsonl")
    rows[0]["answer"] = 11
    path = write(tmp_path / "math500.jsonl", rows)
    message = rf"{at(path)}: row 0 has field 'answer' of type int \(expected str\), at line 1$"
    check_strict_and_lenient(caplog, MathTask, path, message, rows[1:], {"wrong type": 1})


# -- 3. empty field ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, why", [("", "no text"), (" \n\t", "only whitespace")], ids=["empty", "blank"])
def test_empty_field_gsm8k_jsonl(tmp_path, caplog, value, why):
    rows = fixture_rows("gsm8k.jsonl")
    rows[1]["question"] = value
    path = write(tmp_path / "gsm8k.jsonl", rows)
    message = rf"{at(path)}: row 1 has an empty field 'question' \({why}\), at line 2$"
    check_strict_and_lenient(caplog, GSM8KTask, path, message, [rows[0], rows[2]], {"empty field": 1})


def test_empty_field_gsm8k_parquet_names_the_row_index(tmp_path, caplog):
    rows = fixture_rows("gsm8k.jsonl")
    rows[2]["answer"] = ""
    path = write(tmp_path / "gsm8k.parquet", rows)
    message = rf"{at(path)}: row 2 has an empty field 'answer' \(no text\)$"
    check_strict_and_lenient(caplog, GSM8KTask, path, message, rows[:2], {"empty field": 1})


@pytest.mark.parametrize(
    "field, value, label, why",
    [
        ("test_list", [], "'test_list'", "no items"),
        ("test_list", ["assert f() == 1", "  "], r"'test_list'\[1\]", "only whitespace"),
        ("text", "", "'text'", "no text"),
        ("code", "\n", "'code'", "only whitespace"),
    ],
    ids=["no-asserts", "blank-assert", "description", "code"],
)
def test_empty_field_mbpp_json_list(tmp_path, caplog, field, value, label, why):
    rows = fixture_rows("mbpp.jsonl")
    rows[0][field] = value
    path = write(tmp_path / "mbpp.json", rows)
    message = rf"{at(path)}: row 0 has an empty field {label} \({why}\), at item 0$"
    check_strict_and_lenient(caplog, MBPPTask, path, message, rows[1:], {"empty field": 1})


def test_empty_reference_answer_math500(tmp_path, caplog):
    rows = fixture_rows("math500.jsonl")
    rows[1]["answer"] = " "
    path = write(tmp_path / "math500.jsonl", rows)
    message = rf"{at(path)}: row 1 has an empty field 'answer' \(only whitespace\), at line 2$"
    check_strict_and_lenient(caplog, MathTask, path, message, [rows[0], rows[2]], {"empty field": 1})


def test_empty_tests_humaneval(tmp_path, caplog):
    rows = fixture_rows("humaneval.jsonl")
    rows[0]["test"] = ""
    path = write(tmp_path / "humaneval.jsonl", rows)
    message = rf"{at(path)}: row 0 has an empty field 'test' \(no text\), at line 1$"
    check_strict_and_lenient(caplog, HumanEvalTask, path, message, rows[1:], {"empty field": 1}, total=len(rows))


def test_a_row_with_nothing_to_grade_against_is_counted_as_no_final_answer(tmp_path, caplog):
    rows = fixture_rows("gsm8k.jsonl")
    rows[0]["answer"] = "She has 28 stickers."
    path = write(tmp_path / "gsm8k.jsonl", rows)
    message = rf"{at(path)}: row 0: its 'answer' \(the worked solution\) has no '#### N' final line, at line 1$"
    check_strict_and_lenient(caplog, GSM8KTask, path, message, rows[1:], {"no final answer": 1})


# -- 4. bytes that are not UTF-8 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gsm8k.jsonl", "gsm8k.jsonl.gz", "gsm8k.lines.json"])
def test_non_utf8_json_lines_name_the_line_and_byte_offset(tmp_path, caplog, name):
    rows = fixture_rows("gsm8k.jsonl")
    rows[1]["question"] += BAD_BYTES
    path = write(tmp_path / name, rows)
    data = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    offset = data.index(b"\xff")
    assert data.count(b"\n", 0, offset) == 1  # on line 2
    message = rf"{at(path)}: line 2 is not valid UTF-8 \(byte offset {offset}: invalid start byte\)$"
    check_strict_and_lenient(caplog, GSM8KTask, path, message, [rows[0], rows[2]], {"not UTF-8": 1})


def test_non_utf8_json_list_names_the_line_and_skips_the_item(tmp_path, caplog):
    rows = fixture_rows("mbpp.jsonl")
    rows[1]["code"] += BAD_BYTES
    path = write(tmp_path / "mbpp.json", rows)
    data = path.read_bytes()
    offset = data.index(b"\xff")
    line = data.count(b"\n", 0, offset) + 1
    message = rf"{at(path)}: line {line} is not valid UTF-8 \(byte offset {offset}: invalid start byte\)$"
    check_strict_and_lenient(caplog, MBPPTask, path, message, [rows[0], rows[2]], {"not UTF-8": 1})


def test_non_utf8_is_a_value_error_not_a_bare_unicode_decode_error(tmp_path):
    path = write(tmp_path / "gsm8k.jsonl", [{"question": BAD_BYTES, "answer": "#### 1"}])
    with pytest.raises(ValueError) as caught:
        load_rows(str(path), "test")
    assert not isinstance(caught.value, UnicodeDecodeError)
    assert caught.value.__suppress_context__


def test_lines_that_do_not_parse_are_skipped_when_lenient(tmp_path, caplog):
    rows = fixture_rows("gsm8k.jsonl")
    lines = [json.dumps(rows[0]), '{"question": "q", ', "", json.dumps(rows[1]), "[1, 2]", json.dumps(rows[2])]
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{at(path)}: line 2 is not valid JSON"):
        GSM8KTask(data=str(path)).load("test")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dapo.tasks"):
        assert without_ids(GSM8KTask(data=str(path), strict=False).load("test")) == rows
    assert f"skipped 2 of 5 rows of {path}: {{'not JSON': 1, 'not an object': 1}}" in caplog.text


# -- 5. duplicate ids ----------------------------------------------------------------------------------------------


def test_duplicate_ids_gsm8k_jsonl_name_both_rows(tmp_path, caplog):
    rows = [{"id": key, **row} for key, row in zip("aba", fixture_rows("gsm8k.jsonl"), strict=True)]
    path = write(tmp_path / "gsm8k.jsonl", rows)
    message = rf"{at(path)}: row 2 repeats the id 'a' of row 0 \(line 1\), at line 3$"
    check_strict_and_lenient(caplog, GSM8KTask, path, message, rows[:2], {"duplicate id": 1})


def test_duplicate_ids_mbpp_json_list_compare_as_text(tmp_path, caplog):
    rows = [{"id": key, **row} for key, row in zip([7, 8, "7"], fixture_rows("mbpp.jsonl"), strict=True)]
    path = write(tmp_path / "mbpp.json", rows)
    message = rf"{at(path)}: row 2 repeats the id '7' of row 0 \(item 0\), at item 2$"
    check_strict_and_lenient(caplog, MBPPTask, path, message, rows[:2], {"duplicate id": 1})


def test_duplicate_ids_parquet(tmp_path, caplog):
    rows = [{"id": key, **row} for key, row in zip("abb", fixture_rows("gsm8k.jsonl"), strict=True)]
    path = write(tmp_path / "gsm8k.parquet", rows)
    message = rf"{at(path)}: row 2 repeats the id 'b' of row 1$"
    check_strict_and_lenient(caplog, GSM8KTask, path, message, rows[:2], {"duplicate id": 1})


def test_a_bad_id_is_a_wrong_type(tmp_path, caplog):
    rows = [{"id": key, **row} for key, row in zip(["a", ["b"], "c"], fixture_rows("gsm8k.jsonl"), strict=True)]
    path = write(tmp_path / "gsm8k.jsonl", rows)
    message = rf"{at(path)}: row 1 has field 'id' of type list \(expected str or int\), at line 2$"
    check_strict_and_lenient(caplog, GSM8KTask, path, message, [rows[0], rows[2]], {"wrong type": 1})


# -- 6. missing data file ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [GSM8KTask, MBPPTask], ids=["gsm8k", "mbpp"])
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_a_missing_data_file_is_named_whatever_strict_says(tmp_path, make, strict):
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(FileNotFoundError, match=rf"data file {re.escape(repr(str(missing)))} does not exist"):
        make(data=str(missing), strict=strict).load("test")
    with pytest.raises(FileNotFoundError, match=r"has no file for split 'test' \(looked for test.jsonl"):
        make(data=str(tmp_path), strict=strict).load("test")


# -- all of it at once, and through the CLI ------------------------------------------------------------------------


def many_bad_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows of a GSM8K file with a good row, then one of each kind of bad row, then another good one; the good)."""
    good = fixture_rows("gsm8k.jsonl", 2)
    rows = [
        good[0],
        {"answer": "#### 1"},
        {"question": 5, "answer": "#### 1"},
        {"question": "", "answer": "#### 1"},
        {"question": "q", "answer": "no final line"},
        {"question": "q" + BAD_BYTES, "answer": "#### 1"},
        {**good[0]},  # same content, no id: not a duplicate
        {"id": "x", **good[1]},
        {"id": "x", "question": "q", "answer": "#### 2"},
    ]
    return rows, [good[0], good[0], {"id": "x", **good[1]}]


def test_every_reason_is_counted_in_one_warning(tmp_path, caplog):
    rows, good = many_bad_rows()
    path = write(tmp_path / "gsm8k.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="dapo.tasks"):
        loaded = GSM8KTask(data=str(path), strict=False).load("train")
    assert without_ids(loaded) == without_ids(good)
    assert loaded[2]["id"] == "x" and loaded[0]["id"] == "gsm8k-train-00000"
    counts = {
        "not UTF-8": 1,
        "missing field": 1,
        "wrong type": 1,
        "empty field": 1,
        "no final answer": 1,
        "duplicate id": 1,
    }
    assert caplog.messages == [f"skipped 6 of 9 rows of {path}: {counts}"]


def test_cli_problems_with_strict_false_writes_only_the_good_rows(tmp_path, caplog):
    rows, good = many_bad_rows()
    path = write(tmp_path / "gsm8k.jsonl", rows)
    out = tmp_path / "problems"
    with pytest.raises(ValueError, match=rf"{at(path)}: line 6 is not valid UTF-8"):
        cli_main(["problems", "--task", "dapo.tasks.GSM8KTask", "--task.data", str(path), "--out", str(out)])
    assert not out.exists()
    args = ["problems", "--task", "dapo.tasks.GSM8KTask", "--task.data", str(path), "--task.strict", "false"]
    with caplog.at_level(logging.WARNING, logger="dapo.tasks"):
        cli_main([*args, "--out", str(out)])
    assert "skipped 6 of 9 rows of" in caplog.text
    problems = read_records(out, "problems")
    assert len(problems) == 3
    assert [json.loads(example)["question"] for example in problems["example"]] == [r["question"] for r in good]
    assert problems["id"] == ["gsm8k-train-00000", "gsm8k-train-00001", "x"]
