"""The process inside the code sandbox: confine itself, run the untrusted program and its tests, report.

Started by `dapo.graders.code` as `python -I -S -B sandbox_runner.py` (isolated: no site-packages, no PYTHON*
variables, no script dir on sys.path) with the request as JSON on stdin. It then
  1. reads the request and detaches stdin, so the program cannot read it;
  2. confines itself (`confine.py`: rlimits, no capabilities, Landlock, seccomp) and lists what it installed;
  3. prepares its verdict messages, starts a worker thread, then installs an audit hook that refuses what would
     let the program reach the main thread's frame (where the token is), start threads, trace or skip the tests'
     lines, walk the heap or read raw memory;
  4. the worker compiles and runs the program, then the tests in a namespace whose builtins are a copy taken
     before the program ran, so patching builtins (`builtins.abs = ...`, `builtins.exec = ...`) cannot change
     what the tests see, and records the outcome;
  5. writes "<token> passed" (or "timeout" when program and tests took longer than the timeout, or "failed
     <detail>") to the verdict pipe and leaves with `os._exit`, skipping atexit handlers the program registered.
The harness counts a pass only when the pipe holds the token it generated followed by "passed", so exiting
early (`sys.exit(0)`, `os._exit(0)`), killing the harness, or printing success text never passes.
"""

import builtins
import importlib.util
import json
import os
import sys
import threading
import time
from typing import Any


def _load_confine():
    """The standard-library-only sibling `confine.py`, loaded by path: putting this folder on sys.path would let
    its `math.py` shadow the standard library's."""
    spec = importlib.util.spec_from_file_location("confine", os.path.join(os.path.dirname(__file__), "confine.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


confine = _load_confine()

DETAIL_LIMIT = 2000  # characters of the failure reason kept
# Audit events that would let the program reach the main thread (whose frame holds the token), run code beside or
# after the tests, skip the tests' lines, or read raw memory. Refused once the program may run.
DENIED_EVENTS = frozenset({
    "sys._current_frames", "sys.settrace", "sys.setprofile", "sys.monitoring.register_callback",
    "sys.monitoring.use_tool_id", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "_thread.start_new_thread", "ctypes.string_at", "ctypes.wstring_at", "ctypes.cdata",
})  # fmt: skip


def _refuse(event: str, args: tuple) -> None:
    """The audit hook (it cannot be removed once added); also refuses ctypes lookups of the C API (`Py...`)."""
    c_api = event == "ctypes.dlsym" and isinstance(args[1], str) and args[1].lstrip("_").startswith("Py")
    if event in DENIED_EVENTS or c_api:
        raise PermissionError(f"sandbox: {event} is not allowed")


def _read_request() -> dict:
    request = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return request


def _confine(request: dict) -> list:
    limits = request["limits"]
    steps = [
        lambda: confine.set_limits(limits["cpu_seconds"], limits["memory_bytes"], limits["file_size_bytes"], 64),
        confine.drop_capabilities,
        lambda: confine.apply_landlock(request["work_dir"]),
        confine.apply_seccomp,
    ]
    installed, missing = [], []
    for step in steps:
        try:
            installed.append(step())
        except OSError as error:
            missing.append(str(error))
    if request["require_all"] and missing:
        raise SystemExit(f"sandbox: could not install every protection: {'; '.join(missing)}")
    return installed


def main() -> None:
    request = _read_request()
    token, verdict_fd, timeout = request["token"], request["verdict_fd"], request["timeout"]
    protections = " ".join(p.replace(" ", "_") for p in _confine(request))
    builtins.exit = builtins.quit = sys.exit  # type: ignore[assignment]  # what `site` would have added
    # The program and tests run in a worker thread, so the token is never on their stack; the messages are made
    # now, so nothing the program patched runs between the worker's end and the write.
    passed, late, failed = (f"{token} {status} {protections}\n".encode() for status in ("passed", "timeout", "failed"))
    write, leave, clock = os.write, os._exit, time.monotonic
    namespaces = ({"__name__": "__sandbox__", "__builtins__": builtins}, {"__builtins__": dict(vars(builtins))})
    outcome: list = []  # (None) after the tests pass, (description, exception) after anything raised
    go = threading.Event()
    sources = (request.pop("program"), request.pop("test"))
    worker = threading.Thread(target=_run_untrusted, args=(*sources, namespaces, outcome, go, request["require_all"]))
    del request
    worker.start()
    sys.addaudithook(_refuse)
    start = clock()
    go.set()
    worker.join()
    elapsed = clock() - start
    if len(outcome) == 1 and outcome[0] is None:
        write(verdict_fd, passed if elapsed <= timeout else late)
    else:
        detail = outcome[0][0] if len(outcome) == 1 else "the program tampered with the outcome"
        write(verdict_fd, failed + detail.encode("utf-8", "replace") + b"\n")
    leave(0)


def _run_untrusted(
    program: str, test: str, namespaces: tuple[dict, dict], outcome: list, go: Any, require_all: bool
) -> None:
    """Compile both, run the program, then the tests on a copy of its names with the builtins as they were before
    it ran. Everything the program made stays referenced by `namespaces` and `outcome` (held by the main thread),
    so no finalizer of the program's runs after the outcome is recorded."""
    run = exec  # bound before the program can patch `builtins.exec`
    go.wait()
    try:
        confine.forbid_threads()  # so no thread of the program's runs beside or after the tests
    except OSError as error:
        if require_all:
            outcome.append((f"sandbox: {error}", error))
            return
    program_namespace, tests = namespaces
    try:
        program_code, test_code = compile(program, "<program>", "exec"), compile(test, "<test>", "exec")
        run(program_code, program_namespace)
        tests.update({k: v for k, v in program_namespace.items() if k != "__builtins__"})
        run(test_code, tests)
    except BaseException as error:  # any exception, SystemExit included, is a failure
        outcome.append((_describe(error), error))
    else:
        outcome.append(None)


def _describe(error: BaseException) -> str:
    """`Type: message`, one line, capped; the type alone if the message's `__str__` misbehaves."""
    try:
        return f"{type(error).__name__}: {error}"[:DETAIL_LIMIT].replace("\n", " ")
    except BaseException:
        return "an exception whose description failed"


if __name__ == "__main__":
    main()
