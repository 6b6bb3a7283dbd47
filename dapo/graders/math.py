r"""Math answer grading: find a response's final answer and decide whether it equals the reference, in bounded time.

Rewards for math rollouts need a grader that finds the final answer in free-form text, accepts answers that are
equal but written differently, and never hangs or crashes the training or evaluation loop, from whichever thread or
process it is called.

Pipeline
  1. `extract_answer`: the content of the last `\boxed{...}` / `\fbox{...}` (balanced braces), else the last
     "The answer is X" / "Answer: X", else the text after the last "####" (GSM8K).
  2. Fast path, no sympy: when both answers are plain numbers (integers, decimals, `a/b`, `\frac{a}{b}`, with `,`
     thousands separators, `%`, degrees, `\$`, latex spacing) they are compared with `fractions.Fraction`.
  3. Everything else goes to math-verify (`parse` + `verify`, sympy) in a helper process (`_math_worker.py`).

Time bound
  math-verify bounds its own time with `signal.alarm`: that only works in the main thread of the main interpreter,
  and a Python signal handler cannot interrupt C code anyway (`2^{2^{2^{2^{30}}}}` spends its time in one big-integer
  power). So its timeouts are disabled (`parsing_timeout=None`, `timeout_seconds=None`) and each comparison is sent,
  as a JSON line, to a persistent helper process started with `subprocess.Popen` (not `multiprocessing`: daemonic
  DataLoader or pool workers may not have multiprocessing children). The caller waits on the pipe with `poll` for at
  most `timeout_s` seconds; past that the helper is killed (SIGKILL works inside C code), a fresh one is started,
  and the status is "timeout". A helper found dead is replaced and the comparison retried once. Time spent starting
  a helper (about 0.3 s, once per thread) is not counted in `timeout_s`. Helpers are killed when their thread's
  state is collected and at interpreter exit (`weakref.finalize`), and, if the parent dies mid-comparison, by their
  own `SIGALRM` a second after the bound. POSIX only.

One helper per calling thread (a `threading.local`), rather than one shared behind a lock: with a lock, a thread
queued behind k slow comparisons would wait up to k * `timeout_s`, so the bound would no longer hold per call, and
threads could not use more than one core. The cost is one process (~60 MB) per thread that grades: call from a
long-lived pool, not from a new thread per call. After a `fork` (DataLoader workers) the child sees the parent's
helper in its thread state, ignores it (without killing it) and starts its own.

Equivalence, and what is not handled
  * math-verify's semantics: fractions, radicals, intervals, sets (order-free), tuples, matrices, equations
    (`x=5` vs `5`), units and `\text{}` dropped, `50\%` vs `50` or `0.5`, `30^\circ` vs `30`, `1,000` vs `1000`.
  * Decimals are compared after rounding both sides to `FLOAT_ROUNDING` (6) places, on both paths, as math-verify
    does for floats: `1/3` equals `0.333333` but not `0.33`; exact numbers (integers, fractions) compare exactly.
    A consequence: numbers below 5e-7 written as decimals equal 0.
  * On the fast path a percentage `p%` equals `p` and `p/100`; math-verify alone accepts both only for integer p.
  * Not handled: unit conversion (`5 cm` vs `50 mm`), answers that need the question (multiple choice by content),
    approximations at other precisions (`\pi` vs `3.14`), and a reference that math-verify cannot parse (then only
    an identical string matches). `verify` is asymmetric: the reference's form decides (`x=5` vs `5`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, cast

from dapo.graders.answers import DELIMITED_RE, delimited_content, extract_answer, last_boxed

__all__ = ["DEFAULT_TIMEOUT_S", "MathGrade", "extract_answer", "grade", "is_equivalent"]

Status = Literal["correct", "wrong", "unparseable", "timeout"]

DEFAULT_TIMEOUT_S = 5.0  # wall-clock bound on one sympy comparison
STARTUP_TIMEOUT_S = 60.0  # a helper that is not ready by then means a broken installation
FLOAT_ROUNDING = 6  # decimal places kept when a decimal is compared (math-verify's `float_rounding`)
_BACKSTOP_S = 1.0  # the helper's own SIGALRM fires this long after the parent's deadline
_WORKER_COMMAND = (sys.executable, "-m", "dapo.graders._math_worker")
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding `dapo/`


@dataclass(frozen=True)
class MathGrade:
    """The verdict on one response: `status` is "correct", "wrong", "unparseable" (no final answer found, or it
    parsed to nothing mathematical) or "timeout" (the comparison hit the time bound); `answer` is the extracted
    final answer, None when there was none."""

    status: Status
    answer: str | None

    @property
    def correct(self) -> bool:
        return self.status == "correct"


# --------------------------------------------------------------------------------------------------- equivalence


def is_equivalent(prediction: str, reference: str) -> bool:
    r"""Whether two final answers (latex or plain, `\boxed{}` or not) are mathematically the same; False on a
    timeout. Thread-safe, never raises on any strings."""
    return _compare(prediction, reference, DEFAULT_TIMEOUT_S) == "correct"


def grade(response: str, reference: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> MathGrade:
    """Grade a full response against a reference, which may be a bare answer or a full solution with a final
    answer in it. `timeout_s` bounds the sympy comparison (wall clock). Thread-safe, never raises on any strings;
    raises RuntimeError only if the helper process cannot start at all (a broken installation), and ValueError
    unless `timeout_s` is positive and finite."""
    if not 0 < timeout_s < float("inf"):
        raise ValueError(f"timeout_s must be positive and finite, got {timeout_s}")
    answer = extract_answer(response)
    if answer is None:
        return MathGrade("unparseable", None)
    return MathGrade(_compare(answer, extract_answer(reference) or reference, timeout_s), answer)


def _compare(prediction: str, reference: str, timeout_s: float) -> Status:
    prediction, reference = _bare(prediction), _bare(reference)
    if not prediction:
        return "unparseable"
    if prediction == reference:
        return "correct"
    predicted_number, reference_number = _plain_number(prediction), _plain_number(reference)
    if predicted_number is not None and reference_number is not None:
        return "correct" if _numbers_equal(predicted_number, reference_number) else "wrong"
    return _compare_in_worker(prediction, reference, timeout_s)


def _bare(answer: str) -> str:
    """The answer without a `\\boxed{}` around it or `$` delimiters."""
    text = (last_boxed(answer) or answer).strip()
    delimited = DELIMITED_RE.fullmatch(text)
    return delimited_content(delimited).strip() if delimited else text


# ------------------------------------------------------------------------------------------ fast path: plain numbers

_LATEX_SPACE_RE = re.compile(r"\\[,!;: ]|\\q?quad(?![A-Za-z])")
_DEGREES_RE = re.compile(r"\s*(?:\^\s*\{?\s*\\circ\s*\}?|°)$")
_PERCENT_RE = re.compile(r"\s*\\?%$")
_CURRENCY_RE = re.compile(r"^\\?\$\s*")
_DECIMAL_RE = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
_FRACTION_RE = re.compile(
    r"(?P<sign>[+-]?)(?:\\[dt]?frac\{(?P<num>[+-]?\d+)\}\{(?P<den>[+-]?\d+)\}|"
    r"(?P<snum>[+-]?\d+)\s*/\s*(?P<sden>[+-]?\d+))"
)


@dataclass(frozen=True)
class _Number:
    value: Fraction
    decimal: bool  # written with a decimal point: compared after rounding, like math-verify's floats
    percent: bool


def _plain_number(text: str) -> _Number | None:
    """`text` as a plain number, or None when it is anything else (left to math-verify)."""
    text = _LATEX_SPACE_RE.sub("", text).replace("{,}", ",").strip()
    text = _CURRENCY_RE.sub("", _DEGREES_RE.sub("", text)).strip()
    percent = _PERCENT_RE.search(text) is not None
    text = _PERCENT_RE.sub("", text)
    value = _plain_value(text)
    return None if value is None else _Number(value, "." in text, percent)


def _plain_value(text: str) -> Fraction | None:
    try:
        if _DECIMAL_RE.fullmatch(text):
            return Fraction(text.replace(",", ""))
        fraction = _FRACTION_RE.fullmatch(text)
        if fraction is None:
            return None
        numerator, denominator = fraction["num"] or fraction["snum"], fraction["den"] or fraction["sden"]
        return Fraction(int(numerator), int(denominator)) * (-1 if fraction["sign"] == "-" else 1)
    except (ValueError, ZeroDivisionError):  # division by zero, or too many digits for int()
        return None


def _numbers_equal(a: _Number, b: _Number) -> bool:
    rounded = a.decimal or b.decimal
    return any(_values_equal(x, y, rounded) for x in _readings(a, b) for y in _readings(b, a))


def _readings(number: _Number, other: _Number) -> tuple[Fraction, ...]:
    """A percentage compared with a non-percentage reads as its number (50% ~ 50) or its fraction (50% ~ 0.5)."""
    if number.percent and not other.percent:
        return number.value, number.value / 100
    return (number.value,)


def _values_equal(x: Fraction, y: Fraction, rounded: bool) -> bool:
    return round(x, FLOAT_ROUNDING) == round(y, FLOAT_ROUNDING) if rounded else x == y


# ------------------------------------------------------------------------------------ slow path: the helper process


class _WorkerDied(Exception):
    """The helper's pipe closed: it crashed or was killed."""


class _Worker:
    """One helper process and its pipes, used by a single thread of the process that started it."""

    def __init__(self) -> None:
        try:
            process = subprocess.Popen(
                _WORKER_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_worker_environment()
            )
        except OSError as error:
            raise RuntimeError(f"math grader: cannot start `{' '.join(_WORKER_COMMAND)}`: {error}") from error
        if process.stdin is None or process.stdout is None:
            raise RuntimeError("math grader: helper process started without pipes")
        self.owner_pid = os.getpid()
        self._process = process
        self._stdin = process.stdin
        self._stdout_fd = process.stdout.fileno()
        self._buffer = b""
        self._last_id = 0
        self._ready = False
        self._finalizer = weakref.finalize(self, _stop_process, process, self.owner_pid)

    @property
    def pid(self) -> int:
        return self._process.pid

    def compare(self, prediction: str, reference: str, timeout_s: float) -> Status:
        """The helper's verdict, or "timeout" (the helper is then still busy: stop it). Raises _WorkerDied."""
        self._wait_until_ready()
        self._last_id += 1
        deadline = time.monotonic() + timeout_s
        self._send(
            {
                "id": self._last_id,
                "prediction": prediction,
                "reference": reference,
                "float_rounding": FLOAT_ROUNDING,
                "limit_s": timeout_s + _BACKSTOP_S,
            }
        )
        while (reply := self._read_reply(deadline)) is not None:
            if reply.get("id") == self._last_id:  # replies to requests abandoned by an interrupt are skipped
                return cast(Status, reply["status"])
        return "timeout"

    def stop(self) -> None:
        self._finalizer()

    def _wait_until_ready(self) -> None:
        if self._ready:
            return
        try:
            reply = self._read_reply(time.monotonic() + STARTUP_TIMEOUT_S)
        except _WorkerDied:
            reply = None
        if reply != {"ready": True}:
            self.stop()
            raise RuntimeError(f"math grader: `{' '.join(_WORKER_COMMAND)}` did not start (see its stderr)")
        self._ready = True

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._stdin.write(json.dumps(message).encode() + b"\n")
            self._stdin.flush()
        except OSError as error:  # BrokenPipeError: the helper is gone
            raise _WorkerDied from error

    def _read_reply(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON object from the helper (other lines are skipped), or None if none arrived by `deadline`."""
        while (line := self._read_line(deadline)) is not None:
            with contextlib.suppress(ValueError):
                reply = json.loads(line)
                if isinstance(reply, dict):
                    return reply
        return None

    def _read_line(self, deadline: float) -> bytes | None:
        """The next line from the helper, or None if none arrived by `deadline`."""
        poller = select.poll()
        poller.register(self._stdout_fd, select.POLLIN)
        while b"\n" not in self._buffer:
            remaining_ms = (deadline - time.monotonic()) * 1000
            if remaining_ms <= 0 or not poller.poll(int(remaining_ms) + 1):
                return None
            chunk = os.read(self._stdout_fd, 1 << 16)
            if not chunk:
                raise _WorkerDied
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


def _worker_environment() -> dict[str, str]:
    """This environment, with the directory holding `dapo` first on PYTHONPATH so `-m` finds the helper."""
    path = os.pathsep.join(filter(None, (str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH"))))
    return {**os.environ, "PYTHONPATH": path}


def _stop_process(process: subprocess.Popen[bytes], owner_pid: int) -> None:
    """Kill and reap the helper; in a forked child, whose copy this is, only close the inherited pipes."""
    if os.getpid() == owner_pid:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.worker: _Worker | None = None


_THREAD = _ThreadState()


def _thread_worker() -> _Worker:
    worker = _THREAD.worker
    if worker is None or worker.owner_pid != os.getpid():  # none yet, or inherited through fork
        worker = _THREAD.worker = _Worker()
    return worker


def _restart_thread_worker() -> None:
    if _THREAD.worker is not None:
        _THREAD.worker.stop()
    _THREAD.worker = _Worker()  # started now, so it is importing sympy while the caller carries on


def _compare_in_worker(prediction: str, reference: str, timeout_s: float) -> Status:
    for _ in range(2):  # a helper found dead is replaced once; dying twice on the same input counts as a timeout
        try:
            status = _thread_worker().compare(prediction, reference, timeout_s)
        except _WorkerDied:
            _restart_thread_worker()
            continue
        if status == "timeout":
            _restart_thread_worker()
        return status
    return "timeout"
