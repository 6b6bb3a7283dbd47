"""The process inside the code sandbox: confine itself, run the untrusted program and its tests, report.

Started by `dapo.graders.code` as `python -I -S -B sandbox_runner.py` (isolated: no site-packages, no PYTHON*
variables, no script dir on sys.path) with the request as JSON on stdin. It then
  1. reads the request and detaches stdin, so the program cannot read it;
  2. confines itself (`confine.py`: rlimits, no capabilities, Landlock, seccomp) and lists what it installed;
  3. compiles the program and the tests, binds everything it needs afterwards (exec, dict, os.write, the
     clock), then runs the program, then the tests in a namespace whose builtins are a copy taken before the
     program ran, so a program that patches builtins (`builtins.abs = ...`, `builtins.exec = ...`) cannot change
     what the tests see or skip them;
  4. writes "<token> passed" (or "timeout" when program and tests took longer than the timeout, or "failed
     <detail>") to the verdict pipe and leaves with `os._exit`, skipping atexit handlers the program registered.
The harness counts a pass only when the pipe holds the token it generated followed by "passed", so exiting
early (`sys.exit(0)`, `os._exit(0)`), killing the harness, or printing success text never passes.
"""

import builtins
import importlib.util
import json
import os
import sys
import time


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
    # everything used after the program runs is bound now, so patching builtins or modules cannot reach it
    write, leave, clock, run, copy = os.write, os._exit, time.monotonic, exec, dict
    caught, describe = BaseException, _describe
    builtins.exit = builtins.quit = sys.exit  # type: ignore[assignment]  # what `site` would have added
    pristine_builtins = dict(vars(builtins))
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    start = clock()
    try:
        program = compile(request["program"], "<program>", "exec")
        test = compile(request["test"], "<test>", "exec")
        del request  # the sources stay out of reach; only the compiled (immutable) code remains
        run(program, namespace)
        tests = copy(namespace)
        tests["__builtins__"] = copy(pristine_builtins)
        run(test, tests)
    except caught as error:  # any exception, SystemExit included, is a failure
        write(verdict_fd, f"{token} failed {protections}\n{describe(error)}\n".encode())
    else:
        status = "passed" if clock() - start <= timeout else "timeout"
        write(verdict_fd, f"{token} {status} {protections}\n".encode())
    leave(0)


def _describe(error: BaseException) -> str:
    """`Type: message`, one line, capped; the type alone if the message's `__str__` misbehaves."""
    try:
        return f"{type(error).__name__}: {error}"[:DETAIL_LIMIT].replace("\n", " ")
    except Exception:
        return type(error).__name__


if __name__ == "__main__":
    main()
