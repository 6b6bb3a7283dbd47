"""Run untrusted generated code against its tests in a sandboxed subprocess: `check(program, test) -> Verdict`.

Each check starts a fresh interpreter (`sandbox_runner.py`) in a new session, in a fresh temporary work dir that
is removed afterwards, with a scrubbed environment (PATH, HOME and TMPDIR only), stdout and stderr going to
files capped by the file-size limit (the verdict keeps the first `output_bytes` of each). The runner confines
itself before reading the program (see `confine.py`):

Protects against, on Linux x86_64 / aarch64 with Landlock (checked on this project's CI machines):
  * infinite loops and sleeps: the runner reports "timeout" when program and tests take longer than `timeout`;
    a CPU-time limit in the kernel and a wall-clock kill of the process group (timeout + 2 s) stop those that
    never finish;
  * memory bombs: address-space limit (MemoryError or death, never the host's memory); memfd_create and
    System V shared memory, which would escape that limit or outlive the check, are refused;
  * fork bombs and background processes that would outlive the check: no fork / clone / exec (seccomp), and the
    process group is killed after every check anyway;
  * output floods and full disks: a file-size limit on stdout / stderr and on every file, and the check is
    killed once its work dir holds more than `disk_mb` or MAX_FILES entries (looked at every POLL_SECONDS);
  * touching files outside the work dir: Landlock allows writes only beneath it, and reads only beneath the
    Python installation and system library dirs (so secrets in home dirs cannot be read and echoed); seccomp
    refuses changes to any file's mode, owner, times and extended attributes, which Landlock does not cover;
  * the network: no sockets at all (seccomp), no TCP (Landlock ABI >= 4);
  * killing or tracing the harness: signals only to itself (seccomp, including fcntl's F_SETOWN; Landlock ABI
    >= 6 scopes them too), no ptrace; as root, every capability is dropped first;
  * forged verdicts: a pass is only a random per-check token followed by "passed" on a private pipe, written
    by the runner's main thread after the tests ran; the exit status and printed text count for nothing. The
    program and tests run in a worker thread that cannot start threads, with an audit hook refusing tracing,
    other threads' frames, heap walks, raw memory reads and C-API calls through ctypes, so the token (on the main
    thread's stack) is out of reach; the tests run with a copy of the builtins taken before the program ran.

Does not protect against:
  * a program written against this harness that finds another way into the main thread's memory, patches
    modules the tests import (e.g. `math.isclose`), or returns objects whose `__eq__` is always true: the
    sandbox keeps the machine safe and defeats the generic cheats; it does not prove a program honest;
  * programs that need threads or signal handlers (refused in the worker thread);
  * learning that paths exist (stat works everywhere; only reading is refused), CPU or memory contention between
    concurrent checks, up to `disk_mb` written between two looks at the work dir, kernel exploits, side channels;
  * other platforms: without Landlock or seccomp the runner still applies rlimits and the process-group kill,
    and lists what it installed in `Verdict.protections`; pass `require_all=True` to refuse to run instead.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("sandbox_runner.py")
STARTUP_SECONDS = 2.0  # wall-clock allowance for the interpreter to start, on top of the check's timeout
POLL_SECONDS = 0.05  # how often the supervisor looks at the clock and the work dir's size
MAX_FILES = 10_000  # entries in the work dir beyond which the check is killed (inode exhaustion)
STATUSES = ("passed", "failed", "timeout", "crashed", "error")


@dataclass(frozen=True)
class SandboxLimits:
    """Resource caps for one check."""

    memory_mb: int = 1024
    """Address-space limit of the sandboxed interpreter."""
    file_size_mb: int = 16
    """Largest file the program may write, stdout and stderr included."""
    disk_mb: int = 64
    """Total size of the work dir beyond which the check is killed (checked every POLL_SECONDS)."""
    output_bytes: int = 4096
    """Bytes of stdout and stderr kept in the verdict."""
    require_all: bool = False
    """Refuse to run (status "error") unless every protection installs, instead of running with those that do."""


@dataclass(frozen=True)
class Verdict:
    """Outcome of one check: `status` is one of STATUSES, `passed` is true only for "passed"."""

    status: str
    detail: str = ""
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    protections: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def check(program: str, test: str, timeout: float = 10.0, limits: SandboxLimits | None = None) -> Verdict:
    """Run `program`, then `test` (Python source that raises when the program is wrong) in one namespace, in a
    sandboxed subprocess; pass only if the test code finishes within `timeout` seconds."""
    if not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    limits = limits or SandboxLimits()
    with tempfile.TemporaryDirectory(prefix="dapo-sandbox-") as root:
        return _run(program, test, timeout, limits, Path(root))


def check_many(
    pairs: Sequence[tuple[str, str]],
    timeout: float = 10.0,
    limits: SandboxLimits | None = None,
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[Verdict]:
    """`check` on every (program, test) pair with `workers` checks at a time (default: two per core); verdicts come
    back in input order. `on_done(i)` is called as each check finishes (e.g. to advance a progress bar)."""

    def one(index: int) -> Verdict:
        verdict = check(*pairs[index], timeout=timeout, limits=limits)
        if on_done is not None:
            on_done(index)
        return verdict

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        return list(pool.map(one, range(len(pairs))))


def default_workers() -> int:
    """Two checks per core: a check spends part of its time starting up and being waited on, so on 2 cores the
    164 canonical HumanEval solutions ran at 30 checks/s with 1 worker, 58 with 2 and 76 with 4."""
    return 2 * (os.cpu_count() or 1)


def _run(program: str, test: str, timeout: float, limits: SandboxLimits, root: Path) -> Verdict:
    work_dir, stdout_path, stderr_path = root / "work", root / "stdout", root / "stderr"
    work_dir.mkdir()
    token = secrets.token_hex(16)
    verdict_read, verdict_write = os.pipe()
    cpu_seconds = math.ceil(timeout) + 1
    request = {
        "token": token,
        "verdict_fd": verdict_write,
        "program": program,
        "test": test,
        "work_dir": str(work_dir),
        "timeout": timeout,
        "require_all": limits.require_all,
        "limits": {
            "cpu_seconds": cpu_seconds,
            "memory_bytes": limits.memory_mb * 2**20,
            "file_size_bytes": limits.file_size_mb * 2**20,
        },
    }
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work_dir), "TMPDIR": str(work_dir), "LANG": "C.UTF-8"}
    start = time.perf_counter()
    try:
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", "-u", str(RUNNER)],
                stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=work_dir, env=env,
                start_new_session=True, pass_fds=(verdict_write,),
            )  # fmt: skip
    except BaseException:
        os.close(verdict_read)
        raise
    finally:
        os.close(verdict_write)  # the runner holds its own copy; EOF on the read end once it is gone
    try:
        wall, disk = timeout + STARTUP_SECONDS, limits.disk_mb * 2**20
        killed_for = _supervise(process, json.dumps(request).encode(), wall, work_dir, disk)
        message = _read_pipe(verdict_read)
    finally:
        os.close(verdict_read)
        _kill_group(process)  # also when interrupted (Ctrl-C): nothing of the check outlives it
    output = {
        "stdout": _head(stdout_path, limits.output_bytes),
        "stderr": _head(stderr_path, limits.output_bytes),
        "seconds": time.perf_counter() - start,
    }
    return _verdict(message, token, process.returncode, killed_for, cpu_seconds, output)


def _read_pipe(fd: int, limit: int = 65536) -> str:
    """What the runner wrote to the verdict pipe (every writer has exited, so this reads to EOF)."""
    chunks, size = [], 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _head(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", errors="replace")


def _supervise(process: subprocess.Popen, request: bytes, wall_seconds: float, work_dir: Path, disk: int) -> str:
    """Send the request and wait for the runner, killing it after `wall_seconds` ("timeout") or once its work dir
    holds more than `disk` bytes or MAX_FILES entries ("disk"); then kill whatever is left of its process group.
    Returns why it was killed, "" if it ended by itself."""
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # a runner that died before reading: its exit status tells
        process.stdin.write(request)
        process.stdin.close()
    deadline, reason = time.monotonic() + wall_seconds, ""
    while not reason:
        try:
            process.wait(timeout=POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                reason = "timeout"
            elif _disk_use(work_dir) > disk:
                reason = "disk"
    _kill_group(process)
    return reason


def _kill_group(process: subprocess.Popen) -> None:
    """Kill anything left in the check's session group (even after a clean exit) and reap the runner."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _disk_use(work_dir: Path) -> int:
    """Bytes allocated beneath `work_dir` (more than any limit once it holds MAX_FILES entries)."""
    used, entries = 0, 0
    for folder, dirs, files in os.walk(work_dir):
        entries += len(dirs) + len(files)
        if entries > MAX_FILES:
            return sys.maxsize
        for name in files:
            with contextlib.suppress(OSError):
                used += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return used


def _verdict(message: str, token: str, returncode: int, killed_for: str, cpu_seconds: int, output: dict) -> Verdict:
    """The runner's authenticated report if there is one, else what the way the process ended says."""
    first, _, detail = message.partition("\n")
    head, *words = first.split(" ")
    if head == token and words and words[0] in ("passed", "failed", "timeout"):
        installed = tuple(p.replace("_", " ") for p in words[1:])
        return Verdict(words[0], detail.strip(), protections=installed, **output)
    cpu_limit = returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and output["seconds"] >= cpu_seconds)
    if killed_for == "timeout" or cpu_limit:
        return Verdict("timeout", f"no verdict within the time limit (exit {returncode})", **output)
    if killed_for == "disk":
        return Verdict("crashed", f"killed: its work dir went over the disk limit ({MAX_FILES} entries or more "
                       "than disk_mb)", **output)  # fmt: skip
    if returncode != 0 and "sandbox: could not install" in output["stderr"]:
        return Verdict("error", output["stderr"].strip().splitlines()[-1], **output)
    return Verdict("crashed", f"the process ended before the tests finished (exit {returncode})", **output)
