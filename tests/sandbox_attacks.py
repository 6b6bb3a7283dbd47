"""Hostile programs for `tests/test_sandbox.py`, as `string.Template` sources.

Placeholders: $marker (a unique number: every program first names its process after it, so the process, its
threads and any child it manages to start can be found in /proc afterwards; exec'd children get it in their
command line), $sentinel / $outside (a file and the dir holding it, outside the work dir), $secret_path /
$secret_dir, $port / $udp_port (sockets the test listens on), $key (a SysV IPC key).

The attacks are bounded (a few dozen processes, a few GB) so that a broken sandbox fails the test without taking
the machine down with it. Unless noted, every program leaves `solve` undefined and is paired with FAILING_TEST,
so the only way to "pass" is to defeat the harness.
"""

from __future__ import annotations

PREAMBLE = """\
import ctypes as _ctypes
_ctypes.CDLL(None).prctl(15, b"$marker", 0, 0, 0)  # PR_SET_NAME; threads and forked children inherit it
"""

FAILING_TEST = "assert solve() == 42, 'solve() should be 42'\n"

# -- processes: nothing may be started, nothing may outlive the check ----------------------------------------
PROCESSES = {
    "fork_bomb": """
import os, time
for _ in range(6):  # 64 processes if fork worked
    os.fork()
time.sleep(1000)
""",
    "double_fork_setsid": """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(1000)
    os._exit(0)
""",
    "libc_fork": """
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
pid = libc.fork()
if pid == 0:
    time.sleep(1000)
if pid < 0:
    raise OSError(ctypes.get_errno(), "fork")
""",
    "raw_clone": """
import ctypes, platform, time
libc = ctypes.CDLL(None, use_errno=True)
SYS_CLONE = {"x86_64": 56, "aarch64": 220}[platform.machine()]
pid = libc.syscall(SYS_CLONE, 17, 0, 0, 0, 0)  # clone(SIGCHLD): a plain fork, no CLONE_THREAD
if pid == 0:
    time.sleep(1000)
if pid < 0:
    raise OSError(ctypes.get_errno(), "clone")
""",
    "subprocess_popen": """
import subprocess
subprocess.Popen(["sleep", "$marker"])
""",
    "subprocess_popen_setsid": """
import subprocess
subprocess.Popen(["sleep", "$marker"], start_new_session=True, stdout=subprocess.DEVNULL)
""",
    "os_system": """
import os
status = os.system("sleep $marker &")
raise OSError(f"os.system returned {status}")
""",
    "posix_spawn": """
import os
os.posix_spawn("/usr/bin/sleep", ["sleep", "$marker"], {})
""",
    "multiprocessing_fork": """
import multiprocessing, time
multiprocessing.get_context("fork").Process(target=time.sleep, args=(1000,)).start()
""",
    "multiprocessing_spawn": """
import multiprocessing, time
multiprocessing.get_context("spawn").Process(target=time.sleep, args=(1000,)).start()
""",
    "multiprocessing_pool": """
import multiprocessing
multiprocessing.Pool(4)
""",
    "background_threads": """
import threading, time
threading.Thread(target=time.sleep, args=(1000,)).start()
threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
""",
    "thread_bomb": """
import threading, time
for _ in range(10_000):
    threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
""",
}

# -- memory: run with a small memory limit --------------------------------------------------------------------
MEMORY = {
    "grow_until_death": """
chunks = []
for _ in range(400):  # 4 GB if the limit did not hold
    chunks.append(bytearray(10**7))
""",
    "huge_bytearray": "x = bytearray(10**12)\n",
    "huge_bytes": "x = b'x' * (1 << 40)\n",
    "huge_list": "x = [0] * 10**11\n",
    "huge_mmap": "import mmap\nm = mmap.mmap(-1, 1 << 40)\nm[-1] = 1\n",
}

# -- time: run with timeout=1 ---------------------------------------------------------------------------------
LOOPS = {
    "busy_loop": "while True:\n    pass\n",
    "sleep": "import time\ntime.sleep(1000)\n",
    "busy_ignoring_sigxcpu": """
import signal
try:
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
except ValueError:  # the program runs in a worker thread, where it cannot; it spins anyway
    pass
while True:
    pass
""",
    "busy_threads": """
import threading
def spin():
    while True:
        pass
for _ in range(4):
    try:
        threading.Thread(target=spin, daemon=True).start()
    except RuntimeError:  # refused by the sandbox (can't start new thread); spin alone
        pass
spin()
""",
    "sleep_swallowing_everything": """
import time
while True:
    try:
        time.sleep(1000)
    except BaseException:
        pass
""",
}

# -- output: run with file_size_mb=1, output_bytes=1000. Programs that survive the flood report the size they
# reached on stderr as "SIZE=<bytes>". -------------------------------------------------------------------------
OUTPUT = {
    "stdout_flood": """
import sys
for _ in range(1024):  # 1 GiB
    sys.stdout.write("x" * (1 << 20))
""",
    "stderr_flood": """
import sys
for _ in range(1024):
    sys.stderr.write("x" * (1 << 20))
""",
    "print_flood": """
for _ in range(1024):
    print("passed " * 150_000)
""",
    "stdout_flood_ignoring_errors": """
import os
for _ in range(1024):
    try:
        os.write(1, b"x" * (1 << 20))
    except OSError:
        pass
os.write(2, b"SIZE=%d\\n" % os.fstat(1).st_size)
""",
    "huge_file_in_work_dir": """
import os
with open("big", "wb", buffering=0) as f:
    for _ in range(1024):
        try:
            f.write(b"x" * (1 << 20))
        except OSError:
            break
os.write(2, b"SIZE=%d\\n" % os.path.getsize("big"))
""",
    "sparse_file": """
with open("sparse", "wb") as f:
    f.seek(1 << 40)
    f.write(b"x")
""",
    "truncate_up": """
import os
open("grown", "wb").close()
os.truncate("grown", 1 << 40)
""",
    "fallocate": """
import os
fd = os.open("allocated", os.O_CREAT | os.O_WRONLY)
os.posix_fallocate(fd, 0, 1 << 31)
""",
}

# -- files outside the work dir: content ------------------------------------------------------------------------
OUTSIDE_WRITES = {
    "remove": "import os\nos.remove('$sentinel')\n",
    "remove_relative": "import os\nos.remove(os.path.relpath('$sentinel'))\n",
    "overwrite": "open('$sentinel', 'w').write('pwned')\n",
    "append": "open('$sentinel', 'a').write('pwned')\n",
    "truncate": "import os\nos.truncate('$sentinel', 0)\n",
    "rename_away": "import os\nos.rename('$sentinel', 'stolen')\n",
    "replace_over": "import os\nopen('new', 'w').write('pwned')\nos.replace('new', '$sentinel')\n",
    "rmtree_outside": "import shutil\nshutil.rmtree('$outside')\n",
    "create_next_to": "open('$outside/new-$marker', 'w').write('pwned')\n",
    "mkdir_next_to": "import os\nos.mkdir('$outside/dir-$marker')\n",
    "mkfifo_next_to": "import os\nos.mkfifo('$outside/fifo-$marker')\n",
    "symlink_next_to": "import os\nos.symlink('/etc/passwd', '$outside/link-$marker')\n",
    "create_in_tmp": "open('/tmp/dapo-sandbox-escape-$marker', 'w').write('pwned')\n",
    "write_through_symlink": "import os\nos.symlink('$sentinel', 'link')\nopen('link', 'w').write('pwned')\n",
    "write_through_hardlink": "import os\nos.link('$sentinel', 'link')\nopen('link', 'w').write('pwned')\n",
}

# -- files outside the work dir: metadata -----------------------------------------------------------------------
OUTSIDE_METADATA = {
    "chmod_setuid": "import os\nos.chmod('$sentinel', 0o4777)\n",
    "utime": "import os\nos.utime('$sentinel', (0, 0))\n",
    "setxattr": "import os\nos.setxattr('$sentinel', 'user.pwned', b'1')\n",
}

# -- signals: the test traps SIGUSR1; "ESCAPED" on stderr means the call was allowed ------------------------------
KILLS = {
    "kill_parent_sigkill": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.write(2, b'ESCAPED')\n",
    "kill_parent_sigusr1": "import os, signal\nos.kill(os.getppid(), signal.SIGUSR1)\nos.write(2, b'ESCAPED')\n",
    "killpg_parent": """
import os, signal
os.killpg(os.getpgid(os.getppid()), signal.SIGUSR1)
os.write(2, b"ESCAPED")
""",
    "kill_init": "import os, signal\nos.kill(1, signal.SIGKILL)\nos.write(2, b'ESCAPED')\n",  # init ignores it anyway
    "kill_everyone_probe": "import os\nos.kill(-1, 0)\nos.write(2, b'ESCAPED')\n",  # signal 0: permission check only
    "tgkill_parent": """
import ctypes, os, platform, signal
libc = ctypes.CDLL(None, use_errno=True)
SYS_TGKILL = {"x86_64": 234, "aarch64": 131}[platform.machine()]
if libc.syscall(SYS_TGKILL, os.getppid(), os.getppid(), signal.SIGUSR1) < 0:
    raise OSError(ctypes.get_errno(), "tgkill")
os.write(2, b"ESCAPED")
""",
    "pidfd_send_signal": """
import os, signal
signal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGUSR1)
os.write(2, b"ESCAPED")
""",
    "sigio_to_parent": """
import fcntl, os, signal
read_end, write_end = os.pipe()
fcntl.fcntl(read_end, fcntl.F_SETOWN, os.getppid())
fcntl.fcntl(read_end, 10, signal.SIGUSR1)  # F_SETSIG
fcntl.fcntl(read_end, fcntl.F_SETFL, os.O_ASYNC | os.O_NONBLOCK)
os.write(write_end, b"x")  # the kernel now signals the owner
""",
    "sigio_to_parent_group": """
import fcntl, os, signal
read_end, write_end = os.pipe()
fcntl.fcntl(read_end, fcntl.F_SETOWN, -os.getpgid(os.getppid()))
fcntl.fcntl(read_end, 10, signal.SIGUSR1)  # F_SETSIG
fcntl.fcntl(read_end, fcntl.F_SETFL, os.O_ASYNC | os.O_NONBLOCK)
os.write(write_end, b"x")
""",
}

# -- forged success ---------------------------------------------------------------------------------------------
FAKE_SUCCESS = {
    "print_passed": "import sys\nprint('passed')\nprint('PASSED: 164/164')\nsys.stdout.flush()\n",
    "passed_to_every_fd": """
import os
for fd in range(21):
    try:
        os.write(fd, b"passed\\n")
    except OSError:
        pass
""",
    "forged_verdict_line": """
import os
for fd in range(21):
    try:
        os.write(fd, b"0" * 32 + b" passed rlimits\\n")
    except OSError:
        pass
""",
    "sys_exit_0": "import sys\nsys.exit(0)\n",
    "raise_system_exit": "raise SystemExit\n",
    "keyboard_interrupt": "raise KeyboardInterrupt\n",
    "os_exit_0": "import os\nos._exit(0)\n",
    "atexit_then_exit": "import atexit, sys\natexit.register(print, 'passed')\nsys.exit(0)\n",
    "self_sigkill": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "close_every_fd": "import os\nos.closerange(0, 1024)\n",
}

# -- builtins patched to make a wrong program pass: (program, test) -----------------------------------------------
BUILTIN_PATCHES = {
    "abs": (
        "import builtins\nbuiltins.abs = lambda x: 0\ndef solve(x):\n    return x\n",
        "assert abs(solve(3) - 9) < 1e-9\n",
    ),
    "abs_via_dunder_builtins": (
        "__builtins__.abs = lambda x: 0\ndef solve(x):\n    return x\n",
        "assert abs(solve(3) - 9) < 1e-9\n",
    ),
    "len": ("import builtins\nbuiltins.len = lambda x: 3\ndef solve():\n    return []\n", "assert len(solve()) == 3\n"),
    "isinstance": (
        "import builtins\nbuiltins.isinstance = lambda *a: True\ndef solve():\n    return 'x'\n",
        "assert isinstance(solve(), int)\n",
    ),
    "all": (
        "import builtins\nbuiltins.all = lambda *a: True\ndef solve():\n    return [-1]\n",
        "assert all(x > 0 for x in solve())\n",
    ),
    "exec": (
        "import builtins\nbuiltins.exec = lambda *a, **k: None\ndef solve():\n    return 0\n",
        FAILING_TEST,
    ),
    "compile": (
        "import builtins\n_compile = builtins.compile\n"
        "builtins.compile = lambda source, name, mode: _compile('pass', name, mode)\n"
        "def solve():\n    return 0\n",
        FAILING_TEST,
    ),
    "dict_poisons_the_pristine_copy": (
        "import builtins\n_dict = builtins.dict\n"
        "def poisoned(*args, **kwargs):\n"
        "    result = _dict(*args, **kwargs)\n"
        "    if 'abs' in result:\n"
        "        result['abs'] = lambda x: 0\n"
        "    return result\n"
        "builtins.dict = poisoned\n"
        "def solve(x):\n    return x\n",
        "assert abs(solve(3) - 9) < 1e-9\n",
    ),
    "assertion_error": (
        "import builtins\nbuiltins.AssertionError = type('Nothing', (Exception,), {})\ndef solve():\n    return 0\n",
        FAILING_TEST,
    ),
    "base_exception": (
        "import builtins\nbuiltins.BaseException = ()\ndef solve():\n    return 0\n",
        FAILING_TEST,
    ),
}

# -- network ----------------------------------------------------------------------------------------------------
NETWORK = {
    "tcp_connect": """
import os, socket
socket.create_connection(("127.0.0.1", $port), timeout=1)
os.write(2, b"ESCAPED")
""",
    "udp_sendto": """
import os, socket
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", $udp_port))
os.write(2, b"ESCAPED")
""",
    "libc_socket": """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.socket(2, 1, 0) < 0:  # AF_INET, SOCK_STREAM
    raise OSError(ctypes.get_errno(), "socket")
os.write(2, b"ESCAPED")
""",
    "urllib_local": "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)\n",
    "urllib_outside_by_name": "import urllib.request\nurllib.request.urlopen('http://example.com/', timeout=1)\n",
    "urllib_outside_by_address": "import urllib.request\nurllib.request.urlopen('http://1.1.1.1/', timeout=1)\n",
}

# -- secrets: each program sets `data` to what it could read; SECRET_EPILOGUE shows it every way it can ----------
SECRETS = {
    "open": "data = open('$secret_path').read()\n",
    "open_relative": "import os\ndata = open(os.path.relpath('$secret_path')).read()\n",
    "os_open": "import os\ndata = os.read(os.open('$secret_path', os.O_RDONLY), 1000).decode()\n",
    "symlink": "import os\nos.symlink('$secret_path', 'link')\ndata = open('link').read()\n",
    "hardlink": "import os\nos.link('$secret_path', 'link')\ndata = open('link').read()\n",
    "listdir": "import os\ndata = repr(os.listdir('$secret_dir'))\n",
    "walk": "import os\ndata = repr(list(os.walk('$secret_dir')))\n",
    "environ": "import os\ndata = repr(dict(os.environ))\n",
    "proc_self_environ": "data = open('/proc/self/environ').read()\n",
    "proc_parent_environ": "import os\ndata = open(f'/proc/{os.getppid()}/environ').read()\n",
    "proc_parent_cwd": "import os\ndata = repr(os.listdir(f'/proc/{os.getppid()}/cwd'))\n",
    "traceback_source_line": """
import io, traceback
try:
    exec(compile("1 / 0", "$secret_path", "exec"))
except ZeroDivisionError:
    buffer = io.StringIO()
    traceback.print_exc(file=buffer)
    data = buffer.getvalue()
""",
}
SECRET_EPILOGUE = """
import os as _os
_os.write(1, data.encode())
_os.write(2, data.encode())
raise RuntimeError(data)
"""

# -- SysV IPC objects outlive the process that made them unless someone removes them ------------------------------
SYSV_IPC = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
IPC_CREAT = 0o1000
shm = libc.shmget($key, 1 << 20, IPC_CREAT | 0o600)
if shm >= 0:
    address = libc.shmat(shm, None, 0)
    if address not in (None, ctypes.c_void_p(-1).value):
        ctypes.memset(address, 0x41, 1 << 20)  # 1 MiB of host memory that stays when we are gone
        libc.shmdt(ctypes.c_void_p(address))
queue = libc.msgget($key + 1, IPC_CREAT | 0o600)
semaphores = libc.semget($key + 2, 1, IPC_CREAT | 0o600)
raise OSError(f"shm {shm}, msg {queue}, sem {semaphores}")
"""

# -- found in review: each used to get around a limit --------------------------------------------------------
LIMIT_EVASIONS = {
    "memfd_beyond_the_memory_limit": """
import os
fds = [os.memfd_create("x") for _ in range(8)]  # file-backed memory is not address space
for fd in fds:
    os.write(fd, b"x" * (8 << 20))
""",
    "many_files_beyond_the_disk_limit": """
import os
for i in range(200):  # each under file_size_mb, together far over disk_mb
    with open(f"f{i}", "wb") as f:
        f.write(b"x" * (1 << 20))
""",
    "signal_the_parent_through_fcntl": """
import fcntl, os
r, w = os.pipe()
fcntl.fcntl(r, fcntl.F_SETOWN, os.getppid())
""",
    "rewrite_the_tests_through_the_stack": """
import sys
frame = sys._getframe()
while frame is not None:
    request = frame.f_locals.get("request")
    if isinstance(request, dict):
        request["test"] = "pass"
    frame = frame.f_back
""",
}

# -- forging from inside the interpreter: reach the runner's frame (token, verdict pipe) or skip the tests' lines --
INTROSPECTION = {  # name: (source, the refusal in the verdict's detail; None: the token is simply not there)
    "write_the_token_from_the_caller_frames": (
        """
import os, sys
frame = sys._getframe()
while frame is not None:
    if "token" in frame.f_locals:
        os.write(frame.f_locals["verdict_fd"], (frame.f_locals["token"] + " passed\\n").encode())
        os._exit(0)
    frame = frame.f_back
""",
        None,
    ),
    "frame_of_the_main_thread": (
        """
import os, sys, threading
frame = sys._current_frames()[threading.main_thread().ident]
""",
        "PermissionError: sandbox:",
    ),
    "skip_the_test_lines_with_a_tracer": (
        """
import sys
def skip(frame, event, arg):
    if frame.f_code.co_filename == "<test>" and event == "line":
        frame.f_lineno += 1
    return skip
sys.settrace(skip)
""",
        "PermissionError: sandbox:",
    ),
    "find_the_token_on_the_heap": (
        """
import gc, os
for thing in gc.get_objects():
    if isinstance(thing, dict) and "token" in thing:
        os.write(thing["verdict_fd"], (thing["token"] + " passed\\n").encode())
        os._exit(0)
""",
        "PermissionError: sandbox:",
    ),
    "rewrite_the_outcome_from_another_thread": (
        """
import sys, threading, time
outcome = sys._getframe(1).f_locals["outcome"]
def rewrite():
    time.sleep(0.2)
    outcome[:] = [None]
threading.Thread(target=rewrite).start()
""",
        "can't start new thread",
    ),
    "record_success_before_failing": (
        """
import sys
frame = sys._getframe()
while "outcome" not in frame.f_locals:
    frame = frame.f_back
frame.f_locals["outcome"].append(None)
""",
        "the program tampered with the outcome",
    ),
    "call_the_c_api_through_ctypes": (
        """
import ctypes
ctypes.pythonapi.PyFrame_LocalsToFast
""",
        "PermissionError: sandbox:",
    ),
}
