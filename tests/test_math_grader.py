r"""Tests for `dapo.graders.math`: final-answer extraction, equivalence (fast path and math-verify helper), grade
statuses, the wall-clock bound from non-main threads, helper restart and cleanup, threads and forked daemons."""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo.graders import math as math_grader
from dapo.graders.math import MathGrade, extract_answer, grade, is_equivalent

PATHOLOGICAL = r"2^{2^{2^{2^{30}}}}"  # sympy computes this big-integer power in C: only killing the process stops it
SHORT_TIMEOUT_S = 0.5
KILL_SLACK_S = 1.5  # on top of the bound: kill, reap, poll granularity on a loaded 2-core machine

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (r"First \boxed{1}, then on reflection \boxed{2}.", "2"),
        (r"So $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{\frac{\sqrt{3}}{2^{\frac{1}{2}}}}", r"\frac{\sqrt{3}}{2^{\frac{1}{2}}}"),
        (r"\boxed{\left\{ 1, 2 \right\}}", r"\left\{ 1, 2 \right\}"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"The result: \fbox{7}", "7"),
        (r"hence $\boxed 5$", "5"),
        (r"\boxed{1} and then a truncated \boxed{2", "1"),
        (r"\boxed{9} and then an empty \boxed{}", "9"),
        (r"The answer is 3, so \boxed{4}", "4"),  # a box wins over "answer is"
        ("The answer is 42.", "42"),
        ("I think the answer is 10. Wait, no: the answer is 12.", "12"),
        ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", r"\frac{3}{4}"),
        ("the final answer is **-7**", "-7"),
        ("Answer: 3.5\n", "3.5"),
        ("Natalia sold 48/2 = 24 clips in May.\n#### 1,000", "1,000"),
        ("#### 72\nThe answer isn't anything else", "72"),
        ("no final answer here", None),
        ("", None),
        ("The answer is", None),
        ("####", None),
        ("\\boxed{", None),
    ],
)
def test_extract_answer(response: str, expected: str | None) -> None:
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    ("response", "reference", "status"),
    [
        ("The answer is 28 stickers.", "28", "correct"),  # units after the number
        ("The answer is 28, since 18 + 10 = 28.", "28", "correct"),  # an explanation after a comma
        ("So the answer is 1,250 dollars.", "1250", "correct"),
        ("The answer is $12.50 dollars.", "12.5", "correct"),
        ("The answer is 18 because 36 / 2 = 18.", "18", "correct"),
        ("The answer is 19 stickers.", "28", "wrong"),
        ("The answer is 1, 2, 3.", "\\{1,2,3\\}", "correct"),  # a list stays whole
    ],
)
def test_answers_followed_by_words(response: str, reference: str, status: str) -> None:
    """GSM8K-style sentences: the number is the answer, the words after it are not."""
    assert grade(response, reference).status == status


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([*"\\{}$#.: 1xz\n", "\\boxed", "\\fbox", "answer is", "####", "\\{", "**"])).map("".join)
)
def test_extract_answer_never_raises(response: str) -> None:
    answer = extract_answer(response)
    assert answer is None or (isinstance(answer, str) and answer == answer.strip() and answer)


def test_extract_answer_is_linear_on_many_unclosed_boxes() -> None:
    start = time.perf_counter()
    assert extract_answer("\\boxed{" * 20_000) is None
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------------------------------- equivalence

EQUIVALENT = [
    (r"\frac{1}{2}", "0.5"),
    (r"\dfrac{3}{4}", "0.75"),
    ("1/2", r"\tfrac{1}{2}"),
    (r"\boxed{7}", "7"),
    (r"\boxed{\frac{1}{2}}", r"\frac12"),
    ("(1, 2]", r"\left(1,2\right]"),
    (r"[0, \infty)", r"[0,\infty)"),
    (r"\{1,2\}", r"\{2,1\}"),
    (r"50\%", "50"),
    (r"50\%", "0.5"),
    ("12.5%", "0.125"),
    (r"5 \text{ cm}", "5"),
    (r"1\!000", "1000"),
    (r"\frac{1}{\,2}", "0.5"),
    (r"3\ 000", "3000"),
    (r"30^\circ", "30"),
    (r"30^{\circ}", "30"),
    ("1,000", "1000"),
    ("1{,}000{,}000", "1000000"),
    (r"\$5", "5"),
    ("$12", "12"),
    ("$-3$", "-3"),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"),
    (r"2\sqrt{3}", r"\sqrt{12}"),
    ("(x+1)^2", "x^2+2x+1"),
    ("x = 5", "5"),
    (r"\text{Evelyn}", "Evelyn"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
    ("1/3", "0.333333"),  # decimals are compared at 6 places, as math-verify does
]

NOT_EQUIVALENT = [
    ("1/3", "0.33"),
    ("2", "3"),
    ("-3", "3"),
    (r"\frac{1}{2}", "0.51"),
    (r"\dfrac{3}{4}", "0.7"),
    ("(1, 2]", "(1, 2)"),
    ("(1, 2]", r"\left[1,2\right]"),
    (r"\{1,2\}", r"\{1,3\}"),
    (r"50\%", "5"),
    (r"5 \text{ cm}", "6"),
    (r"1\!000", "100"),
    (r"30^\circ", "60"),
    ("1,000", "100"),
    ("1,2", "12"),
    (r"2\sqrt{3}", r"\sqrt{13}"),
    ("x^2", "y^2"),
    (r"\text{Bob}", "Evelyn"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\3\end{pmatrix}"),
    ("", "0"),
    (r"\frac{1}{0}", "1"),
]


@pytest.mark.parametrize(("prediction", "reference"), EQUIVALENT)
def test_equivalent(prediction: str, reference: str) -> None:
    assert is_equivalent(prediction, reference)


@pytest.mark.parametrize(("prediction", "reference"), NOT_EQUIVALENT)
def test_not_equivalent(prediction: str, reference: str) -> None:
    assert not is_equivalent(prediction, reference)


@pytest.mark.parametrize("reference", ["0.333333", "0.33", "0.3333333", "1/3"])
def test_fast_path_and_math_verify_agree_on_decimals(reference: str) -> None:
    """`1/3` is decided by the Fraction fast path, `\\frac13` (no braces) by math-verify: same rounding rule."""
    assert is_equivalent("1/3", reference) == is_equivalent(r"\frac13", reference) == (reference != "0.33")


def test_plain_numbers_never_start_a_helper() -> None:
    def in_fresh_thread() -> bool:
        verdicts = [is_equivalent("1,000", "1000"), is_equivalent(r"50\%", "0.5"), is_equivalent("2", "3")]
        assert verdicts == [True, True, False]
        return math_grader._THREAD.worker is None

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(in_fresh_thread).result() is True


@pytest.mark.parametrize("junk", ["\\", "}{", "$", "\\boxed{", "\x00\ud800", "\\frac{" * 50, "a" * 300, "%", "-"])
def test_is_equivalent_never_raises(junk: str) -> None:
    assert is_equivalent(junk, "1") is False
    assert isinstance(is_equivalent("1", junk), bool)


# --------------------------------------------------------------------------------------------------------- grade


def test_grade_correct_against_full_solution() -> None:
    reference = r"We halve it: $\frac{1}{2} \cdot 1 = \boxed{0.5}$."
    result = grade(r"Thus the probability is $\boxed{\dfrac{1}{2}}$.", reference)
    assert result == MathGrade("correct", r"\dfrac{1}{2}")
    assert result.correct


def test_grade_gsm8k_style() -> None:
    reference = "She has 3 * 24 = 72 clips.\n#### 72"
    assert grade("3 * 24 = 72\nThe answer is 72.", reference).correct
    assert grade("#### 72", "72").correct
    assert grade("The answer is 1,072.", "1072").correct


def test_grade_wrong_is_not_unparseable() -> None:
    result = grade("So the answer is 3.", "4")
    assert result == MathGrade("wrong", "3")
    assert not result.correct
    assert grade(r"\boxed{x+2}", "x+1").status == "wrong"


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("I could not solve this problem.", None),
        ("", None),
        (r"\boxed{\frac{3}{}}", r"\frac{3}{}"),
        (r"\boxed{}{}", None),
    ],
)
def test_grade_unparseable(response: str, answer: str | None) -> None:
    result = grade(response, "4")
    assert result == MathGrade("unparseable", answer)
    assert not result.correct


def _in_one_thread(function: Callable[[], T]) -> T:
    """`function()` run in a fresh non-main thread; fails (rather than hangs) if it takes more than 30 s."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(function).result(timeout=30)
    finally:
        pool.shutdown(wait=False)


def test_grade_timeout_from_a_worker_thread_then_recovers() -> None:
    def timed() -> tuple[MathGrade, float, int, int, bool]:
        assert is_equivalent("x+1", "1+x")  # starts this thread's helper, so the timing below is the comparison
        first_pid = math_grader._THREAD.worker.pid  # type: ignore[union-attr]
        start = time.perf_counter()
        result = grade(rf"\boxed{{{PATHOLOGICAL}}}", "1", timeout_s=SHORT_TIMEOUT_S)
        elapsed = time.perf_counter() - start
        recovered = is_equivalent(r"\{1,2\}", r"\{2,1\}")
        return result, elapsed, first_pid, math_grader._THREAD.worker.pid, recovered  # type: ignore[union-attr]

    result, elapsed, first_pid, second_pid, recovered = _in_one_thread(timed)
    assert result == MathGrade("timeout", PATHOLOGICAL)
    assert SHORT_TIMEOUT_S <= elapsed < SHORT_TIMEOUT_S + KILL_SLACK_S
    assert second_pid != first_pid and not _alive(first_pid)  # the stuck helper was killed and replaced
    assert recovered


def test_is_equivalent_is_bounded_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(math_grader, "DEFAULT_TIMEOUT_S", SHORT_TIMEOUT_S)

    def timed() -> tuple[bool, float]:
        is_equivalent("x+1", "1+x")  # this thread's helper is up
        start = time.perf_counter()
        return is_equivalent(PATHOLOGICAL, "1"), time.perf_counter() - start

    verdict, elapsed = _in_one_thread(timed)
    assert verdict is False
    assert elapsed < SHORT_TIMEOUT_S + KILL_SLACK_S


@pytest.mark.parametrize("timeout_s", [0.0, -1.0, float("inf"), float("nan")])
def test_grade_rejects_bad_timeouts(timeout_s: float) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        grade(r"\boxed{x}", "x", timeout_s=timeout_s)


# ------------------------------------------------------------------------------------------ threads and processes

MIXED_PAIRS = [
    (r"\frac{1}{2}", "0.5"),
    ("1/3", "0.33"),
    ("(1, 2]", r"\left(1,2\right]"),
    (r"\{1,2\}", r"\{1,3\}"),
    (r"2\sqrt{3}", r"\sqrt{12}"),
    ("x^2", "y^2"),
    (r"5 \text{ cm}", "5"),
    ("1,000", "100"),
]


def test_thread_pool_matches_sequential() -> None:
    work = [MIXED_PAIRS[i % len(MIXED_PAIRS)] for i in range(160)]
    sequential = [is_equivalent(p, r) for p, r in work]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda pair: is_equivalent(*pair), work))
    assert threaded == sequential
    assert sequential[: len(MIXED_PAIRS)] == [True, False, True, False, True, False, True, False]


def test_dead_helper_is_replaced() -> None:
    assert is_equivalent("x+1", "1+x")
    worker = math_grader._THREAD.worker
    assert worker is not None
    worker._process.kill()
    worker._process.wait()
    assert is_equivalent(r"\{1,2\}", r"\{2,1\}")
    assert not is_equivalent(r"\{1,2\}", r"\{2,3\}")
    assert math_grader._THREAD.worker is not None and math_grader._THREAD.worker.pid != worker.pid


def test_helper_stops_when_its_thread_ends() -> None:
    pids: list[int] = []

    def work() -> None:
        assert is_equivalent("x+1", "1+x")
        pids.append(math_grader._THREAD.worker.pid)  # type: ignore[union-attr]

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert len(pids) == 1
    deadline = time.monotonic() + 5
    while _alive(pids[0]) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert not _alive(pids[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _grade_in_daemon() -> None:
    assert grade(r"\boxed{\left(1,2\right]}", "(1, 2]").correct
    assert not grade(r"\boxed{\{1,2\}}", r"\{1,3\}").correct


def test_forked_daemon_process_grades_without_touching_parent_helper() -> None:
    assert is_equivalent("x+1", "1+x")  # the parent (this thread) has a helper the child will inherit a handle to
    parent_pid = math_grader._THREAD.worker.pid  # type: ignore[union-attr]
    child = multiprocessing.get_context("fork").Process(target=_grade_in_daemon, daemon=True)
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert _alive(parent_pid) and math_grader._THREAD.worker.pid == parent_pid  # type: ignore[union-attr]
    assert is_equivalent("(x+1)^2", "x^2+2x+1")


def test_busy_helper_is_killed_at_interpreter_exit() -> None:
    """A helper still computing when its parent exits is killed by the parent's exit handler, not left running."""
    script = textwrap.dedent(
        r"""
        from dapo.graders import math as m
        worker = m._thread_worker()
        print(worker.compare("x+1", "1+x", 5.0), worker.pid, flush=True)
        worker._send({"id": -1, "prediction": "2^{2^{2^{2^{30}}}}", "reference": "1", "float_rounding": 6,
                      "limit_s": 60.0})  # busy for a minute unless killed; the script exits right away
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    status, pid = done.stdout.split()
    assert status == "correct"
    assert not _alive(int(pid))  # killed and reaped before the interpreter finished exiting
