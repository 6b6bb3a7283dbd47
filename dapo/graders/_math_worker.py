"""Helper process for `dapo.graders.math`: runs math-verify comparisons, one JSON line in, one JSON line out.

Started by `dapo.graders.math` as `python -m dapo.graders._math_worker` (never by file path: the sibling `math.py`
would then shadow the standard library `math` that sympy imports). Protocol on stdin/stdout, ASCII JSON lines:
  * at start, after importing and warming up math-verify: `{"ready": true}`;
  * per request `{"id": int, "prediction": str, "reference": str, "float_rounding": int, "limit_s": float}`:
    `{"id": int, "status": "correct" | "wrong" | "unparseable"}`.
The parent enforces the per-comparison time bound by killing this process. As a backstop (say the parent was
killed mid-request), each comparison also arms `SIGALRM` with its default action, which terminates this process
after `limit_s` seconds even inside C code (a big-integer power never returns to the interpreter to run a Python
signal handler). The process ends when its stdin closes.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import traceback
from typing import IO, Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from sympy import Basic, MatrixBase

_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


def parse_answer(answer: str) -> list[Any]:
    """math-verify's parse of a bare final answer (wrapped in `\\boxed{}`: unlike `$...$` it may span lines)."""
    return parse(f"\\boxed{{{answer}}}", extraction_config=_EXTRACTION, parsing_timeout=None)


def compare(prediction: str, reference: str, float_rounding: int) -> str:
    """Verdict "correct", "wrong", or "unparseable": the prediction parsed to no math object and matched no string."""
    target = parse_answer(prediction)
    if verify(parse_answer(reference), target, float_rounding=float_rounding, timeout_seconds=None):
        return "correct"
    return "wrong" if any(isinstance(item, (Basic, MatrixBase)) for item in target) else "unparseable"


def _answer(request: dict[str, Any]) -> str:
    signal.setitimer(signal.ITIMER_REAL, float(request["limit_s"]))
    try:
        return compare(request["prediction"], request["reference"], int(request["float_rounding"]))
    except Exception:  # math-verify swallows its own errors; this is for anything it lets through
        traceback.print_exc(file=sys.stderr)
        return "unparseable"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def main() -> None:
    """Serve comparisons until stdin closes."""
    protocol = sys.stdout
    sys.stdout = sys.stderr  # a stray print must not corrupt the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it then closes our stdin
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # default action: terminate, even inside C code
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" is intended here
    compare("1", "1", 6)  # warm-up: compiles math-verify's regexes before the first timed comparison
    _send(protocol, {"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        _send(protocol, {"id": request["id"], "status": _answer(request)})


if __name__ == "__main__":
    main()
