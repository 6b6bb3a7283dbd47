"""The process inside the code sandbox: confine itself, run the untrusted program and its tests, report.

Started by `dapo.graders.code` as `python -I -S -B sandbox_runner.py` (isolated: no site-packages, no PYTHON*
variables, no script dir on sys.path) with the request as JSON on stdin. It then
  1. reads the request and detaches stdin, so the program cannot read it;
  2. confines itself (`confine.py`: rlimits, no capabilities, Landlock, seccomp) and lists what it installed;
  3. runs the program, then the tests in a namespace whose builtins are a copy taken before the program ran,
     so a program that patches builtins (`builtins.abs = ...`) cannot change what the tests see;
  4. writes "<token> passed" or "<token> failed <detail>" to the verdict pipe and leaves with `os._exit`,
     skipping any atexit handler the program registered.
The harness counts a pass only when the pipe holds the token it generated followed by "passed", so exiting
early (`sys.exit(0)`, `os._exit(0)`), killing the harness, or printing success text never passes.
"""

import builtins
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import confine  # standard-library-only sibling; the path entry is removed right after

del sys.path[0]

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
    token, verdict_fd, write, leave = request["token"], request["verdict_fd"], os.write, os._exit
    protections = " ".join(p.replace(" ", "_") for p in _confine(request))
    pristine_builtins = dict(vars(builtins))
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        exec(compile(request["program"], "<program>", "exec"), namespace)
        tests = dict(namespace)
        tests["__builtins__"] = dict(pristine_builtins)
        exec(compile(request["test"], "<test>", "exec"), tests)
    except BaseException as error:  # any exception, SystemExit included, is a failure
        detail = f"{type(error).__name__}: {error}"[:DETAIL_LIMIT].replace("\n", " ")
        write(verdict_fd, f"{token} failed {protections}\n{detail}\n".encode())
    else:
        write(verdict_fd, f"{token} passed {protections}\n".encode())
    leave(0)


if __name__ == "__main__":
    main()
